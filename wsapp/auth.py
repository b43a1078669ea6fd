"""Who is on the other end of a WebSocket: the Origin check and the Django session.

The handshake is a GET that CSRF middleware never sees and browsers send with
cookies and no preflight, so the Origin check is the only defence against
cross-site WebSocket hijacking: scheme, host and port are compared exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import caches
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from wsapp import sessioncheck
from wsapp.sessioncheck import AuthUnavailable

__all__ = ["AuthUnavailable", "cookies", "header", "origin_allowed", "session_store", "session_user"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def cookies(scope: Mapping[str, Any]) -> dict[str, str]:
    raw = header(scope, b"cookie")
    if not raw:
        return {}
    from django.http import parse_cookie

    return parse_cookie(raw)


def _request_scheme(scope: Mapping[str, Any]) -> str:
    secure = scope.get("scheme") in ("wss", "https")
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, expected = proxy
        # "HTTP_X_FORWARDED_PROTO" -> b"x-forwarded-proto"
        value = header(scope, name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1"))
        if value is not None:
            secure = value.split(",", 1)[0].strip() == expected
    return "https" if secure else "http"


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if not host or port is None:
        return None
    return scheme, host.lower(), port


def _trusted(origin: str, trusted: Iterable[str]) -> bool:
    """Django's CsrfViewMiddleware rule: exact origins, or ``scheme://*.domain`` wildcards."""
    parsed = urlsplit(origin)
    for candidate in trusted:
        if "*" not in candidate:
            if candidate == origin:
                return True
            continue
        scheme, _, netloc = candidate.partition("://")
        if parsed.scheme == scheme and is_same_domain(parsed.netloc, netloc.lstrip("*")):
            return True
    return False


def origin_allowed(scope: Mapping[str, Any]) -> bool:
    """True when the Origin header is absent or one Django would trust for this request."""
    origin = header(scope, b"origin")
    if origin is None:
        return True  # not a browser: no cross-site risk
    origin = origin.strip()
    if _trusted(origin, settings.CSRF_TRUSTED_ORIGINS):
        return True
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORTS or parts.path not in ("", "/") or parts.query or parts.username:
        return False  # includes the opaque origin "null"
    host_header = header(scope, b"host")
    if not host_header:
        return False
    domain, _ = split_domain_port(host_header.strip().lower())
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    mine = _origin_tuple(_request_scheme(scope), host_header.strip())
    theirs = _origin_tuple(parts.scheme, parts.netloc)
    return mine is not None and mine == theirs


_session_cache: Any = None


def session_store(session_key: str) -> Any:
    """A session store whose cache (cached_db / cache engines) is shared by the whole process.

    Django's ``caches`` is a context-local: in async code each task gets its own
    cache object, and the Redis cache client keeps its own connection pool. Left
    alone, every WebSocket's task would hold its own Redis connection for its
    whole life (measured: one per socket, ~16 kB of parser buffer each).
    """
    global _session_cache
    engine = import_module(settings.SESSION_ENGINE)
    store = engine.SessionStore(session_key=session_key)
    if hasattr(store, "_cache"):
        if _session_cache is None:
            _session_cache = caches.create_connection(settings.SESSION_CACHE_ALIAS)
        store._cache = _session_cache
    return store


async def session_user(session_key: str | None) -> Any | None:
    """The active user of a session, or None: Django's ``aget_user`` rules, read-only.

    Same checks as ``django.contrib.auth.aget_user`` (session exists and is
    unexpired, backend configured, ``is_active`` through the backend, session
    auth hash matching the current secret or a ``SECRET_KEY_FALLBACKS`` one),
    but it never writes the session: ``aget_user`` flushes a session whose hash
    does not match (racing with ``update_session_auth_hash`` right after a
    password change, which would log out the browser that changed it) and
    cycles the key on a fallback match (a WebSocket cannot hand the browser the
    new cookie, so its session would be orphaned).

    A session checked before is answered from one Redis read with no thread
    and no database (``wsapp.sessioncheck``). Raises ``AuthUnavailable`` (a
    ``DatabaseError``) when the session is not cached and the database fails or
    does not answer within ``KAIWA_AUTH_DB_TIMEOUT_SECONDS``: answer "try again
    later" (close 1013), without a traceback.
    """
    return await sessioncheck.session_user(session_key)
