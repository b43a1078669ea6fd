"""Login and sign-up throttling on Django's cache (the Redis Kaiwa already runs).

Fixed windows: the first failed login for an account (or from an address)
opens a window of ``KAIWA_LOGIN_WINDOW_SECONDS``; once ``KAIWA_LOGIN_FAILURES``
failures fall in it, every attempt for that account or from that address is
refused, right password or not, until the window's key expires. Sign-ups are
counted per address the same way (``KAIWA_SIGNUP_PER_ADDRESS`` per
``KAIWA_SIGNUP_WINDOW_SECONDS``).

Why our own ~150 lines and not django-axes: the counters must be shared by
every server process, and the cache already is (Redis); axes would add a
dependency, database tables written on every failure (the database is
Kaiwa's slow path), and its own lockout rules and templates, while the
contract asks for exactly one rule and one message.

The counting hangs off authentication, not off a view: ``LoginThrottleBackend``
(first in ``AUTHENTICATION_BACKENDS``) refuses a throttled attempt before any
password is hashed, and Django's ``user_login_failed`` / ``user_logged_in``
signals count failures and clear an account's count on success. So the admin's
login page is throttled too; the login view only adds the 429 answer.

If the cache cannot be reached, attempts are let through (and a warning
logged): the throttle slows guessing down, it must not lock everybody out.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpRequest
from redis.exceptions import RedisError

logger = logging.getLogger("kaiwa.throttle")

_PREFIX = "throttle"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an attempt is refused, and for how long."""

    reason: str  # "account" or "address"
    retry_after: int  # seconds

    def message(self, action: str = "log in") -> str:
        minutes = max(1, math.ceil(self.retry_after / 60))
        wait = f"{minutes} minute{'s' if minutes != 1 else ''}"
        if self.reason == "account":
            return f"Too many failed login attempts for this account. Wait {wait} before you try to {action} again."
        if action == "sign up":
            return f"Too many sign-ups from your network address. Wait {wait} before you try again."
        return (
            f"Too many failed login attempts from your network address. Wait {wait} before you try to {action} again."
        )


def client_address(request: HttpRequest) -> str:
    """The client's address, as the throttle counts it.

    ``REMOTE_ADDR`` is the peer of the connection (uvicorn already replaces it
    with ``X-Forwarded-For`` for connections from its ``--forwarded-allow-ips``,
    default 127.0.0.1). With ``KAIWA_TRUSTED_PROXY_HOPS=N`` the N-th address
    from the right of ``X-Forwarded-For`` is taken instead: each of your N
    proxies appends one, anything to their left is the client's to forge.
    IPv6 addresses count per /64, the block one subscriber usually holds.
    """
    address = str(request.META.get("REMOTE_ADDR") or "")
    hops = settings.KAIWA_TRUSTED_PROXY_HOPS
    if hops > 0:
        forwarded = [part.strip() for part in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")]
        forwarded = [part for part in forwarded if part]
        if len(forwarded) >= hops:
            address = forwarded[-hops]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _key(kind: str, value: str) -> str:
    # Hashed: usernames and addresses may hold any character, keys stay short.
    return f"{_PREFIX}:{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:32]}"


def _account_key(username: str) -> str:
    return _key("login-account", username.casefold())


def _address_key(request: HttpRequest, kind: str = "login-address") -> str:
    return _key(kind, client_address(request))


def _refusal(checks: list[tuple[str, str]], limit: int, window: int) -> Refusal | None:
    """The first ``(key, reason)`` whose window already holds ``limit`` events, as a refusal."""
    keys = [key for key, _ in checks]
    try:
        values: dict[str, Any] = cache.get_many([*keys, *(key + ":start" for key in keys)])
    except (RedisError, OSError) as exc:
        logger.warning("throttle check skipped, the cache is unreachable: %r", exc)
        return None
    now = time.time()
    for key, reason in checks:
        if int(values.get(key) or 0) >= limit:
            start = float(values.get(key + ":start") or now)
            return Refusal(reason=reason, retry_after=max(1, math.ceil(start + window - now)))
    return None


def _hit(key: str, window: int) -> None:
    """Count one event in ``key``'s window, opening the window if there is none."""
    try:
        # add() does nothing on an open window: its expiry stays where the first event put it.
        cache.add(key + ":start", time.time(), timeout=window)
        cache.add(key, 0, timeout=window)
        try:
            cache.incr(key)
        except ValueError:  # the window expired between add() and incr()
            cache.set(key, 1, timeout=window)
    except (RedisError, OSError) as exc:
        logger.warning("throttle count lost, the cache is unreachable: %r", exc)


def login_refusal(request: HttpRequest, username: str) -> Refusal | None:
    """Why a login attempt for ``username`` from this request is refused now, or None."""
    return _refusal(
        [(_account_key(username), "account"), (_address_key(request), "address")],
        settings.KAIWA_LOGIN_FAILURES,
        settings.KAIWA_LOGIN_WINDOW_SECONDS,
    )


def login_failed(request: HttpRequest, username: str) -> None:
    window = settings.KAIWA_LOGIN_WINDOW_SECONDS
    _hit(_account_key(username), window)
    _hit(_address_key(request), window)


def login_succeeded(username: str) -> None:
    """A right password clears the account's count (not the address's: one valid account must not reset it)."""
    key = _account_key(username)
    try:
        cache.delete_many([key, key + ":start"])
    except (RedisError, OSError) as exc:
        logger.warning("throttle reset skipped, the cache is unreachable: %r", exc)


def signup_refusal(request: HttpRequest) -> Refusal | None:
    return _refusal(
        [(_address_key(request, "signup-address"), "address")],
        settings.KAIWA_SIGNUP_PER_ADDRESS,
        settings.KAIWA_SIGNUP_WINDOW_SECONDS,
    )


def signup_attempted(request: HttpRequest) -> None:
    _hit(_address_key(request, "signup-address"), settings.KAIWA_SIGNUP_WINDOW_SECONDS)


_REFUSAL_ATTR = "_kaiwa_login_refusal"


def refused_by_backend(request: HttpRequest) -> Refusal | None:
    """The refusal ``LoginThrottleBackend`` gave this request's login attempt, if it refused it."""
    refusal = getattr(request, _REFUSAL_ATTR, None)
    return refusal if isinstance(refusal, Refusal) else None


class LoginThrottleBackend:
    """Refuses throttled attempts before any backend hashes a password; never authenticates anyone itself.

    Deliberately not a ``BaseBackend``: without ``get_user`` Django never
    picks it for a session (``Client.force_login``, ``login()``), and without
    the permission methods it is skipped for permission checks.
    """

    def authenticate(self, request: HttpRequest | None, username: str | None = None, **kwargs: Any) -> None:
        if request is None or username is None:
            return None
        refusal = login_refusal(request, username)
        if refusal is not None:
            logger.info(
                "login refused: too many failures (%s) for %r from %s",
                refusal.reason,
                username,
                client_address(request),
            )
            setattr(request, _REFUSAL_ATTR, refusal)
            # authenticate() stops at PermissionDenied: no later backend is tried.
            raise PermissionDenied(refusal.message())
        return None


@receiver(user_login_failed, dispatch_uid="kaiwa-throttle-login-failed")
def _on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    username = credentials.get("username")
    if request is not None and isinstance(username, str):
        login_failed(request, username)


@receiver(user_logged_in, dispatch_uid="kaiwa-throttle-logged-in")
def _on_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    login_succeeded(user.get_username())
