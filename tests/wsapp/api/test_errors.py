"""Every refusal under /api/ is JSON: the 7.3 body by default, the v1 body on the v1 read routes."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from django.db import OperationalError
from fastapi import APIRouter, FastAPI, HTTPException, Query

from tests.wsapp.api.conftest import Api, login
from wsapp import api
from wsapp.api import CurrentUser
from wsapp.api.errors import ApiError
from wsapp.auth import AuthUnavailable

pytestmark = pytest.mark.django_db(transaction=True)

router = APIRouter()


@router.get("/count")
async def count(user: CurrentUser, n: Annotated[int, Query(ge=1, le=10)]) -> dict[str, int]:
    return {"n": n}


@router.get("/refuse")
async def refuse(user: CurrentUser) -> dict[str, str]:
    raise ApiError(429, "rate_limited", "Too many uploads; wait a minute.", headers={"Retry-After": "60"})


@router.get("/teapot")
async def teapot(user: CurrentUser) -> dict[str, str]:
    raise HTTPException(418, "I am a teapot; ask a kettle.")


@router.get("/boom")
async def boom(user: CurrentUser) -> dict[str, str]:
    raise RuntimeError("a bug")


@router.get("/db-down")
async def db_down(user: CurrentUser) -> dict[str, str]:
    raise OperationalError("connection refused")


@router.get("/auth-down")
async def auth_down(user: CurrentUser) -> dict[str, str]:
    raise AuthUnavailable("the database did not answer within 2 s")


@pytest.fixture
def client(alice: Any) -> Api:
    app = FastAPI(openapi_url=api.OPENAPI_URL)
    api.install(app, api.api_router(*api.ROUTERS, router))
    return login(Api(app, raise_errors=False), alice)


def error_of(response: Any, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "private, no-store"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def test_api_error_is_the_7_3_body_with_its_headers(client: Api):
    """ApiError answers {"error": {"code", "message"}} with its status and headers."""
    response = client.get("/api/refuse")
    assert error_of(response, 429) == {"code": "rate_limited", "message": "Too many uploads; wait a minute."}
    assert response.headers["Retry-After"] == "60"


def test_invalid_parameter_is_400_not_422(client: Api):
    """FastAPI's validation errors become 400 bad_request naming the parameter."""
    for query in ("n=abc", "n=0", ""):
        error = error_of(client.get(f"/api/count?{query}"), 400)
        assert error["code"] == "bad_request"
        assert "'n'" in error["message"] and "/api/openapi.json" in error["message"]
    assert client.get("/api/count?n=3").json() == {"n": 3}


def test_wrong_method_is_405_json(client: Api):
    """A method the route does not take: 405 method_not_allowed with Allow."""
    response = client.request("DELETE", "/api/refuse")
    error = error_of(response, 405)
    assert error == {"code": "method_not_allowed", "message": "DELETE is not allowed here: use GET."}
    assert response.headers["Allow"] == "GET, HEAD"


def test_v1_routes_keep_the_v1_body_beside_new_ones(client: Api):
    """On the same app, the v1 read routes still answer {"error": "<message>"}."""
    response = client.get("/api/rooms/nope/messages")
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


def test_unknown_path_is_404_json(client: Api):
    """An unknown path is 404 not_found listing every endpoint, the added ones too."""
    error = error_of(client.get("/api/nothing/here"), 404)
    assert error["code"] == "not_found"
    assert "GET /api/count" in error["message"] and "GET /api/rooms/" in error["message"]


def test_http_exception_is_json(client: Api):
    """A FastAPI HTTPException keeps its status and detail, in the JSON body."""
    assert error_of(client.get("/api/teapot"), 418) == {
        "code": "bad_request",
        "message": "I am a teapot; ask a kettle.",
    }


def test_server_error_is_500_json(client: Api):
    """An unexpected exception is a 500 server_error JSON answer, not Starlette's text page."""
    assert error_of(client.get("/api/boom"), 500)["code"] == "server_error"


@pytest.mark.parametrize("path", ["/api/db-down", "/api/auth-down"])
def test_database_down_is_503_unavailable(client: Api, path: str):
    """A database that cannot be reached (by a route, or by the session check) is 503 unavailable: try again later."""
    error = error_of(client.get(path), 503)
    assert error["code"] == "unavailable"
    assert "Try again" in error["message"]
