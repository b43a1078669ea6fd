"""Requests to the JSON API through the real ASGI entrypoint, with a Django session cookie.

``project.asgi.application`` is driven in-process by httpx's ``ASGITransport``:
the same dispatcher, FastAPI app, dependencies and exception handlers as under
uvicorn, without a server process. The database must be committed for the API
to see it (each request runs its ORM calls on a thread of its own, as under
Django), hence ``transaction=True`` on these tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import Client as DjangoClient

from project.asgi import application

TIMEOUT = 10.0


class Api:
    """A blocking HTTP client for an ASGI app, holding cookies like a browser."""

    def __init__(
        self, app: Any = application, *, base_url: str = "http://testserver", raise_errors: bool = True
    ) -> None:
        self.app = app
        self.base_url = base_url
        self.raise_errors = raise_errors
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=self.raise_errors)
            async with httpx.AsyncClient(transport=transport, base_url=self.base_url, cookies=self.cookies) as client:
                return await asyncio.wait_for(client.request(method, path, **kwargs), TIMEOUT)

        return asyncio.run(send())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


def login(api: Api, user: Any) -> Api:
    """Give ``api`` the session cookie Django sets when ``user`` logs in."""
    django_client = DjangoClient()
    django_client.force_login(user)
    api.cookies[settings.SESSION_COOKIE_NAME] = django_client.cookies[settings.SESSION_COOKIE_NAME].value
    return api


@pytest.fixture
def alice(make_user: Callable[..., Any]) -> Any:
    """A user named alice."""
    return make_user("alice")


@pytest.fixture
def anonymous() -> Api:
    """The API with no session cookie."""
    return Api()


@pytest.fixture
def api_alice(alice: Any) -> Api:
    """The API with alice's session cookie."""
    return login(Api(), alice)


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    """A fast password hasher: these tests start no server process that would check the hashes."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
