"""current_user (the WebSocket's session checks) and csrf_protect (Django's CSRF rule), through FastAPI.

No unsafe Kaiwa endpoint is needed to test the CSRF rule: the tests serve a
POST route of their own behind the same dependencies, with ``api.install``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.http import HttpRequest
from django.middleware.csrf import CSRF_SESSION_KEY, get_token
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from tests.wsapp.api.conftest import Api, login
from wsapp import api, auth
from wsapp.api import CurrentUser

pytestmark = pytest.mark.django_db(transaction=True)


class Note(BaseModel):
    text: str


class Echo(BaseModel):
    user: str
    text: str


router = APIRouter()


@router.post("/notes", response_model=Echo)
async def note_create(note: Note, user: CurrentUser) -> Echo:
    return Echo(user=user.get_username(), text=note.text)


@router.get("/notes", response_model=Echo)
async def note_read(user: CurrentUser) -> Echo:
    return Echo(user=user.get_username(), text="")


def make_app() -> FastAPI:
    app = FastAPI(openapi_url=api.OPENAPI_URL)
    api.install(app, api.api_router(router))
    return app


def new_token() -> tuple[str, str]:
    """(the csrftoken cookie's secret, a masked token for it), as Django makes them for a page."""
    request = HttpRequest()
    masked = get_token(request)
    return request.META["CSRF_COOKIE"], masked


@pytest.fixture
def notes(alice: Any) -> Api:
    """The test app, logged in as alice, without a CSRF cookie yet."""
    return login(Api(make_app()), alice)


def with_csrf(client: Api) -> str:
    """Give ``client`` a csrftoken cookie; return its secret."""
    secret, _ = new_token()
    client.cookies[settings.CSRF_COOKIE_NAME] = secret
    return secret


def post(client: Api, *, token: str | None = None, **headers: str) -> Any:
    if token is not None:
        headers["X-CSRFToken"] = token
    return client.post("/api/notes", json={"text": "hi"}, headers=headers)


def refused(response: Any, fragment: str) -> None:
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert fragment in error["message"]


# -- current_user ------------------------------------------------------------------------


def test_current_user_is_the_session_user(notes: Api):
    """A route asking for CurrentUser gets the Django user of the session cookie."""
    assert notes.get("/api/notes").json() == {"user": "alice", "text": ""}


@pytest.mark.parametrize("cookie", [None, "", "nope", "x" * 300])
def test_no_valid_session_is_403_json(cookie: str | None):
    """No session cookie, or one naming no session: 403 forbidden, saying how to log in."""
    client = Api(make_app())
    if cookie is not None:
        client.cookies[settings.SESSION_COOKIE_NAME] = cookie
    response = client.get("/api/notes")
    refused(response, "Log in at /accounts/login/")
    assert response.headers["Cache-Control"] == "private, no-store"


def test_password_change_ends_the_session(notes: Api, alice: Any):
    """After a password change, the old session's auth hash no longer matches: 403."""
    alice.set_password("another horse battery")
    alice.save()
    refused(notes.get("/api/notes"), "not logged in")


def test_logout_ends_the_session(notes: Api):
    """A session deleted by logging out no longer authenticates."""
    auth.session_store(notes.cookies[settings.SESSION_COOKIE_NAME]).delete()
    refused(notes.get("/api/notes"), "not logged in")


def test_inactive_user_is_refused(notes: Api, alice: Any):
    """A deactivated user's session is refused."""
    alice.is_active = False
    alice.save()
    refused(notes.get("/api/notes"), "not logged in")


def test_anonymous_unsafe_request_is_told_to_log_in():
    """An anonymous POST is refused for the session first, even with a valid CSRF token."""
    client = Api(make_app())
    secret = with_csrf(client)
    refused(post(client, token=secret), "not logged in")


# -- csrf_protect -----------------------------------------------------------------------


def test_safe_methods_need_no_token(notes: Api):
    """GET (and HEAD) need no CSRF token, as in Django."""
    assert notes.get("/api/notes").status_code == 200


def test_unsafe_method_without_csrf_cookie_is_403(notes: Api):
    """A POST without the csrftoken cookie is refused, saying which header to send."""
    refused(post(notes, token="x" * 32), "CSRF cookie not set")
    refused(post(notes), "X-CSRFToken header")


def test_unsafe_method_without_header_is_403(notes: Api):
    """The csrftoken cookie alone is not enough: the header must carry the token."""
    with_csrf(notes)
    refused(post(notes), "CSRF token missing")


def test_form_field_token_is_not_read(notes: Api):
    """The token in a form field is ignored (the API reads the header only, and never a body to find it)."""
    secret = with_csrf(notes)
    response = notes.post("/api/notes", data={"csrfmiddlewaretoken": secret, "text": "hi"})
    refused(response, "CSRF token missing")


@pytest.mark.parametrize("kind", ["other secret", "other masked", "bad characters", "bad length"])
def test_wrong_token_is_403(notes: Api, kind: str):
    """A token for another secret, or a malformed one, is refused with Django's reason."""
    with_csrf(notes)
    other_secret, other_masked = new_token()
    token, reason = {
        "other secret": (other_secret, "HTTP header incorrect"),
        "other masked": (other_masked, "HTTP header incorrect"),
        "bad characters": ("!" * 32, "HTTP header has invalid characters"),
        "bad length": ("abc", "HTTP header has incorrect length"),
    }[kind]
    refused(post(notes, token=token), reason)


def test_secret_or_masked_token_in_header_is_accepted(notes: Api):
    """The cookie's value, or any masked token of it (the page's {% csrf_token %}), passes; the body arrives intact."""
    secret = with_csrf(notes)
    request = HttpRequest()
    request.META["CSRF_COOKIE"] = secret
    masked = get_token(request)
    assert masked != secret and len(masked) == 64
    for token in (secret, masked):
        response = post(notes, token=token)
        assert response.status_code == 200, response.text
        assert response.json() == {"user": "alice", "text": "hi"}


def test_foreign_origin_is_403(notes: Api):
    """A cross-site Origin is refused even with a valid token; this site's own Origin passes."""
    secret = with_csrf(notes)
    refused(post(notes, token=secret, Origin="http://evil.example"), "Origin checking failed")
    refused(post(notes, token=secret, Origin="https://testserver"), "Origin checking failed")
    assert post(notes, token=secret, Origin="http://testserver").status_code == 200


def test_csrf_trusted_origins_are_trusted(notes: Api, settings: Any):
    """Origins in CSRF_TRUSTED_ORIGINS, wildcards included, pass as they do on Django's pages."""
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.example.org"]
    secret = with_csrf(notes)
    assert post(notes, token=secret, Origin="https://app.example.com").status_code == 200
    assert post(notes, token=secret, Origin="https://chat.example.org").status_code == 200
    refused(post(notes, token=secret, Origin="https://example.com"), "Origin checking failed")


def test_https_without_origin_checks_the_referer(alice: Any):
    """Over HTTPS without Origin, the Referer must be this site over HTTPS, as Django requires."""
    client = login(Api(make_app(), base_url="https://testserver"), alice)
    secret = with_csrf(client)
    refused(post(client, token=secret), "Referer checking failed - no Referer.")
    refused(post(client, token=secret, Referer="http://testserver/rooms/lobby/"), "Referer checking failed")
    refused(post(client, token=secret, Referer="https://evil.example/"), "Referer checking failed")
    assert post(client, token=secret, Referer="https://testserver/rooms/lobby/").status_code == 200


def test_host_outside_allowed_hosts_is_403(notes: Api):
    """A Host outside ALLOWED_HOSTS never matches an Origin, even its own: refused, as Django refuses it."""
    secret = with_csrf(notes)
    refused(post(notes, token=secret, Host="evil.example", Origin="http://evil.example"), "Origin checking failed")


def test_csrf_secret_in_the_session(notes: Api, settings: Any):
    """With CSRF_USE_SESSIONS, the secret is read from the Django session, as Django does."""
    settings.CSRF_USE_SESSIONS = True
    secret, masked = new_token()
    refused(post(notes, token=masked), "{% csrf_token %}")
    session = auth.session_store(notes.cookies[settings.SESSION_COOKIE_NAME])
    session[CSRF_SESSION_KEY] = secret
    session.save()
    assert post(notes, token=masked).status_code == 200


# -- db_context -------------------------------------------------------------------------

seen: list[tuple[threading.Thread, Any]] = []


def _orm_thread() -> tuple[threading.Thread, Any]:
    get_user_model().objects.exists()  # opens this thread's connection
    # The Thread object, not get_ident(): an ident is reused once its thread
    # has ended, so two finished request threads can share one.
    return threading.current_thread(), connections["default"]


@router.get("/thread", response_model=Echo)
async def thread_of_orm(user: CurrentUser) -> Echo:
    seen.append(await sync_to_async(_orm_thread)())
    return Echo(user=user.get_username(), text="")


def test_each_request_has_its_own_orm_thread_and_closes_its_connection(notes: Api):
    """A request's ORM calls run on a thread of its own (not the hub's shared one), and its connection is closed."""
    seen.clear()
    shared_thread = asyncio.run(sync_to_async(threading.current_thread)())
    for _ in range(2):
        assert notes.get("/api/thread").status_code == 200
    (first, first_connection), (second, second_connection) = seen
    assert first is not second and shared_thread not in (first, second)
    assert first_connection.connection is None and second_connection.connection is None
