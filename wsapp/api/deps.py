"""Dependencies of every API route: the database context, the Django user, Django's CSRF rule.

``current_user`` applies the WebSocket's session checks (``wsapp.auth.session_user``:
Django's ``aget_user`` rules, read-only); ``csrf_protect`` asks Django's own
``CsrfViewMiddleware`` for its verdict, so masked tokens, the Origin and
Referer checks and ``CSRF_TRUSTED_ORIGINS`` behave exactly as on the pages.
Both run for every route under ``/api/`` (see ``wsapp/api/__init__.py``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, HttpResponse, QueryDict
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import resolve_url
from django.utils.datastructures import MultiValueDict
from fastapi import Depends, Request, Response
from fastapi.security import APIKeyCookie

from wsapp import auth
from wsapp.api.errors import FORBIDDEN, PRIVATE_HEADERS, ApiError

csrf_logger = logging.getLogger("django.security.csrf")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

# Declared as a security scheme so the OpenAPI schema says how to authenticate.
session_cookie = APIKeyCookie(
    name=settings.SESSION_COOKIE_NAME,
    auto_error=False,
    description="Django's session cookie, set by logging in on the site's pages (/accounts/login/).",
)


async def db_context() -> AsyncIterator[None]:
    """Run the request's ORM calls on a thread of its own, and close its connection at the end.

    Django's ASGI handler does the same for each request: without it, every
    ``sync_to_async`` call of every API request and of the WebSocket hub
    would queue on one process-wide thread. A connection left open on the
    request's thread would outlive the thread, hence the ``close_all``.
    """
    async with ThreadSensitiveContext():
        try:
            yield
        finally:
            await sync_to_async(connections.close_all)()


def no_store(response: Response) -> None:
    """API answers are the user's own: never kept by shared caches."""
    response.headers.update(PRIVATE_HEADERS)


async def current_user(
    session_key: Annotated[str | None, Depends(session_cookie)],
    _db: Annotated[None, Depends(db_context)],
) -> AbstractBaseUser:
    """The Django user of the request's session, or 403 ``forbidden``.

    The same checks as the WebSocket's handshake: the session exists and is
    unexpired, its user is active, and its auth hash matches (a password
    change or a logout ends it).
    """
    user = await auth.session_user(session_key)
    if user is None:
        raise ApiError(
            403,
            FORBIDDEN,
            f"You are not logged in. Log in at {resolve_url(settings.LOGIN_URL)} "
            "and send the session cookie with the request.",
        )
    return user


CurrentUser = Annotated[AbstractBaseUser, Depends(current_user)]
"""A route parameter of this type receives the logged-in Django user."""


class CsrfRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF middleware, asked for a verdict instead of its HTML failure page."""

    def _reject(self, request: HttpRequest, reason: str) -> HttpResponse:
        raise CsrfRefused(reason)


def _no_view(request: HttpRequest) -> HttpResponse:
    raise AssertionError("the CSRF check never calls the view")


_CSRF_HEADER = settings.CSRF_HEADER_NAME.removeprefix("HTTP_").replace("_", "-")
# Django's default header name reads better in its usual spelling.
_CSRF_HEADER_SHOWN = "X-CSRFToken" if _CSRF_HEADER == "X-CSRFTOKEN" else _CSRF_HEADER


def django_request(request: Request) -> HttpRequest:
    """The request as Django sees it (headers, cookies, host, scheme); its body is never read.

    The form body is set empty: the API takes the CSRF token from the header
    only, and Django's check must not consume an upload's body.
    """
    converted = ASGIRequest(dict(request.scope), io.BytesIO())
    converted._post = QueryDict()  # type: ignore[attr-defined]
    converted._files = MultiValueDict()  # type: ignore[attr-defined]
    return converted


def _check(converted: HttpRequest) -> None:
    # A new instance each time: the middleware caches CSRF_TRUSTED_ORIGINS in
    # cached properties, which would miss a settings change (tests override it).
    _CsrfCheck(_no_view).process_view(converted, _no_view, (), {})


async def csrf_protect(request: Request, _db: Annotated[None, Depends(db_context)]) -> None:
    """Django's CSRF rule for unsafe methods (POST, PUT, PATCH, DELETE), or 403 ``forbidden``.

    The ``csrftoken`` cookie's value (or the masked token of the page's
    ``{% csrf_token %}``) goes in an ``X-CSRFToken`` header; an ``Origin``
    header must be this site or in ``CSRF_TRUSTED_ORIGINS``; over HTTPS
    without ``Origin``, the ``Referer`` must be.
    """
    if request.method in SAFE_METHODS:
        return
    converted = django_request(request)
    try:
        if settings.CSRF_USE_SESSIONS:
            # The secret is in the session: the check reads it from the database.
            converted.session = auth.session_store(request.cookies.get(settings.SESSION_COOKIE_NAME, ""))
            await sync_to_async(_check)(converted)
        else:
            _check(converted)
    except CsrfRefused as exc:
        csrf_logger.warning("Forbidden (%s): %s", exc.reason, request.url.path)
        where = (
            "the CSRF token of a page of this site ({% csrf_token %})"
            if settings.CSRF_USE_SESSIONS
            else f"the value of the {settings.CSRF_COOKIE_NAME} cookie"
        )
        raise ApiError(
            403, FORBIDDEN, f"CSRF check failed: {exc.reason} Send {where} in an {_CSRF_HEADER_SHOWN} header."
        ) from None
