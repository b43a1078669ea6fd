"""Messages between users on different server processes sharing one Redis."""

from __future__ import annotations

import pytest

from tests.wsapp.conftest import connect, join, recv_until, send, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_users_on_two_processes_chat_in_order_once(start_server, make_user, room, aio):
    """Every message reaches both users, in seq order, exactly once; presence shows both."""
    a_server, b_server = start_server(), start_server()
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario() -> None:
        a = await connect(a_server.ws, a_cookie)
        b = await connect(b_server.ws, b_cookie)
        a_joined = await join(a, "lobby")
        assert a_joined["last_seq"] == 0 and a_joined["reset"] is False
        assert [u["username"] for u in a_joined["presence"]] == ["alice"]
        b_joined = await join(b, "lobby")
        assert [u["username"] for u in b_joined["presence"]] == ["alice", "bob"]
        seen_by_alice, _ = await recv_until(a, lambda f: f["type"] == "presence")
        assert seen_by_alice == {
            "type": "presence",
            "room": "lobby",
            "event": "join",
            "user": {"id": bob.pk, "username": "bob"},
        }
        for i in range(10):
            sender = a if i % 2 == 0 else b
            await send(sender, {"type": "send", "room": "lobby", "body": f"hello {i}", "client_id": f"c{i}"})
        for ws, me in ((a, "alice"), (b, "bob")):
            messages: list[dict] = []
            acks: list[dict] = []
            while len(messages) < 10 or len(acks) < 5:
                frame, _ = await recv_until(ws, lambda f: f["type"] in ("message", "ack"))
                (messages if frame["type"] == "message" else acks).append(frame)
            assert [m["seq"] for m in messages] == list(range(1, 11)), me
            assert sorted(m["body"] for m in messages) == sorted(f"hello {i}" for i in range(10))
            assert all(ack["seq"] in range(1, 11) for ack in acks)
        await a.close()
        await b.close()

    aio(scenario())
