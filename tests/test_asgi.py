"""The ASGI entrypoint as operators run it: ``uvicorn project.asgi:application``."""

from __future__ import annotations

import httpx
import pytest
from django.conf import settings
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


def test_lifespan_startup_runs_under_plain_uvicorn(start_server):
    """With uvicorn's default ``--lifespan auto``, the FastAPI startup code still runs."""
    server = start_server()
    response = httpx.get(server.http + "/healthz", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["lifespan"] is True
    assert body["redis"] is True
    assert not any("lifespan unsupported" in line.lower() for line in server.lines)


def test_http_goes_to_django_and_static_is_served(start_server):
    """Pages are Django's; /static/ is served asynchronously with a Cache-Control header."""
    server = start_server()
    login = httpx.get(server.http + "/accounts/login/", timeout=10)
    assert login.status_code == 200
    assert "csrfmiddlewaretoken" in login.text
    css = httpx.get(server.http + "/static/admin/css/base.css", timeout=10)
    assert css.status_code == 200
    assert css.headers["cache-control"].startswith("public, max-age=")
    missing = httpx.get(server.http + "/static/nope.css", timeout=10)
    assert missing.status_code == 404


def test_api_is_fastapis_under_plain_uvicorn(start_server, make_user):
    """/api/ is answered by the FastAPI app: JSON refusals, the schema, and the user of a Django session."""
    server = start_server()
    anonymous = httpx.get(server.http + "/api/rooms/", timeout=10)
    assert anonymous.status_code == 403
    assert anonymous.headers["content-type"] == "application/json"
    assert httpx.get(server.http + "/api/nope", timeout=10).json()["error"]["code"] == "not_found"
    schema = httpx.get(server.http + "/api/openapi.json", timeout=10).json()
    assert "/api/rooms/{slug}/messages" in schema["paths"]
    django_client = Client()
    django_client.force_login(make_user("alice"))
    cookies = {settings.SESSION_COOKIE_NAME: django_client.cookies[settings.SESSION_COOKIE_NAME].value}
    rooms = httpx.get(server.http + "/api/rooms/", cookies=cookies, timeout=10)
    assert rooms.status_code == 200
    assert rooms.json() == {"rooms": []}
    head = httpx.head(server.http + "/api/rooms/", cookies=cookies, timeout=10)
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(len(rooms.content)))
