"""Presence across processes: first connection joins, last one leaves, a crashed process's users expire."""

from __future__ import annotations

import pytest

from tests.wsapp.conftest import Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def _presence(peer: Peer, event: str, username: str):
    return lambda f: f["type"] == "presence" and f["event"] == event and f["user"]["username"] == username


def test_presence_join_leave_once_per_user_across_processes(start_server, make_user, room, aio):
    """A user's second connection (other process) announces nothing; leave comes when the last one goes."""
    s1, s2 = start_server(), start_server()
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario():
        b = await Peer.open(s1.ws, b_cookie)
        await b.join("lobby")
        a1 = await Peer.open(s1.ws, a_cookie)
        a2 = await Peer.open(s2.ws, a_cookie)
        await a1.join("lobby")
        joined = await a2.join("lobby")
        assert joined["presence"] == [
            {"id": alice.pk, "username": "alice"},
            {"id": bob.pk, "username": "bob"},
        ]
        await b.wait_for(_presence(b, "join", "alice"))
        await a1.close()  # alice is still there through a2
        await a2.send({"type": "leave", "room": "lobby"})
        await a2.wait_for(lambda f: f["type"] == "left")
        leave = await b.wait_for(_presence(b, "leave", "alice"))
        assert leave[0] == {
            "type": "presence",
            "room": "lobby",
            "event": "leave",
            "user": {"id": alice.pk, "username": "alice"},
        }
        # Exactly one join and one leave for alice, whatever her connections did.
        assert len(b.matching(_presence(b, "join", "alice"))) == 1
        assert len(b.matching(_presence(b, "leave", "alice"))) == 1
        await a2.close()
        await b.close()

    aio(scenario())


def test_users_of_a_crashed_process_disappear_after_the_ttl(start_server, make_user, room, aio):
    """kill -9 of one process: the others announce its users' leave once their entries expire."""
    env = {"KAIWA_PRESENCE_TTL_SECONDS": "2"}
    s1, s2 = start_server(env=env), start_server(env=env)
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario():
        a = await Peer.open(s1.ws, a_cookie)
        b = await Peer.open(s2.ws, b_cookie)
        await a.join("lobby")
        joined = await b.join("lobby")
        assert [u["username"] for u in joined["presence"]] == ["alice", "bob"]
        s1.kill()
        await b.wait_for(_presence(b, "leave", "alice"), wait=15)
        again = await Peer.open(s2.ws, b_cookie)
        joined = await again.join("lobby")
        assert joined["presence"] == [{"id": bob.pk, "username": "bob"}]
        await again.close()
        await b.close()

    aio(scenario())
