"""The JSON API: everything under ``/api/`` (protocol.md sections 5 and 7.6).

One router holds every endpoint. Each sub-router is one module of this
package; adding one is one line below (``router.include_router(x.router)``).
Every route gets, before its own dependencies: private cache headers, the
Django user of the session cookie (anonymous: 403), and Django's CSRF rule
for unsafe methods. The schema is at ``/api/openapi.json``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wsapp.api import errors, rooms
from wsapp.api.deps import CurrentUser, csrf_protect, current_user, no_store

__all__ = ["CurrentUser", "csrf_protect", "current_user", "head_as_get", "install", "router"]

PREFIX = "/api"
OPENAPI_URL = PREFIX + "/openapi.json"

router = APIRouter(prefix=PREFIX, dependencies=[Depends(no_store), Depends(current_user), Depends(csrf_protect)])
router.include_router(rooms.router)


def install(app: FastAPI) -> None:
    """Serve the API from ``app``: its routes, and JSON for every refusal."""
    app.title = "Kaiwa API"
    app.description = (
        "The JSON API of a Kaiwa server. Authenticate with Django's session cookie; "
        "send the csrftoken cookie's value in an X-CSRFToken header with POST, PUT, PATCH and DELETE."
    )
    app.include_router(router)
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
