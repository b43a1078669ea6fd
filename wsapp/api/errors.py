"""The API's refusals: one exception, and the one place that turns failures into JSON.

Two error bodies exist, both fixed by the contract:

* ``{"error": {"code": ..., "message": ...}}`` (protocol.md 7.3), for every route;
* ``{"error": "<message>"}`` on the routes of a router built with
  ``route_class=V1ErrorRoute``: the version 1 read API (``GET /api/rooms/``,
  ``GET /api/rooms/<slug>/messages``) answered so before 7.3 existed, and v1
  clients read ``error`` as a string.

Nothing under ``/api/`` answers HTML: unknown paths, wrong methods, invalid
parameters and server errors are JSON too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from django.db import InterfaceError, OperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from wsapp.api.models import ErrorBody, ErrorDetail, V1ErrorBody
from wsapp.auth import AuthUnavailable

logger = logging.getLogger("kaiwa.api")

BAD_REQUEST = "bad_request"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
UNAVAILABLE = "unavailable"
SERVER_ERROR = "server_error"

# Every answer of the API, refusals included, is private to the user.
PRIVATE_HEADERS = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}

_CODES_BY_STATUS = {
    400: BAD_REQUEST,
    403: FORBIDDEN,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    503: UNAVAILABLE,
}


class ApiError(Exception):
    """A refused request: raise it from a route or a dependency."""

    def __init__(self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


class V1ErrorRoute(APIRoute):
    """A route whose refusals keep the version 1 body ``{"error": "<message>"}``."""


def refusal(
    status: int, code: str, message: str, request: Request, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The JSON answer for a refusal, in the body shape of the route that was asked."""
    if isinstance(request.scope.get("route"), V1ErrorRoute):
        content = V1ErrorBody(error=message).model_dump()
    else:
        content = ErrorBody(error=ErrorDetail(code=code, message=message)).model_dump()
    return JSONResponse(content, status_code=status, headers={**PRIVATE_HEADERS, **(headers or {})})


_DESCRIPTIONS: dict[int | str, str] = {
    400: "A bad parameter or body; the message says which and how to fix it.",
    403: "Not logged in (no valid session cookie), or no valid CSRF token with an unsafe method.",
    404: "No such resource, or one the user may not see.",
    "4XX": "Another refusal (e.g. 405 for a method the route does not take).",
}


def error_responses(*statuses: int | str, v1: bool = False) -> dict[int | str, dict[str, object]]:
    """The ``responses=`` of a route or router: its refusals with their body model, for the OpenAPI schema.

    Listing ``"4XX"`` also keeps FastAPI from documenting a 422 answer: the API
    refuses invalid input with 400.
    """
    model = V1ErrorBody if v1 else ErrorBody
    return {status: {"model": model, "description": _DESCRIPTIONS.get(status, "A refusal.")} for status in statuses}


def _endpoints(app: FastAPI) -> str:
    paths: dict[str, dict[str, object]] = app.openapi().get("paths", {})
    return ", ".join(
        f"{method.upper()} {path}" for path, ops in paths.items() for method in ops if path.startswith("/api/")
    )


def install(app: FastAPI) -> None:
    """Register the API's exception handlers on ``app``."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return refusal(exc.status, exc.code, exc.message, request, exc.headers)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 404 and request.scope.get("route") is None:
            message = (
                f"No API endpoint at {request.url.path!r}. The endpoints are {_endpoints(app)}; "
                f"their parameters and answers are in {app.openapi_url}."
            )
        elif exc.status_code == 405:
            allowed = sorted({m.strip() for m in headers.get("Allow", "").split(",") if m.strip()})
            if "GET" in allowed and "HEAD" not in allowed:
                allowed.append("HEAD")  # see project/asgi.py: HEAD is answered as GET
                allowed.sort()
            headers["Allow"] = ", ".join(allowed)
            use = " or ".join(m for m in allowed if m != "HEAD") or "another method"
            message = f"{request.method} is not allowed here: use {use}."
        else:
            message = str(exc.detail)
        code = _CODES_BY_STATUS.get(exc.status_code, BAD_REQUEST if exc.status_code < 500 else SERVER_ERROR)
        return refusal(exc.status_code, code, message, request, headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors()[:3]:
            where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body"))
            problems.append(f"'{where}': {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
        message = "; ".join(problems) + f". The parameters of each endpoint are in {app.openapi_url}."
        return refusal(400, BAD_REQUEST, message, request)

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        logger.warning("API %s %s: database error %r", request.method, request.url.path, exc)
        return refusal(
            503, UNAVAILABLE, "The database is unreachable; nothing was changed. Try again shortly.", request
        )

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware sends this answer, then re-raises to the server, which logs it.
        return refusal(500, SERVER_ERROR, "The server failed to answer; the error is logged. Try again later.", request)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(OperationalError, database_down)
    app.add_exception_handler(InterfaceError, database_down)
    app.add_exception_handler(AuthUnavailable, database_down)  # the session check could not reach it
    app.add_exception_handler(Exception, server_error)
