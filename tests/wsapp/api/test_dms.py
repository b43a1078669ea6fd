"""POST /api/dms (protocol.md 7.5): the one direct conversation between two users, created on first use."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.conf import settings
from django.db import IntegrityError, transaction

from chat import dms, services
from chat.models import Membership, Room
from tests.chat.factories import add_messages
from tests.wsapp.api.conftest import Api, login
from tests.wsapp.api.test_deps import new_token

pytestmark = pytest.mark.django_db(transaction=True)


def with_csrf(api: Api) -> Api:
    secret, masked = new_token()
    api.cookies[settings.CSRF_COOKIE_NAME] = secret
    api.csrf = masked  # type: ignore[attr-defined]
    return api


def open_dm(api: Api, username: Any) -> Any:
    return api.post("/api/dms", json={"user": username}, headers={"X-CSRFToken": getattr(api, "csrf", "")})


def test_first_use_creates_201_then_200_for_both_users(api_alice: Api, alice: Any, make_user: Any) -> None:
    """The first call creates the private dm room (201); later calls, from either user, answer it with 200."""
    bob = make_user("bob")
    first = open_dm(with_csrf(api_alice), "bob")
    assert first.status_code == 201, first.text
    room = first.json()["room"]
    assert room["kind"] == "dm" and room["private"] is True and room["last_seq"] == 0
    assert room["members"] == [{"id": alice.pk, "username": "alice"}, {"id": bob.pk, "username": "bob"}]
    again = open_dm(api_alice, "bob")
    assert again.status_code == 200 and again.json() == first.json()
    from_bob = open_dm(with_csrf(login(Api(), bob)), "alice")
    assert from_bob.status_code == 200 and from_bob.json()["room"]["slug"] == room["slug"]
    stored = Room.objects.get(slug=room["slug"])
    assert set(Membership.objects.filter(room=stored).values_list("user_id", flat=True)) == {alice.pk, bob.pk}


def test_room_list_gives_kind_and_dm_members(api_alice: Api, alice: Any, make_user: Any) -> None:
    """GET /api/rooms/ says "room" or "dm"; a dm carries its two members; a third user does not see it."""
    bob, carol = make_user("bob"), make_user("carol")
    services.room_create(name="Lobby", creator=alice)
    dm, _ = dms.dm_open(user=alice, username="bob")
    rooms = {r["slug"]: r for r in api_alice.get("/api/rooms/").json()["rooms"]}
    assert {slug: r["kind"] for slug, r in rooms.items()} == {dm.slug: "dm", "lobby": "room"}
    assert rooms[dm.slug]["members"] == [{"id": alice.pk, "username": "alice"}, {"id": bob.pk, "username": "bob"}]
    assert "members" not in rooms["lobby"]
    carol_rooms = login(Api(), carol).get("/api/rooms/").json()["rooms"]
    assert [r["slug"] for r in carol_rooms] == ["lobby"]


def test_refusals(api_alice: Api, anonymous: Api, make_user: Any) -> None:
    """Unknown or inactive user: 404 saying so; no body or a bad one: 400; no CSRF token: 403; anonymous: 403."""
    make_user("gone", is_active=False)
    api = with_csrf(api_alice)
    for name in ("nobody", "gone"):
        response = open_dm(api, name)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
        assert repr(name) in response.json()["error"]["message"]
    for body in ({}, {"user": ""}, {"user": 5}, {"user": "x" * 151}, {"user": "a\u0000b"}, {"user": "two words"}):
        response = api.post("/api/dms", json=body, headers={"X-CSRFToken": api.csrf})  # type: ignore[attr-defined]
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["code"] == "bad_request"
    no_token = login(Api(), make_user("dora"))
    assert open_dm(no_token, "dora").status_code == 403
    assert open_dm(anonymous, "dora").status_code == 403
    assert not Room.objects.filter(kind="dm").exists()


def test_concurrent_first_uses_make_one_room(alice: Any, make_user: Any) -> None:
    """Both users opening the conversation at the same moment get the same, single room."""
    bob = make_user("bob")
    barrier = threading.Barrier(2, timeout=10)
    found: list[Room] = []

    def opener(user: Any, other: str) -> None:
        from django.db import connection

        try:
            barrier.wait()
            found.append(dms.dm_open(user=user, username=other)[0])
        finally:
            connection.close()

    threads = [
        threading.Thread(target=opener, args=(alice, "bob")),
        threading.Thread(target=opener, args=(bob, "alice")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert len(found) == 2 and found[0].pk == found[1].pk
    assert Room.objects.filter(kind="dm").count() == 1


def test_the_database_refuses_a_second_room_for_one_pair(alice: Any, make_user: Any) -> None:
    """The unique dm_key is the guarantee, not the lookup before the insert."""
    bob = make_user("bob")
    assert dms.dm_open(user=alice, username="bob")[1]
    with pytest.raises(IntegrityError), transaction.atomic():
        Room.objects.create(slug="other", name="x", private=True, kind="dm", dm_key=dms.dm_key(bob.pk, alice.pk))


def test_member_list_of_private_rooms_and_conversations(api_alice: Api, alice: Any, make_user: Any) -> None:
    """GET /api/rooms/<slug>/members: a private room's members by name, none for a public room, who "@" offers
    and the user's rights there (what the page needs to open the room in place); 404 for outsiders."""
    bob, carol = make_user("bob"), make_user("carol")
    dm, _ = dms.dm_open(user=alice, username="bob")
    lobby = services.room_create(name="Lobby", creator=carol)
    add_messages(lobby, 1, author=carol)
    services.room_create(name="Club", private=True, creator=alice, members=[bob])
    response = api_alice.get(f"/api/rooms/{dm.slug}/members")
    assert response.status_code == 200
    pair = [{"id": alice.pk, "username": "alice"}, {"id": bob.pk, "username": "bob"}]
    assert response.json() == {"members": pair, "mentionable": pair, "moderator": False, "can_manage": False}
    assert api_alice.get("/api/rooms/lobby/members").json() == {
        "members": [],
        "mentionable": [{"id": carol.pk, "username": "carol"}],
        "moderator": False,
        "can_manage": False,
    }
    club = api_alice.get("/api/rooms/club/members").json()
    assert (club["moderator"], club["can_manage"]) == (True, True)
    outsider = login(Api(), carol).get(f"/api/rooms/{dm.slug}/members")
    assert outsider.status_code == 404 and "private rooms need an invitation" in outsider.json()["error"]
