"""room_added / room_removed / room_updated (protocol.md 7.5): to every connection of the users concerned."""

from __future__ import annotations

from typing import Any

import pytest

from chat import dms, services
from chat.models import Room
from tests.wsapp.conftest import Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def _of(kind: str, slug: str):
    def match(f: dict[str, Any]) -> bool:
        room = f.get("room")
        return f["type"] == kind and (room == slug or (isinstance(room, dict) and room.get("slug") == slug))

    return match


async def _registered(*peers: Peer) -> None:
    """A pong proves the server registered the socket: events published from now on reach it."""
    for peer in peers:
        pongs = len(peer.matching(lambda f: f["type"] == "pong"))
        await peer.send({"type": "ping"})
        await peer.wait_for(lambda f: f["type"] == "pong", pongs + 1)


def test_public_room_created_renamed_deleted_reaches_everyone(start_server, make_user, aio):
    """A new public room is added for every user on every process, its new name is an update, its deletion a removal."""
    s1, s2 = start_server(), start_server()
    alice, bob = make_user("alice"), make_user("bob")
    a = aio(Peer.open(s1.ws, session_cookie(alice)))
    b = aio(Peer.open(s2.ws, session_cookie(bob)))
    aio(_registered(a, b))
    room = services.room_create(name="Garden", creator=alice)
    for peer in (a, b):
        added = aio(peer.wait_for(_of("room_added", "garden")))[0]
        assert added == {
            "type": "room_added",
            "room": {"slug": "garden", "name": "Garden", "private": False, "kind": "room", "last_seq": 0},
        }
    room.name = "Roof garden"
    room.save()
    for peer in (a, b):
        updated = aio(peer.wait_for(_of("room_updated", "garden")))[0]
        assert updated["room"]["name"] == "Roof garden"
    aio(b.join("garden"))
    Room.objects.filter(pk=room.pk).delete()
    aio(a.wait_for(_of("room_removed", "garden")))
    aio(b.wait_for(_of("room_removed", "garden")))
    order = [f["type"] for f in b.frames if f["type"] in ("left", "room_removed")]
    assert order == ["left", "room_removed"], b.frames


def test_private_membership_added_and_removed_only_to_that_user(start_server, make_user, aio):
    """Adding bob to a private room tells bob's connections (both processes) and nobody else; removal ends his join."""
    s1, s2 = start_server(), start_server()
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    secret = services.room_create(name="Secret", slug="secret", private=True, creator=alice)
    b1 = aio(Peer.open(s1.ws, session_cookie(bob)))
    b2 = aio(Peer.open(s2.ws, session_cookie(bob)))
    c = aio(Peer.open(s1.ws, session_cookie(carol)))
    aio(_registered(b1, b2, c))
    services.room_member_add(room=secret, user=bob)
    for peer in (b1, b2):
        added = aio(peer.wait_for(_of("room_added", "secret")))[0]
        assert added["room"] == {"slug": "secret", "name": "Secret", "private": True, "kind": "room", "last_seq": 0}
    aio(b1.join("secret"))
    assert services.room_member_remove(room=secret, user=bob)
    aio(b1.wait_for(_of("room_removed", "secret")))
    aio(b2.wait_for(_of("room_removed", "secret")))
    order = [f["type"] for f in b1.frames if f["type"] in ("left", "room_removed")]
    assert order == ["left", "room_removed"], b1.frames
    # s1 handled both events for b1 already: carol, on s1 too, would have had them.
    assert not c.matching(lambda f: f["type"].startswith("room_")), c.frames


def test_room_made_private_removed_for_non_members_made_public_added(start_server, make_user, aio):
    """Turning a room private removes it for non-members only; turning it public again adds it back."""
    server = start_server()
    alice, bob = make_user("alice"), make_user("bob")
    room = services.room_create(name="Plans", creator=alice)
    services.room_member_add(room=room, user=alice)
    a = aio(Peer.open(server.ws, session_cookie(alice)))
    b = aio(Peer.open(server.ws, session_cookie(bob)))
    aio(_registered(a, b))
    room.private = True
    room.save()
    aio(b.wait_for(_of("room_removed", "plans")))
    room.private = False
    room.save()
    aio(b.wait_for(_of("room_added", "plans")))
    aio(a.wait_for(_of("room_added", "plans")))
    assert not a.matching(_of("room_removed", "plans"))


def test_dm_created_reaches_both_people(start_server, make_user, aio):
    """Opening a direct conversation adds it, with both members, to the connections of both people."""
    server = start_server()
    alice, bob = make_user("alice"), make_user("bob")
    a = aio(Peer.open(server.ws, session_cookie(alice)))
    b = aio(Peer.open(server.ws, session_cookie(bob)))
    aio(_registered(a, b))
    dm, created = dms.dm_open(user=alice, username="bob")
    assert created
    for peer in (a, b):
        added = aio(peer.wait_for(_of("room_added", dm.slug)))[0]["room"]
        assert added["kind"] == "dm" and added["private"] is True
        assert [m["username"] for m in added["members"]] == ["alice", "bob"]
