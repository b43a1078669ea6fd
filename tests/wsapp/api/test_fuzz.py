"""Schemathesis fuzzes every operation of /api/openapi.json through the real ASGI entrypoint: no input gives a 500.

Requests carry alice's session cookie and a valid CSRF token, so the fuzzing
reaches the routes' own code, not only the login refusal; every generated
case is also sent with its room slug (or attachment id) replaced by one alice
can see, so paging, uploads and downloads are fuzzed past the lookup. Generation is
derandomized with a bounded number of examples: the same cases on every run,
within about a minute on CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.test import Client as DjangoClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from starlette.types import Receive, Scope, Send

from chat import images, services
from project.asgi import application
from tests import samplefiles
from tests.wsapp.api.conftest import Api
from tests.wsapp.api.test_deps import new_token

pytestmark = pytest.mark.django_db(transaction=True)

# Path parameters that name something alice can see, tried besides each generated value.
_known = {"slug": "lobby", "attachment_id": ""}
EXAMPLES = 40  # per operation; the whole module stays within about a minute


async def _without_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """The API needs no Redis hub: the lifespan is acknowledged, not run (the tests' Redis stays untouched)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await application(scope, receive, send)


# /healthz is in the app's schema too; the fuzzed surface is the JSON API.
schema = schemathesis.openapi.from_asgi("/api/openapi.json", _without_lifespan).include(path_regex="^/api/")


@pytest.fixture(scope="module", autouse=True)
def _image_workers() -> Iterator[None]:
    """Image worker processes started by fuzzed uploads are stopped after this module."""
    yield
    images.shutdown_pool()


@pytest.fixture
def auth(settings: Any, tmp_path: Path) -> dict[str, str]:
    """alice, a room she can see with one picture in it, her session cookie and CSRF token as request headers."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    settings.KAIWA_UPLOAD_RATE_BURST = 100000
    alice = User.objects.create_user(username="alice", password="x")
    services.room_create(name="Lobby", creator=alice)
    client = DjangoClient()
    client.force_login(alice)
    secret, masked = new_token()
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    headers = {
        "Cookie": f"{settings.SESSION_COOKIE_NAME}={session}; {settings.CSRF_COOKIE_NAME}={secret}",
        "X-CSRFToken": masked,
    }
    api = Api()
    picture = ("p.png", samplefiles.png_with_text(), "image/png")
    uploaded = api.post("/api/rooms/lobby/attachments", files={"file": picture}, headers=headers)
    assert uploaded.status_code == 201, uploaded.text
    _known["attachment_id"] = uploaded.json()["attachment"]["id"]
    return headers


def _check(case: Any, response: Any) -> None:
    status = response.status_code
    where = f"{case.method} {case.formatted_path} -> {status}: {response.content[:300]!r}"
    assert status < 500 or status == 503, where
    if status >= 400:
        # Every refusal is the API's JSON error, never a traceback or an HTML page.
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), where
        assert "error" in response.json(), where


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_input_gives_a_server_error(case: Any, auth: dict[str, str]) -> None:
    """Any generated parameters, query, headers or body: 2xx, or a 4xx JSON error (503 only as documented)."""
    # Generated cookies/headers must not replace the session: ours go last.
    case.headers = {**(case.headers or {}), **auth}
    case.cookies = {}
    _check(case, case.call())
    known = {name: _known[name] for name in case.path_parameters or {} if name in _known}
    if known:
        case.path_parameters = {**case.path_parameters, **known}
        _check(case, case.call())
