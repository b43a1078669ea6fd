"""Django's HTTPS rules for what the dispatcher sends past Django: ``/api/`` and static files.

Django's ``SecurityMiddleware`` redirects plain HTTP to HTTPS
(``SECURE_SSL_REDIRECT``) and adds ``Strict-Transport-Security`` to HTTPS
answers (``SECURE_HSTS_*``), but only for requests Django serves. Without
this wrapper an API client could send its session cookie over plain HTTP and
be answered, on a server whose pages all insist on HTTPS. The same settings
decide here, read per request, so the rules cannot differ between the two.
"""

from __future__ import annotations

import re

from django.conf import settings
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def is_secure(scope: Scope) -> bool:
    """``HttpRequest.is_secure()`` for an ASGI scope, with ``SECURE_PROXY_SSL_HEADER`` as Django reads it."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        header, secure_value = proxy
        # Django names it as in META ("HTTP_X_FORWARDED_PROTO"); on the wire it is "x-forwarded-proto".
        name = header.removeprefix("HTTP_").replace("_", "-").lower()
        value = Headers(scope=scope).get(name)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "https"


def _exempt(path: str) -> bool:
    # Django matches SECURE_REDIRECT_EXEMPT against the path without its leading slash.
    return any(re.search(pattern, path.lstrip("/")) for pattern in settings.SECURE_REDIRECT_EXEMPT)


def https_only(app: ASGIApp) -> ASGIApp:
    """``app`` behind ``SECURE_SSL_REDIRECT`` (a 301 to HTTPS) and ``SECURE_HSTS_*``, as Django applies them."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        secure = is_secure(scope)
        if not secure and settings.SECURE_SSL_REDIRECT and not _exempt(scope["path"]):
            headers = Headers(scope=scope)
            host = settings.SECURE_SSL_HOST or headers.get("host", "")
            query = scope.get("query_string", b"").decode("latin-1")
            location = f"https://{host}{scope.get('root_path', '')}{scope['path']}" + (f"?{query}" if query else "")
            await send(
                {
                    "type": "http.response.start",
                    "status": 301,
                    "headers": [(b"location", location.encode("latin-1")), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        if not (secure and settings.SECURE_HSTS_SECONDS):
            await app(scope, receive, send)
            return
        hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            hsts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            hsts += "; preload"

        async def with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"strict-transport-security" for name, _ in headers):
                    headers.append((b"strict-transport-security", hsts.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, with_hsts)

    return wrapped
