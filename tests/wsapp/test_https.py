"""wsapp.https: Django's HTTPS redirect and HSTS for what the dispatcher serves past Django (/api/, static)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from wsapp.https import https_only

TIMEOUT = 10


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("hello")(scope, receive, send)


def get(app: Any, url: str, **headers: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport) as client:
            return await asyncio.wait_for(client.get(url, headers=headers), TIMEOUT)

    return asyncio.run(go())


@pytest.fixture
def production(settings: Any) -> Any:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_SSL_HOST = None
    settings.SECURE_REDIRECT_EXEMPT = []
    settings.SECURE_PROXY_SSL_HEADER = None
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = False
    return settings


def test_plain_http_is_redirected_to_https_with_path_and_query(production: Any) -> None:
    """With SECURE_SSL_REDIRECT, an HTTP request gets a 301 to the same path and query over HTTPS."""
    response = get(https_only(hello), "http://chat.example/api/rooms/lobby/messages?before=5")
    assert response.status_code == 301
    assert response.headers["location"] == "https://chat.example/api/rooms/lobby/messages?before=5"


def test_https_is_served_with_hsts(production: Any) -> None:
    """Over HTTPS the answer is the app's, with Strict-Transport-Security as Django sends it."""
    response = get(https_only(hello), "https://chat.example/api/rooms/")
    assert response.status_code == 200 and response.text == "hello"
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


def test_the_proxy_header_decides_when_configured(production: Any) -> None:
    """Behind a TLS proxy (SECURE_PROXY_SSL_HEADER), X-Forwarded-Proto says whether the client used HTTPS."""
    production.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    app = https_only(hello)
    assert get(app, "http://chat.example/api/", **{"X-Forwarded-Proto": "https"}).status_code == 200
    assert get(app, "http://chat.example/api/", **{"X-Forwarded-Proto": "http"}).status_code == 301


def test_ssl_host_and_exempt_paths(production: Any) -> None:
    """SECURE_SSL_HOST names the redirect's host; a path matching SECURE_REDIRECT_EXEMPT stays on HTTP."""
    production.SECURE_SSL_HOST = "secure.example"
    production.SECURE_REDIRECT_EXEMPT = [r"^api/open/"]
    app = https_only(hello)
    assert get(app, "http://chat.example/api/x").headers["location"] == "https://secure.example/api/x"
    assert get(app, "http://chat.example/api/open/x").status_code == 200


def test_without_the_settings_nothing_changes(settings: Any) -> None:
    """DEBUG's defaults (no redirect, no HSTS): the app's own answer, untouched."""
    settings.SECURE_SSL_REDIRECT = False
    settings.SECURE_HSTS_SECONDS = 0
    response = get(https_only(hello), "http://127.0.0.1:8000/api/rooms/")
    assert response.status_code == 200
    assert "strict-transport-security" not in response.headers


def test_the_dispatcher_applies_it_to_the_api_and_static_files_not_to_health(production: Any) -> None:
    """project.asgi: /api/ and STATIC_URL are redirected like Django's pages; /healthz answers plain HTTP."""
    from project.asgi import application

    assert get(application, "http://chat.example/api/rooms/").status_code == 301
    assert get(application, f"http://chat.example{production.STATIC_URL}chat/js/room.js").status_code == 301
    assert get(application, "http://chat.example/healthz").status_code != 301
