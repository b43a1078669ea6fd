"""Kill -9 of the Redis primary under Sentinel while two clients send, with acks that wait for a replica (7.2).

Two real uvicorn Kaiwa processes (``KAIWA_REDIS_MODE=sentinel``,
``KAIWA_ACK_REPLICAS=1``), one client on each, both sending. The primary is
killed with SIGKILL mid-stream; Sentinel promotes the replica; the killed node
is started again as the new primary's replica (without it ``WAIT 1`` could
never be answered again and every send would be ``unavailable``).
Clients re-send whatever got no ``ack`` with the same ``client_id``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chat.epochmodels import UnstoredMessage
from chat.models import Message, Room
from tests.redis_topology import SentinelTopology
from tests.wsapp.conftest import Peer, session_cookie

pytest_plugins = ["tests.redis_topology_fixtures"]
pytestmark = pytest.mark.django_db(transaction=True)

PER_CLIENT = 40
KILL_AFTER_ACKS = 12
DEADLINE = 120.0


@dataclass
class Run:
    """What the clients saw: acks by client_id, refusals, and the moments that matter."""

    acked: dict[str, int] = field(default_factory=dict)
    unavailable: int = 0
    killed_at: float | None = None
    promoted_at: float | None = None
    replica_back_at: float | None = None
    first_ack_after_kill: float | None = None
    killed: asyncio.Event = field(default_factory=asyncio.Event)


async def answer(peer: Peer, frame: dict[str, Any]) -> dict[str, Any]:
    """Send ``frame`` and wait for the answer to its client_id sent after this call (ack or error)."""
    cid = frame["client_id"]

    def mine(f: dict[str, Any]) -> bool:
        return (f["type"] == "ack" and f["client_id"] == cid) or (f["type"] == "error" and f["ref"] == cid)

    before = len(peer.matching(mine))
    await peer.send(frame)
    return (await peer.wait_for(mine, before + 1, wait=30))[-1]


async def sender(peer: Peer, name: str, run: Run) -> None:
    """Send PER_CLIENT messages; each one is re-sent with its client_id until it is acked."""
    for i in range(PER_CLIENT):
        cid = f"{name}-{i}"
        frame = {"type": "send", "room": "lobby", "body": f"{name} says {i}", "client_id": cid}
        while True:
            sent_at = time.monotonic()
            got = await answer(peer, frame)
            if got["type"] == "ack":
                run.acked[cid] = got["seq"]
                if run.killed_at is not None and sent_at > run.killed_at and run.first_ack_after_kill is None:
                    run.first_ack_after_kill = time.monotonic()
                if len(run.acked) >= KILL_AFTER_ACKS:
                    run.killed.set()
                break
            assert got["code"] in ("unavailable", "rate_limited"), got
            run.unavailable += got["code"] == "unavailable"
            # The client's own backoff, as the contract tells it (not test synchronisation).
            await asyncio.sleep(got["retry_after_ms"] / 1000)


async def failover(topology: SentinelTopology, run: Run) -> None:
    await run.killed.wait()
    old = topology.kill_primary()
    run.killed_at = time.monotonic()
    new = await asyncio.to_thread(topology.wait_for_failover, old)
    run.promoted_at = time.monotonic()
    # Back as the new primary's replica (as an operator restarts a failed node: never as an empty
    # primary; Sentinel alone would convert it only ~10 s later): WAIT 1 can be answered again.
    host, port = new.address
    old.args = [*old.args, "--replicaof", host, str(port)]
    await asyncio.to_thread(old.start)
    run.replica_back_at = time.monotonic()


def received_view(peer: Peer) -> tuple[dict[int, str], list[int]]:
    """The client's ``message`` frames by seq (checked strictly increasing between ``joined`` frames),
    and the ``last_seq`` of every ``joined`` with ``reset: true``."""
    seen: dict[int, str] = {}
    resets: list[int] = []
    last = 0
    for f in peer.frames:
        if f["type"] == "joined":
            last = f["last_seq"]
            if f["reset"]:
                resets.append(f["last_seq"])
        elif f["type"] == "message":
            assert f["seq"] > last, f"seq {f['seq']} after {last}: out of order or twice"
            last = f["seq"]
            seen[f["seq"]] = f["client_id"]
    return seen, resets


def send_through_failover(
    aio: Any, servers: list[Any], cookies: list[str], run: Run, failover: Callable[[], Awaitable[None]]
) -> list[Peer]:
    """Two clients, one per server, join ``lobby`` and send while ``failover()`` runs; the peers once the
    last acked message (or a reset covering it) reached both. Shared by the Sentinel and Cluster tests."""

    async def scenario() -> list[Peer]:
        peers = [await Peer.open(s.ws, cookie) for s, cookie in zip(servers, cookies, strict=True)]
        for peer in peers:
            await peer.join("lobby")
        async with asyncio.timeout(DEADLINE):
            await asyncio.gather(sender(peers[0], "ann", run), sender(peers[1], "bob", run), failover())
            top = max(run.acked.values())
            for peer in peers:  # the last acked message reached both clients (or a reset covering it did)
                await peer.wait_for(lambda f: f.get("seq", f.get("last_seq", 0)) >= top and f["type"] != "ack")
        return peers

    result: list[Peer] = aio(scenario())
    return result


def assert_nothing_lost(lobby: Room, run: Run, peers: list[Peer]) -> tuple[int, int, int]:
    """Every acked message stored exactly once at its acked seq, and seen by each client (or below a reset);
    returns (lost, duplicates, resets) for the test's report line."""
    assert len(run.acked) == 2 * PER_CLIENT
    seqs = sorted(run.acked.values())
    assert len(set(seqs)) == len(seqs), "two acked messages share a seq"

    deadline = time.monotonic() + 60
    while Message.objects.filter(room=lobby).count() < len(run.acked):
        assert time.monotonic() < deadline, "the workers did not store every acked message"
        # Polling the database for the workers' writes, not synchronising with the server.
        time.sleep(0.1)
    rows = list(Message.objects.filter(room=lobby).values_list("seq", "client_id"))
    stored = {cid: seq for seq, cid in rows}
    lost = [cid for cid, seq in run.acked.items() if stored.get(cid) != seq]
    duplicates = len(rows) - len(stored)
    assert lost == [] and duplicates == 0 and not UnstoredMessage.objects.exists()
    assert len(rows) == len(run.acked)  # nothing but the acked messages

    by_seq = {seq: cid for cid, seq in run.acked.items()}
    resets = 0
    for peer in peers:
        seen, reset_bounds = received_view(peer)
        resets += len(reset_bounds)
        for seq, cid in by_seq.items():
            if seen.get(seq) == cid:
                continue
            # Not seen live as acked: only allowed below a reset's boundary (the client reloads that history).
            assert any(seq <= bound for bound in reset_bounds), f"client missed acked seq {seq}"
    return len(lost), duplicates, resets


def test_primary_killed_while_two_clients_send_loses_and_duplicates_nothing(
    start_server, make_user, aio, fresh_sentinel_topology
):
    """Kill -9 of the primary while two clients send (acks wait for 1 replica): afterwards every acked
    message is in the database exactly once at its acked seq, no seq holds two messages, each client got
    every acked seq once and in order (or a reset covering it), and every unacked send succeeded on re-send."""
    topology = fresh_sentinel_topology
    env = {**topology.env(), "KAIWA_ACK_REPLICAS": "1", "KAIWA_ACK_REPLICA_TIMEOUT_MS": "500"}
    users = [make_user("ann"), make_user("bob")]
    cookies = [session_cookie(u) for u in users]
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    servers = [start_server(env=env), start_server(env=env)]
    run = Run()

    peers = send_through_failover(aio, servers, cookies, run, lambda: failover(topology, run))
    lost, duplicates, resets = assert_nothing_lost(lobby, run, peers)
    assert run.killed_at is not None and run.first_ack_after_kill is not None
    assert run.promoted_at is not None and run.replica_back_at is not None
    print(
        f"\nFAILOVER: promoted {run.promoted_at - run.killed_at:.2f} s after kill -9, old node restarted "
        f"{run.replica_back_at - run.killed_at:.2f} s; "
        f"first ack {run.first_ack_after_kill - run.killed_at:.2f} s after kill -9; "
        f"{len(run.acked)} acked, lost {lost}, duplicates {duplicates}, "
        f"{run.unavailable} unavailable answers re-sent, {resets} resets"
    )


def test_with_every_sentinel_and_node_gone_sends_are_refused_promptly_and_sigterm_exits(
    start_server, make_user, aio, fresh_sentinel_topology
):
    """With the whole Sentinel deployment down, a send is answered ``unavailable`` within a few seconds (not
    after redis-py retrying each dead Sentinel ten times, about 11 s) and SIGTERM ends the process within
    its shutdown grace."""
    topology = fresh_sentinel_topology
    user = make_user("ann")
    cookie = session_cookie(user)
    Room.objects.create(slug="lobby", name="Lobby")
    server = start_server(env={**topology.env(), "KAIWA_SHUTDOWN_GRACE_SECONDS": "2"})

    async def joined() -> Peer:
        peer = await Peer.open(server.ws, cookie)
        await peer.join("lobby")
        assert (await peer.send_message("lobby", "before", "c1"))["type"] == "ack"
        return peer

    peer = aio(joined())
    topology.topology.close()

    async def refused() -> dict[str, Any]:
        async with asyncio.timeout(4):
            return await peer.send_message("lobby", "during", "c2")

    answer = aio(refused())
    assert answer["type"] == "error" and answer["code"] == "unavailable", answer
    server.terminate(timeout=2 + 3)  # uvicorn re-raises the SIGTERM it handled: the exit status is -15
    assert any("Finished server process" in line for line in server.lines), "".join(server.lines)
