"""The Origin rule of the handshake, checked against Django's settings (pure function, no server)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from wsapp.auth import origin_allowed


def scope(origin: str | None, host: str = "chat.example.com", scheme: str = "wss", **extra: str) -> dict:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(k.encode(), v.encode()) for k, v in extra.items()]
    return {"type": "websocket", "scheme": scheme, "headers": headers}


@override_settings(ALLOWED_HOSTS=["chat.example.com", "localhost"], CSRF_TRUSTED_ORIGINS=[])
@pytest.mark.parametrize(
    ("origin", "host", "scheme", "allowed"),
    [
        (None, "chat.example.com", "wss", True),
        ("https://chat.example.com", "chat.example.com", "wss", True),
        ("https://chat.example.com:443", "chat.example.com", "wss", True),
        ("https://CHAT.example.com", "chat.example.com", "wss", True),
        ("http://chat.example.com", "chat.example.com", "wss", False),  # scheme differs
        ("https://chat.example.com:8443", "chat.example.com", "wss", False),  # port differs
        ("https://evil.example.com", "chat.example.com", "wss", False),
        ("https://chat.example.com.evil.net", "chat.example.com", "wss", False),
        ("null", "chat.example.com", "wss", False),
        ("https://chat.example.com/path", "chat.example.com", "wss", False),
        ("http://localhost:8000", "localhost:8000", "ws", True),
        ("http://localhost:8001", "localhost:8000", "ws", False),
        ("https://evil.net", "evil.net", "wss", False),  # Host not in ALLOWED_HOSTS
    ],
)
def test_origin_must_match_the_request_exactly(origin, host, scheme, allowed):
    """Scheme, host and port are compared exactly; the Host itself must be an allowed host."""
    assert origin_allowed(scope(origin, host, scheme)) is allowed


@override_settings(
    ALLOWED_HOSTS=["chat.example.com"],
    CSRF_TRUSTED_ORIGINS=["https://app.example.org", "https://*.partner.net"],
)
def test_csrf_trusted_origins_are_trusted_like_django_does():
    """Exact trusted origins and ``scheme://*.domain`` wildcards are accepted, nothing looser."""
    assert origin_allowed(scope("https://app.example.org"))
    assert origin_allowed(scope("https://a.partner.net"))
    assert not origin_allowed(scope("http://a.partner.net"))
    assert not origin_allowed(scope("https://app.example.org:444"))
    assert not origin_allowed(scope("https://partner.net.evil"))


@override_settings(ALLOWED_HOSTS=["chat.example.com"], SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"))
def test_behind_a_tls_proxy_the_forwarded_scheme_counts():
    """With SECURE_PROXY_SSL_HEADER, ws:// from the proxy with X-Forwarded-Proto: https matches https origins."""
    assert origin_allowed(scope("https://chat.example.com", scheme="ws", **{"x-forwarded-proto": "https"}))
    assert not origin_allowed(scope("https://chat.example.com", scheme="ws"))
