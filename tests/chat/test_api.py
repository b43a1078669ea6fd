"""The JSON history API (protocol.md section 5), including every bad parameter."""

from __future__ import annotations

import pytest

from chat import services
from tests.chat.factories import add_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def lobby(alice):
    room = services.room_create(name="Lobby", creator=alice)
    add_messages(room, 120, author=alice)
    return room


def messages_url(slug: str = "lobby") -> str:
    return f"/api/rooms/{slug}/messages"


# -- room list ---------------------------------------------------------------------


def test_room_list_shape_and_last_seq(client_alice, alice, make_user, lobby):
    """/api/rooms/ lists visible rooms with slug, name, private flag and the last stored seq."""
    bob = make_user("bob")
    services.room_create(name="Secret", private=True, creator=alice)
    services.room_create(name="Not mine", private=True, creator=bob)
    services.room_create(name="Empty", creator=bob)
    response = client_alice.get("/api/rooms/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "rooms": [
            {"slug": "empty", "name": "Empty", "private": False, "last_seq": 0},
            {"slug": "lobby", "name": "Lobby", "private": False, "last_seq": 120},
            {"slug": "secret", "name": "Secret", "private": True, "last_seq": 0},
        ]
    }


def test_responses_are_not_cached(client_alice, lobby):
    """API answers carry Cache-Control: private, no-store."""
    assert client_alice.get("/api/rooms/")["Cache-Control"] == "private, no-store"
    assert client_alice.get(messages_url())["Cache-Control"] == "private, no-store"


# -- messages ----------------------------------------------------------------------


def test_messages_default_page(client_alice, alice, lobby):
    """Without parameters: the latest 50 messages oldest first, each in the message frame shape."""
    body = client_alice.get(messages_url()).json()
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
    }


def test_messages_before_and_limit_walk_back(client_alice, lobby):
    """before and limit page backwards; the first page has has_more false."""
    body = client_alice.get(messages_url(), {"before": "71", "limit": "100"}).json()
    assert [m["seq"] for m in body["messages"]] == list(range(1, 71))
    assert body["has_more"] is False
    body = client_alice.get(messages_url(), {"before": "10", "limit": "3"}).json()
    assert [m["seq"] for m in body["messages"]] == [7, 8, 9]
    assert body["has_more"] is True


@pytest.mark.parametrize(("limit", "count"), [("1", 1), ("100", 100), ("050", 50)])
def test_messages_limit_bounds(client_alice, lobby, limit, count):
    """limit accepts 1 to 100 (leading zeros allowed)."""
    body = client_alice.get(messages_url(), {"limit": limit}).json()
    assert len(body["messages"]) == count


def test_messages_before_beyond_the_end_and_before_one(client_alice, lobby):
    """A before above the last seq gives the latest; before=1 gives an empty page."""
    body = client_alice.get(messages_url(), {"before": str(2**63 - 1), "limit": "2"}).json()
    assert [m["seq"] for m in body["messages"]] == [119, 120]
    body = client_alice.get(messages_url(), {"before": "1"}).json()
    assert body == {"messages": [], "has_more": False}


def test_messages_of_an_empty_room(client_alice, alice):
    """A room without messages gives an empty page."""
    services.room_create(name="Quiet", creator=alice)
    assert client_alice.get(messages_url("quiet")).json() == {"messages": [], "has_more": False}


def test_unknown_query_parameters_are_ignored(client_alice, lobby):
    """Parameters other than before and limit are ignored, like unknown frame fields."""
    body = client_alice.get(messages_url(), {"limit": "2", "_": "12345"}).json()
    assert [m["seq"] for m in body["messages"]] == [119, 120]


def test_bodies_come_back_verbatim(client_alice, alice):
    """Bodies are returned as stored: markup, quotes and unicode are not altered."""
    room = services.room_create(name="Raw", creator=alice)
    add_messages(room, 1, author=alice, body="<script>alert('x')</script> & 会話 \U0001f600")
    body = client_alice.get(messages_url("raw")).json()
    assert body["messages"][0]["body"] == "<script>alert('x')</script> & 会話 \U0001f600"


# -- refusals ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/rooms/", "/api/rooms/lobby/messages", "/api/rooms/nope/messages"])
def test_anonymous_gets_403_json_not_a_redirect(client, lobby, path):
    """An anonymous request gets 403 JSON that says how to log in."""
    response = client.get(path)
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert "log in" in response.json()["error"].lower()
    assert "Location" not in response


@pytest.mark.parametrize("slug", ["nope", "Not-A-Slug", "x" * 200, "%E4%BC%9A"])
def test_unknown_room_is_404_json(client_alice, slug):
    """An unknown (or malformed) room slug is a JSON 404."""
    response = client_alice.get(messages_url(slug))
    assert response.status_code == 404
    assert "No room" in response.json()["error"]


def test_private_room_of_others_is_404_like_unknown(client_alice, make_user):
    """A private room the user is not a member of answers exactly like an unknown room."""
    bob = make_user("bob")
    room = services.room_create(name="Secret", private=True, creator=bob)
    add_messages(room, 3, author=bob)
    hidden = client_alice.get(messages_url("secret"))
    unknown = client_alice.get(messages_url("secreu"))
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.json()["error"].replace("secret", "X") == unknown.json()["error"].replace("secreu", "X")


def test_member_of_private_room_reads_it(client_alice, alice, make_user):
    """A member reads a private room's history."""
    bob = make_user("bob")
    room = services.room_create(name="Secret", private=True, creator=bob, members=[alice])
    add_messages(room, 2, author=bob)
    assert [m["seq"] for m in client_alice.get(messages_url("secret")).json()["messages"]] == [1, 2]


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
def test_bad_parameters_are_400_json_with_a_clear_message(client_alice, lobby, query, fragment):
    """Every malformed, out-of-range or repeated parameter gets 400 JSON saying how to fix it."""
    response = client_alice.get(f"{messages_url()}?{query}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    message = response.json()["error"]
    assert fragment in message
    assert "use " in message or "give it at most once" in message


def test_long_bad_values_are_shortened_in_the_message(client_alice, lobby):
    """A huge bad value is not echoed back in full."""
    response = client_alice.get(messages_url(), {"before": "z" * 5000})
    assert response.status_code == 400
    assert len(response.json()["error"]) < 300


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_other_methods_are_405_json(client_alice, lobby, method):
    """Only GET (and HEAD) are allowed; other methods get 405 JSON with an Allow header."""
    response = getattr(client_alice, method)(messages_url())
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert "use GET" in response.json()["error"]


def test_inactive_user_is_treated_as_anonymous(client_alice, alice, lobby):
    """A deactivated account's session no longer opens the API."""
    alice.is_active = False
    alice.save()
    assert client_alice.get(messages_url()).status_code == 403


@pytest.mark.parametrize("path", ["/api/nope", "/api/rooms/lobby/messages/", "/api/rooms/lobby/", "/api/v2/rooms/"])
def test_other_api_paths_are_json_404(client_alice, lobby, path):
    """Unknown paths under /api/ get a JSON 404 naming the real endpoints."""
    response = client_alice.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert "GET /api/rooms/<slug>/messages" in response.json()["error"]


def test_head_is_allowed(client_alice, lobby):
    """HEAD answers like GET, without a body."""
    response = client_alice.head(messages_url())
    assert response.status_code == 200
    assert response.content == b""
