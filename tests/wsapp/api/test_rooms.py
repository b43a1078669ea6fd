"""The rooms and history API (protocol.md section 5) through FastAPI, including every bad parameter."""

from __future__ import annotations

import pytest

from chat import services
from tests.chat.factories import add_messages
from tests.wsapp.api.conftest import Api

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lobby(alice):
    room = services.room_create(name="Lobby", creator=alice)
    add_messages(room, 120, author=alice)
    return room


def messages_url(slug: str = "lobby") -> str:
    return f"/api/rooms/{slug}/messages"


# -- room list ---------------------------------------------------------------------


def test_room_list_shape_and_last_seq(api_alice: Api, alice, make_user, lobby):
    """/api/rooms/ lists visible rooms with slug, name, private flag and the last stored seq."""
    bob = make_user("bob")
    services.room_create(name="Secret", private=True, creator=alice)
    services.room_create(name="Not mine", private=True, creator=bob)
    services.room_create(name="Empty", creator=bob)
    response = api_alice.get("/api/rooms/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "rooms": [
            {"slug": "empty", "name": "Empty", "private": False, "last_seq": 0, "kind": "room"},
            {"slug": "lobby", "name": "Lobby", "private": False, "last_seq": 120, "kind": "room"},
            {"slug": "secret", "name": "Secret", "private": True, "last_seq": 0, "kind": "room"},
        ]
    }


def test_responses_are_not_cached(api_alice: Api, anonymous: Api, lobby):
    """API answers, refusals included, carry Cache-Control: private, no-store and nosniff."""
    for response in (
        api_alice.get("/api/rooms/"),
        api_alice.get(messages_url()),
        api_alice.get(messages_url("nope")),
        api_alice.get(messages_url(), params={"limit": "0"}),
        anonymous.get("/api/rooms/"),
        api_alice.get("/api/nope"),
    ):
        assert response.headers["Cache-Control"] == "private, no-store", response.url
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.url


# -- messages ----------------------------------------------------------------------


def test_messages_default_page(api_alice: Api, alice, lobby):
    """Without parameters: the latest 50 messages oldest first, each in the message frame shape."""
    body = api_alice.get(messages_url()).json()
    assert body["has_more"] is True
    assert [m["seq"] for m in body["messages"]] == list(range(71, 121))
    assert body["messages"][0] == {
        "type": "message",
        "room": "lobby",
        "seq": 71,
        "ts": "2026-11-21T12:01:11.123Z",
        "user": {"id": alice.pk, "username": "alice"},
        "body": "message 71",
        "client_id": "c71",
        "reply_to": None,
        "mentions": [],
        "edited_ts": None,
        "deleted": False,
        "attachments": [],
    }


def test_messages_before_and_limit_walk_back(api_alice: Api, lobby):
    """before and limit page backwards; the first page has has_more false."""
    body = api_alice.get(messages_url(), params={"before": "71", "limit": "100"}).json()
    assert [m["seq"] for m in body["messages"]] == list(range(1, 71))
    assert body["has_more"] is False
    body = api_alice.get(messages_url(), params={"before": "10", "limit": "3"}).json()
    assert [m["seq"] for m in body["messages"]] == [7, 8, 9]
    assert body["has_more"] is True


@pytest.mark.parametrize(("limit", "count"), [("1", 1), ("100", 100), ("050", 50)])
def test_messages_limit_bounds(api_alice: Api, lobby, limit, count):
    """limit accepts 1 to 100 (leading zeros allowed)."""
    body = api_alice.get(messages_url(), params={"limit": limit}).json()
    assert len(body["messages"]) == count


def test_messages_before_beyond_the_end_and_before_one(api_alice: Api, lobby):
    """A before above the last seq gives the latest; before=1 gives an empty page."""
    body = api_alice.get(messages_url(), params={"before": str(2**63 - 1), "limit": "2"}).json()
    assert [m["seq"] for m in body["messages"]] == [119, 120]
    body = api_alice.get(messages_url(), params={"before": "1"}).json()
    assert body == {"messages": [], "has_more": False}


def test_messages_of_an_empty_room(api_alice: Api, alice):
    """A room without messages gives an empty page."""
    services.room_create(name="Quiet", creator=alice)
    assert api_alice.get(messages_url("quiet")).json() == {"messages": [], "has_more": False}


def test_message_of_a_deleted_account_keeps_its_name(api_alice: Api, alice, make_user):
    """A message whose author account was deleted keeps the username, with user id 0."""
    bob = make_user("bob")
    room = services.room_create(name="Old", creator=alice)
    add_messages(room, 1, author=bob)
    bob.delete()
    [message] = api_alice.get(messages_url("old")).json()["messages"]
    assert message["user"] == {"id": 0, "username": "bob"}


def test_unknown_query_parameters_are_ignored(api_alice: Api, lobby):
    """Parameters other than before and limit are ignored, like unknown frame fields."""
    body = api_alice.get(messages_url(), params={"limit": "2", "_": "12345"}).json()
    assert [m["seq"] for m in body["messages"]] == [119, 120]


def test_bodies_come_back_verbatim(api_alice: Api, alice):
    """Bodies are returned as stored: markup, quotes and unicode are not altered."""
    room = services.room_create(name="Raw", creator=alice)
    add_messages(room, 1, author=alice, body="<script>alert('x')</script> & 会話 \U0001f600")
    body = api_alice.get(messages_url("raw")).json()
    assert body["messages"][0]["body"] == "<script>alert('x')</script> & 会話 \U0001f600"


# -- refusals ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/rooms/", "/api/rooms/lobby/messages", "/api/rooms/nope/messages"])
def test_anonymous_gets_403_json_not_a_redirect(anonymous: Api, lobby, path):
    """An anonymous request gets 403 JSON that says how to log in (the v1 body: error is a string)."""
    response = anonymous.get(path)
    assert response.status_code == 403
    assert response.headers["Content-Type"] == "application/json"
    assert "log in at /accounts/login/" in response.json()["error"].lower()
    assert "Location" not in response.headers


@pytest.mark.parametrize("slug", ["nope", "Not-A-Slug", "x" * 200, "%E4%BC%9A"])
def test_unknown_room_is_404_json(api_alice: Api, slug):
    """An unknown (or malformed) room slug is a JSON 404."""
    response = api_alice.get(messages_url(slug))
    assert response.status_code == 404
    assert "No room" in response.json()["error"]


def test_private_room_of_others_is_404_like_unknown(api_alice: Api, make_user):
    """A private room the user is not a member of answers exactly like an unknown room."""
    bob = make_user("bob")
    room = services.room_create(name="Secret", private=True, creator=bob)
    add_messages(room, 3, author=bob)
    hidden = api_alice.get(messages_url("secret"))
    unknown = api_alice.get(messages_url("secreu"))
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["error"].replace("secret", "X") == unknown.json()["error"].replace("secreu", "X")


def test_member_of_private_room_reads_it(api_alice: Api, alice, make_user):
    """A member reads a private room's history, and sees the room in the list."""
    bob = make_user("bob")
    room = services.room_create(name="Secret", private=True, creator=bob, members=[alice])
    add_messages(room, 2, author=bob)
    assert [m["seq"] for m in api_alice.get(messages_url("secret")).json()["messages"]] == [1, 2]
    assert [r["slug"] for r in api_alice.get("/api/rooms/").json()["rooms"]] == ["secret"]


BAD_PARAMETERS = [
    ("before=abc", "'before' must be a whole number"),
    ("before=", "'before' is empty"),
    ("before=0", "'before' is 0, out of range"),
    ("before=-5", "'before' must be a whole number"),
    ("before=+5", "'before' must be a whole number"),
    ("before=%205", "'before' must be a whole number"),
    ("before=5.0", "'before' must be a whole number"),
    ("before=1e3", "'before' must be a whole number"),
    ("before=%EF%BC%95", "'before' must be a whole number"),  # fullwidth digit five
    ("before=0x10", "'before' must be a whole number"),
    ("before=9223372036854775808", "out of range"),  # 2**63
    ("before=99999999999999999999999", "'before' must be a whole number"),
    ("before=1&before=2", "'before' was given 2 times"),
    ("limit=0", "'limit' is 0, out of range; use 1 to 100"),
    ("limit=101", "'limit' is 101, out of range; use 1 to 100"),
    ("limit=-1", "'limit' must be a whole number"),
    ("limit=ten", "'limit' must be a whole number"),
    ("limit=", "'limit' is empty"),
    ("limit=10&limit=20", "'limit' was given 2 times"),
    ("limit=1.5", "'limit' must be a whole number"),
    ("limit=true", "'limit' must be a whole number"),
]


@pytest.mark.parametrize(("query", "fragment"), BAD_PARAMETERS)
def test_bad_parameters_are_400_json_with_a_clear_message(api_alice: Api, lobby, query, fragment):
    """Every malformed, out-of-range or repeated parameter gets 400 JSON saying how to fix it."""
    response = api_alice.get(f"{messages_url()}?{query}")
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    message = response.json()["error"]
    assert fragment in message
    assert "use " in message or "give it at most once" in message


def test_long_bad_values_are_shortened_in_the_message(api_alice: Api, lobby):
    """A huge bad value is not echoed back in full."""
    response = api_alice.get(messages_url(), params={"before": "z" * 5000})
    assert response.status_code == 400
    assert len(response.json()["error"]) < 300


def test_bad_parameters_are_checked_after_the_session(anonymous: Api, lobby):
    """An anonymous request with a bad parameter is told to log in first."""
    response = anonymous.get(messages_url(), params={"limit": "0"})
    assert response.status_code == 403


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_other_methods_are_405_json(api_alice: Api, lobby, method):
    """Only GET (and HEAD) are allowed; other methods get 405 JSON with an Allow header."""
    response = api_alice.request(method, messages_url())
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert "use GET" in response.json()["error"]


def test_inactive_user_is_treated_as_anonymous(api_alice: Api, alice, lobby):
    """A deactivated account's session no longer opens the API."""
    alice.is_active = False
    alice.save()
    assert api_alice.get(messages_url()).status_code == 403


@pytest.mark.parametrize(
    "path", ["/api/nope", "/api/rooms/lobby/messages/", "/api/rooms/lobby/", "/api/v2/rooms/", "/api/rooms", "/api"]
)
def test_other_api_paths_are_json_404(api_alice: Api, lobby, path):
    """Unknown paths under /api/ get a JSON 404 naming the real endpoints and the schema, never a redirect."""
    response = api_alice.get(path)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "GET /api/rooms/{slug}/messages" in error["message"]
    assert "/api/openapi.json" in error["message"]


def test_head_is_allowed(api_alice: Api, lobby):
    """HEAD answers like GET, without a body."""
    get = api_alice.get(messages_url())
    head = api_alice.request("HEAD", messages_url())
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
