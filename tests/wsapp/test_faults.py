"""Faults: Redis restarted, subscribers disconnected by Redis, seq jumps, slow readers, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
import redis as redis_sync

from chat.messagelog import seq_key, stream_key
from tests.wsapp.conftest import UNLIMITED_RATES, Peer, connect, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

FAST = {**UNLIMITED_RATES, "KAIWA_UNAVAILABLE_RETRY_MS": "200"}


async def send_until_acked(peer: Peer, body: str, client_id: str, wait: float = 30.0) -> tuple[dict, list[dict]]:
    """Send like a well-behaved client: on ``unavailable``, wait retry_after_ms and re-send the same client_id."""
    refusals: list[dict] = []
    async with asyncio.timeout(wait):
        while True:
            before = len(peer.matching(lambda f: f.get("ref") == client_id or f.get("client_id") == client_id))
            await peer.send({"type": "send", "room": "lobby", "body": body, "client_id": client_id})
            answers = await peer.wait_for(
                lambda f: (
                    (f["type"] == "ack" and f["client_id"] == client_id)
                    or (f["type"] == "error" and f["ref"] == client_id)
                ),
                before + 1,
            )
            answer = answers[-1]
            if answer["type"] == "ack":
                return answer, refusals
            assert answer["code"] == "unavailable", answer
            refusals.append(answer)
            await asyncio.sleep(answer["retry_after_ms"] / 1000)


def _assert_gapless(peer: Peer, upto: int) -> None:
    assert peer.seqs("lobby") == list(range(1, upto + 1))


def test_redis_restart_unavailable_then_resumes_without_gap(start_server, make_user, room, aio, redis_server_process):
    """While Redis is down sends get `unavailable` and sockets stay open; afterwards delivery resumes, no gap."""
    s1, s2 = start_server(env=FAST), start_server(env=FAST)
    a_cookie, b_cookie = session_cookie(make_user("alice")), session_cookie(make_user("bob"))

    async def scenario():
        a, b = await Peer.open(s1.ws, a_cookie), await Peer.open(s2.ws, b_cookie)
        await a.join("lobby")
        await b.join("lobby")
        for i in range(3):
            await send_until_acked(a, f"before {i}", f"b{i}")
        await b.wait_seqs("lobby", 3)
        await asyncio.to_thread(redis_server_process.stop)
        answer = await a.send_message("lobby", "during", "d0")
        assert answer["type"] == "error" and answer["code"] == "unavailable", answer
        assert answer["retry_after_ms"] == 200 and answer["room"] == "lobby"
        for peer in (a, b):  # sockets stay open and answer
            pongs = len(peer.matching(lambda f: f["type"] == "pong"))
            await peer.send({"type": "ping"})
            await peer.wait_for(lambda f: f["type"] == "pong", pongs + 1)
        await asyncio.to_thread(redis_server_process.start)
        ack, _ = await send_until_acked(a, "during", "d0")
        assert ack["seq"] == 4
        for i in range(5):
            await send_until_acked(b if i % 2 else a, f"after {i}", f"a{i}")
        for peer in (a, b):
            await peer.wait_seqs("lobby", 9, wait=20)
            _assert_gapless(peer, 9)
        await a.close()
        await b.close()

    aio(scenario())
    assert any("pub/sub connection lost" in line for line in s1.lines)


def test_subscriber_killed_by_redis_repairs_the_gap(start_server, make_user, room, aio, redis_server_process):
    """CLIENT KILL TYPE pubsub drops every subscriber; messages published meanwhile arrive anyway, in order."""
    s1, s2 = start_server(env=FAST), start_server(env=FAST)
    a_cookie, b_cookie = session_cookie(make_user("alice")), session_cookie(make_user("bob"))
    r = redis_sync.Redis.from_url(redis_server_process.url)

    async def scenario():
        a, b = await Peer.open(s1.ws, a_cookie), await Peer.open(s2.ws, b_cookie)
        await a.join("lobby")
        await b.join("lobby")
        await send_until_acked(a, "first", "f")
        await b.wait_seqs("lobby", 1)
        killed = await asyncio.to_thread(r.client_kill_filter, _type="pubsub")
        assert killed >= 2
        for i in range(30):
            await a.send({"type": "send", "room": "lobby", "body": f"m{i}", "client_id": f"m{i}"})
        await a.wait_for(lambda f: f["type"] == "ack", 31, wait=20)
        for peer in (a, b):
            await peer.wait_seqs("lobby", 31, wait=20)
            _assert_gapless(peer, 31)
        await a.close()
        await b.close()

    try:
        aio(scenario())
    finally:
        r.close()
    for server in (s1, s2):
        server.wait_for_line("pub/sub connection lost", timeout=5)


def test_seq_jump_is_repaired_from_the_stream(start_server, make_user, room, aio, redis_server_process):
    """A message the hub never saw published (seq jump) is read from the stream before the newer one."""
    server = start_server(env=FAST)
    alice = make_user("alice")
    cookie = session_cookie(alice)
    r = redis_sync.Redis.from_url(redis_server_process.url)

    async def scenario():
        a = await Peer.open(server.ws, cookie)
        await a.join("lobby")
        await send_until_acked(a, "one", "c1")
        await a.wait_seqs("lobby", 1)
        # Append seq 2 to the log without publishing it.
        assert await asyncio.to_thread(r.incr, seq_key(room.pk)) == 2
        fields: dict = {"ts": "1700000000000", "uid": str(alice.pk), "un": "alice", "body": "unpublished", "cid": ""}
        await asyncio.to_thread(r.xadd, stream_key(room.pk), fields, id="0-2")
        await send_until_acked(a, "three", "c3")
        await a.wait_seqs("lobby", 3)
        _assert_gapless(a, 3)
        bodies = [f["body"] for f in a.frames if f["type"] == "message"]
        assert bodies == ["one", "unpublished", "three"]
        await a.close()

    try:
        aio(scenario())
    finally:
        r.close()
    server.wait_for_line("repairing from the stream", timeout=5)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_client_that_stops_reading_gets_1013_others_unaffected(start_server, make_user, room, aio):
    """A reader that stalls overflows only its own bounded queue: it is closed 1013, the others get everything."""
    server = start_server(env={**FAST, "KAIWA_SEND_QUEUE_MAX_BYTES": "262144"})
    cookie, other_cookie, slow_cookie = (session_cookie(make_user(n)) for n in ("alice", "bob", "carol"))
    body = "é" * 4000  # 8 kB per frame

    async def scenario():
        sender = await Peer.open(server.ws, cookie)
        observer = await Peer.open(server.ws, other_cookie)
        await sender.join("lobby")
        await observer.join("lobby")
        # No per-message-deflate: these repetitive bodies would compress to almost nothing.
        slow_ws = await connect(server.ws, slow_cookie, max_queue=1, max_size=None, compression=None)
        await slow_ws.send(json.dumps({"type": "join", "room": "lobby"}))
        rss_before = _rss_kb(server.process.pid)
        overflowed = asyncio.ensure_future(asyncio.to_thread(server.wait_for_line, "reads too slowly", 120))

        async def read_once_overflowed() -> Peer:
            # The server drops a client that reads nothing for 10 s after its close
            # (1006, no close frame): start reading the moment the overflow is
            # logged, whatever the sending loop below is waiting for.
            await overflowed
            return Peer(slow_ws)

        reading = asyncio.ensure_future(read_once_overflowed())
        sent = 0
        while not overflowed.done() and sent < 6000:
            await sender.send({"type": "send", "room": "lobby", "body": body, "client_id": f"s{sent}"})
            sent += 1
            if sent % 50 == 0:
                acked = asyncio.ensure_future(sender.wait_for(lambda f: f["type"] == "ack", sent - 25, wait=60))
                await asyncio.wait([acked, overflowed], return_when=asyncio.FIRST_COMPLETED)
                if acked.done():
                    acked.result()
                else:
                    acked.cancel()
        # The stalled client reads again: what it got is gapless, then the close code 1013.
        stalled = await asyncio.wait_for(reading, 120)
        assert await stalled.wait_closed(60) == 1013
        seqs = stalled.seqs("lobby")
        joined = stalled.matching(lambda f: f["type"] == "joined")[0]
        start = joined["last_seq"] + 1  # its join may have been handled after the first messages
        assert seqs == list(range(start, start + len(seqs))) and start + len(seqs) - 1 < sent
        await sender.wait_for(lambda f: f["type"] == "ack", sent, wait=60)
        rss_after = _rss_kb(server.process.pid)
        for peer in (sender, observer):
            await peer.wait_seqs("lobby", sent, wait=60)
            _assert_gapless(peer, sent)
        assert rss_after - rss_before < 150_000, (rss_before, rss_after)
        await sender.close()
        await observer.close()

    aio(scenario())


def test_sigterm_closes_sockets_with_1012_after_answering_sends(
    start_server, make_user, room, aio, redis_server_process
):
    """SIGTERM: in-flight sends are acked or refused, then every socket is closed with 1012; acked = stored."""
    server = start_server(env=FAST)
    cookie = session_cookie(make_user("alice"))
    r = redis_sync.Redis.from_url(redis_server_process.url)

    async def scenario():
        a = await Peer.open(server.ws, cookie)
        idle = await Peer.open(server.ws, cookie)
        await a.join("lobby")
        for i in range(50):
            await a.send({"type": "send", "room": "lobby", "body": f"m{i}", "client_id": f"c{i}"})
        await a.wait_for(lambda f: f["type"] == "ack")
        server.process.send_signal(signal.SIGTERM)
        assert await a.wait_closed(10) == 1012
        assert await idle.wait_closed(10) == 1012
        acks = a.matching(lambda f: f["type"] == "ack")
        assert len({ack["seq"] for ack in acks}) == len(acks)
        stored: list = await asyncio.to_thread(r.xrange, stream_key(room.pk))  # type: ignore[arg-type]
        stored_cids = {fields[b"cid"].decode() for _, fields in stored}
        assert {ack["client_id"] for ack in acks} <= stored_cids

    try:
        aio(scenario())
    finally:
        r.close()
    assert server.process.wait(timeout=15) is not None
    assert any("graceful shutdown" in line for line in server.lines)
