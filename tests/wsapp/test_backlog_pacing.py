"""A ``since`` backlog larger than the outgoing queue's byte limit is paced into it, not dropped with 1013."""

from __future__ import annotations

import asyncio

import pytest

from tests.wsapp.conftest import UNLIMITED_RATES, Peer, connect, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

MB = 1_000_000
BIG = {
    **UNLIMITED_RATES,
    "KAIWA_MAX_FRAME_BYTES": str(2 * MB),
    "KAIWA_MAX_BODY_CHARS": str(2 * MB),
    "KAIWA_SEND_QUEUE_MAX_BYTES": str(4 * 1024 * 1024),
}
BACKLOG = 12  # 12 MB of backlog for a 4 MiB queue
LIVE = 2


def test_backlog_of_1mb_messages_beyond_the_queue_limit_arrives_in_order(start_server, make_user, room, aio):
    server = start_server(env=BIG)
    a_cookie, b_cookie = session_cookie(make_user("alice")), session_cookie(make_user("bob"))

    async def scenario():
        kw = {"max_size": None, "compression": None}
        sender = Peer(await connect(server.ws, a_cookie, **kw))
        await sender.join("lobby")
        for i in range(BACKLOG):
            body = f"{i:04d}" + "x" * (MB - 4)
            await sender.send({"type": "send", "room": "lobby", "body": body, "client_id": f"b{i}"})
        acks = await sender.wait_for(lambda f: f["type"] == "ack", BACKLOG, wait=60)
        assert sorted(a["seq"] for a in acks) == list(range(1, BACKLOG + 1))
        reader = Peer(await connect(server.ws, b_cookie, **kw))
        await reader.send({"type": "join", "room": "lobby", "since": 0})
        # Live messages sent while the backlog is being replayed: held, then delivered after it.
        for i in range(LIVE):
            body = f"L{i:03d}" + "y" * (MB - 4)
            await sender.send({"type": "send", "room": "lobby", "body": body, "client_id": f"l{i}"})
        total = BACKLOG + LIVE
        seqs = await reader.wait_seqs("lobby", total, wait=120)
        assert seqs == list(range(1, total + 1))
        joined = reader.matching(lambda f: f["type"] == "joined")
        assert len(joined) == 1 and joined[0]["reset"] is False
        assert joined[0]["last_seq"] >= BACKLOG
        # joined comes before every message
        kinds = [f["type"] for f in reader.frames if f["type"] in ("joined", "message")]
        assert kinds[0] == "joined"
        bodies = [f["body"][:4] for f in reader.frames if f["type"] == "message"]
        assert bodies[:BACKLOG] == [f"{i:04d}" for i in range(BACKLOG)]
        assert bodies[BACKLOG:] == [f"L{i:03d}" for i in range(LIVE)]
        await asyncio.sleep(0.2)
        assert not reader.closed, reader.close_code
        await reader.send({"type": "ping"})
        await reader.wait_for(lambda f: f["type"] == "pong")
        await reader.close()
        await sender.close()

    aio(scenario())
    assert not any("reads too slowly" in line for line in server.lines), "".join(server.lines)
