"""Room access ends while joined: removal from a private room, the room deleted, behind Django's back."""

from __future__ import annotations

import asyncio

import pytest

from chat import services
from chat.models import Membership, Room
from tests.wsapp.conftest import Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"KAIWA_RATE_BURST": "1000", "KAIWA_RATE_PER_SECOND": "1000"}


def _left(room: str):
    return lambda f: f["type"] == "left" and f["room"] == room


def test_removed_member_gets_left_on_every_process_and_cannot_rejoin(start_server, make_user, db, aio):
    s1, s2 = start_server(env=FAST), start_server(env=FAST)
    alice, bob = make_user("alice"), make_user("bob")
    secret = services.room_create(name="Secret", slug="secret", private=True, creator=alice, members=[bob])
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def before():
        a = await Peer.open(s1.ws, a_cookie)
        b1, b2 = await Peer.open(s1.ws, b_cookie), await Peer.open(s2.ws, b_cookie)
        for peer in (a, b1, b2):
            await peer.join("secret")
        ack = await a.send_message("secret", "for members", "c1")
        assert ack["type"] == "ack", ack
        for peer in (b1, b2):
            await peer.wait_seqs("secret", 1)
        return a, b1, b2

    a, b1, b2 = aio(before())
    assert services.room_member_remove(room=secret, user=bob)

    async def after():
        for peer in (b1, b2):
            left = await peer.wait_for(_left("secret"), wait=5)
            assert left[0] == {"type": "left", "room": "secret"}
        await a.wait_for(lambda f: f["type"] == "presence" and f["event"] == "leave" and f["user"]["id"] == bob.pk)
        ack = await a.send_message("secret", "members only now", "c2")
        assert ack["type"] == "ack", ack
        await a.wait_seqs("secret", 2)
        # bob's sockets stay open and answer, but get nothing of the room any more
        for peer in (b1, b2):
            pongs = len(peer.matching(lambda f: f["type"] == "pong"))
            await peer.send({"type": "ping"})
            await peer.wait_for(lambda f: f["type"] == "pong", pongs + 1)
            assert peer.seqs("secret") == [1]
            await peer.send({"type": "join", "room": "secret"})
            refusal = await peer.wait_for(lambda f: f["type"] == "error")
            assert refusal[0]["code"] == "not_found", refusal
            answer = await peer.send_message("secret", "still here?", "c3")
            assert answer["type"] == "error" and answer["code"] == "not_joined", answer
        await asyncio.sleep(0.3)
        assert b1.seqs("secret") == [1] and b2.seqs("secret") == [1]
        assert not b1.closed and not b2.closed

    aio(after())


def test_room_made_private_or_deleted_ends_memberships(start_server, make_user, room, aio):
    server = start_server(env=FAST)
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)
    Membership.objects.create(room=room, user=alice)

    async def joined():
        a, b = await Peer.open(server.ws, a_cookie), await Peer.open(server.ws, b_cookie)
        await a.join("lobby")
        await b.join("lobby")
        return a, b

    a, b = aio(joined())
    room.private = True
    room.save()
    aio(b.wait_for(_left("lobby"), wait=5))
    assert not a.matching(_left("lobby"))  # alice is a member
    Room.objects.filter(pk=room.pk).delete()
    aio(a.wait_for(_left("lobby"), wait=5))


def test_periodic_recheck_catches_memberships_deleted_without_signals(start_server, make_user, db, aio):
    server = start_server(env={**FAST, "KAIWA_SESSION_RECHECK_SECONDS": "0.5"})
    alice, bob = make_user("alice"), make_user("bob")
    services.room_create(name="Secret", slug="secret", private=True, creator=alice, members=[bob])
    b_cookie = session_cookie(bob)
    b = aio(Peer.open(server.ws, b_cookie))
    aio(b.join("secret"))
    Membership.objects.filter(user=bob)._raw_delete(Membership.objects.db)
    aio(b.wait_for(_left("secret"), wait=10))
