"""Resume with ``since``, the backlog limit, dedup by client_id, and a sequence that survives lost Redis data."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import redis as redis_sync

from chat.messagelog import seq_key, stream_key
from chat.models import Message
from tests.wsapp.conftest import Peer, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {"KAIWA_RATE_BURST": "10000", "KAIWA_RATE_PER_SECOND": "10000"}


async def acked(peer: Peer, body: str, client_id: str) -> dict:
    answer = await peer.send_message("lobby", body, client_id)
    assert answer["type"] == "ack", answer
    return answer


def test_resume_with_since_delivers_the_gap_then_live(start_server, make_user, room, aio):
    """join since=N gets exactly N < seq <= last_seq right after joined, then live messages, no gap, no duplicate."""
    s1, s2 = start_server(env=FAST), start_server(env=FAST)
    alice, bob = make_user("alice"), make_user("bob")
    a_cookie, b_cookie = session_cookie(alice), session_cookie(bob)

    async def scenario():
        a = await Peer.open(s1.ws, a_cookie)
        b = await Peer.open(s2.ws, b_cookie)
        await a.join("lobby")
        await b.join("lobby")
        for i in range(5):
            await acked(a, f"m{i}", f"a{i}")
        assert await b.wait_seqs("lobby", 5) == [1, 2, 3, 4, 5]
        await b.close()
        for i in range(5, 12):
            await acked(a, f"m{i}", f"a{i}")
        b = await Peer.open(s2.ws, b_cookie)

        # Keep sending while bob resumes: the live tail must follow the backlog seamlessly.
        async def pipelined():
            for i in range(10):
                await a.send({"type": "send", "room": "lobby", "body": f"live{i}", "client_id": f"l{i}"})

        sender = asyncio.ensure_future(pipelined())
        joined = await b.join("lobby", since=5)
        assert joined["reset"] is False and joined["last_seq"] >= 11
        await asyncio.wait_for(sender, 10)
        seqs = await b.wait_seqs("lobby", 17)
        assert seqs == list(range(6, 23))
        first = b.matching(lambda f: f["type"] == "message")[0]
        assert (first["body"], first["client_id"]) == ("m5", "a5")
        assert first["user"] == {"id": alice.pk, "username": "alice"}
        # joined came before every message of the room.
        kinds = [f["type"] for f in b.frames if f.get("room") == "lobby"]
        assert kinds.index("joined") < kinds.index("message")
        await a.close()
        await b.close()

    aio(scenario())


def test_backlog_limit_and_future_since_give_reset(start_server, make_user, room, aio):
    """A backlog above KAIWA_BACKLOG_LIMIT, or since > last_seq, answers joined reset:true with no backlog."""
    server = start_server(env={**FAST, "KAIWA_BACKLOG_LIMIT": "3"})
    cookie = session_cookie(make_user("alice"))

    async def scenario():
        ws = await Peer.open(server.ws, cookie)
        await ws.join("lobby")
        for i in range(5):
            await acked(ws, f"m{i}", f"c{i}")
        last = 5
        for offset, reset in ((-4, True), (-2, False), (50, True)):
            since = last + offset
            other = await Peer.open(server.ws, cookie)
            joined = await other.join("lobby", since=since)
            assert joined["last_seq"] == last and joined["reset"] is reset, (since, joined)
            ack = await acked(other, f"after {since}", f"x{since}")
            last = ack["seq"]
            expected = [last] if reset else [*range(since + 1, last), last]
            assert await other.wait_seqs("lobby", len(expected)) == expected, since
            await other.close()
        await ws.close()

    aio(scenario())


def test_resend_with_same_client_id_is_acked_with_the_original_seq(start_server, make_user, room, aio):
    """Re-sending a client_id (same user, within the dedup window) creates no second message."""
    server = start_server(env=FAST)
    cookie = session_cookie(make_user("alice"))

    async def scenario():
        ws = await Peer.open(server.ws, cookie)
        await ws.join("lobby")
        first = await acked(ws, "hello", "once")
        await ws.send({"type": "send", "room": "lobby", "body": "hello", "client_id": "once"})
        acks = await ws.wait_for(lambda f: f["type"] == "ack" and f["client_id"] == "once", 2)
        assert (acks[1]["seq"], acks[1]["ts"]) == (first["seq"], first["ts"])
        nxt = await acked(ws, "next", "twice")
        assert nxt["seq"] == first["seq"] + 1
        assert await ws.wait_seqs("lobby", 2) == [1, 2]
        await ws.close()

    aio(scenario())


def test_resume_reads_the_trimmed_prefix_from_the_database(start_server, make_user, room, aio, redis_server_process):
    """Messages no longer in the Redis stream (only in the DB) are part of the since-backlog."""
    alice = make_user("alice")
    now = datetime.now(tz=UTC)
    Message.objects.bulk_create(
        [
            Message(room=room, seq=s, author=alice, author_username="alice", body=f"old {s}", created_at=now)
            for s in range(1, 6)
        ]
    )
    r = redis_sync.Redis.from_url(redis_server_process.url)
    r.set(seq_key(room.pk), 5)  # Redis knows seq 5; its stream no longer holds 1..5
    r.close()
    server = start_server(env=FAST)
    cookie = session_cookie(alice)

    async def scenario():
        ws = await Peer.open(server.ws, cookie)
        joined = await ws.join("lobby", since=2)
        assert joined["last_seq"] == 5
        got = await ws.wait_for(lambda f: f["type"] == "message", 3)
        assert [(m["seq"], m["body"]) for m in got] == [(3, "old 3"), (4, "old 4"), (5, "old 5")]
        assert (await acked(ws, "new", "n1"))["seq"] == 6
        await ws.close()

    aio(scenario())


def test_sequence_resumes_above_the_database_after_redis_lost_its_data(
    start_server, make_user, room, aio, redis_server_process
):
    """After FLUSHALL the next seq is above the highest stored one, and joined sockets see no gap or reuse."""
    alice = make_user("alice")
    now = datetime.now(tz=UTC)
    Message.objects.bulk_create(
        [
            Message(room=room, seq=s, author=alice, author_username="alice", body=f"old {s}", created_at=now)
            for s in range(1, 8)
        ]
    )
    server = start_server(env=FAST)
    cookie = session_cookie(alice)
    r = redis_sync.Redis.from_url(redis_server_process.url)

    async def scenario():
        ws = await Peer.open(server.ws, cookie)
        joined = await ws.join("lobby")
        assert joined["last_seq"] == 7  # from the database: Redis has no sequence yet
        assert (await acked(ws, "a", "c1"))["seq"] == 8
        await asyncio.to_thread(r.flushall)
        assert (await acked(ws, "b", "c2"))["seq"] == 9
        assert await ws.wait_seqs("lobby", 2) == [8, 9]
        assert await asyncio.to_thread(r.exists, stream_key(room.pk))
        await ws.close()

    try:
        aio(scenario())
    finally:
        r.close()
