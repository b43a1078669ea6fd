"""The JSON API: everything under ``/api/`` (protocol.md sections 5 and 7.6).

One router holds every endpoint. Each sub-router is one module of this
package; adding one is one line: its ``router`` in ``ROUTERS`` below.
Every route gets, before its own dependencies: private cache headers, the
Django user of the session cookie (anonymous: 403), and Django's CSRF rule
for unsafe methods. The schema is at ``/api/openapi.json``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsapp.api import attachments, dms, errors, rooms
from wsapp.api.deps import CurrentUser, csrf_protect, current_user, no_store

__all__ = ["CurrentUser", "api_router", "csrf_protect", "current_user", "head_as_get", "install", "router"]

PREFIX = "/api"
OPENAPI_URL = PREFIX + "/openapi.json"

# Every endpoint module's router. Adding one is one line here.
ROUTERS: tuple[APIRouter, ...] = (rooms.router, attachments.router, dms.router)


def api_router(*routers: APIRouter) -> APIRouter:
    """``routers`` under ``/api``, behind the dependencies every API route gets."""
    combined = APIRouter(
        prefix=PREFIX,
        dependencies=[Depends(no_store), Depends(current_user), Depends(csrf_protect)],
        responses=errors.error_responses(403, "4XX"),
    )
    for sub in routers:
        combined.include_router(sub)
    return combined


router = api_router(*ROUTERS)


def install(app: FastAPI, api: APIRouter = router) -> None:
    """Serve ``api`` (by default, Kaiwa's) from ``app``, with JSON for every refusal."""
    app.title = "Kaiwa API"
    app.description = (
        "The JSON API of a Kaiwa server. Authenticate with Django's session cookie; "
        "send the csrftoken cookie's value in an X-CSRFToken header with POST, PUT, PATCH and DELETE."
    )
    app.include_router(api)
    errors.install(app)
    # "/api/rooms" is not "/api/rooms/": a JSON 404 naming the endpoints, never a redirect.
    app.router.redirect_slashes = False


def head_as_get(app: ASGIApp) -> ASGIApp:
    """HEAD answered as GET without a body, as Django and Starlette do (FastAPI routes GET only)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await app({**scope, "method": "GET"}, receive, headers_only)

    return wrapped
