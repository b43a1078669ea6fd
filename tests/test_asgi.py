"""The ASGI entrypoint as operators run it: ``uvicorn project.asgi:application``."""

from __future__ import annotations

import httpx
import pytest

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
