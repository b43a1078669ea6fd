"""Kill -9 of a Redis Cluster primary while clients send, with acks that wait for a replica (protocol 7.2).

Two real uvicorn Kaiwa processes (``KAIWA_REDIS_MODE=cluster``,
``KAIWA_ACK_REPLICAS=1``), one client on each, both sending into one room.
The primary that owns the room's slot is killed with SIGKILL mid-stream; the
cluster promotes its replica; the killed node is started again and rejoins as
the new primary's replica (without it ``WAIT 1`` could never be answered again).
The processes are not restarted: the cluster client follows ``MOVED`` and
re-reads the slot map, the sharded relay subscribes again on the promoted node
and the hubs repair the gap from the stream. Clients re-send whatever got no
``ack`` with the same ``client_id``. The clients and checks are the Sentinel
failover test's (tests/wsapp/test_failover.py).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.crc import key_slot

from chat.logkeys import seq_key
from chat.models import Room
from tests.redis_cluster_topology import ClusterTopology
from tests.wsapp.conftest import session_cookie
from tests.wsapp.test_failover import Run, assert_nothing_lost, send_through_failover

pytest_plugins = ["tests.redis_topology_fixtures"]
pytestmark = pytest.mark.django_db(transaction=True)


async def failover(topology: ClusterTopology, slot: int, run: Run, promoted: list[float]) -> None:
    await run.killed.wait()
    run.killed_at = time.monotonic()
    old = topology.kill_primary_of(slot)
    await asyncio.to_thread(topology.wait_for_failover, old, slot)
    promoted.append(time.monotonic())
    # Back as the new primary's replica: WAIT 1 can be answered again.
    await asyncio.to_thread(old.start)


def test_cluster_primary_killed_while_two_clients_send_loses_and_duplicates_nothing(
    fresh_cluster_topology, start_server, make_user, aio
):
    """Kill -9 of the room's shard primary while two clients send (acks wait for 1 replica), no Kaiwa restart:
    every acked message is in the database exactly once at its acked seq, no seq holds two messages, each client
    got every acked seq once and in order (or a reset covering it), and every unacked send succeeded on re-send."""
    topology = fresh_cluster_topology
    env = {**topology.env(), "KAIWA_ACK_REPLICAS": "1", "KAIWA_ACK_REPLICA_TIMEOUT_MS": "500"}
    users = [make_user("ann"), make_user("bob")]
    cookies = [session_cookie(u) for u in users]
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    slot = key_slot(seq_key(lobby.pk).encode())
    servers = [start_server(env=env), start_server(env=env)]
    run = Run()
    promoted: list[float] = []

    peers = send_through_failover(aio, servers, cookies, run, lambda: failover(topology, slot, run, promoted))
    lost, duplicates, resets = assert_nothing_lost(lobby, run, peers)
    assert run.killed_at is not None and run.first_ack_after_kill is not None
    print(
        f"\nCLUSTER FAILOVER: replica promoted {promoted[0] - run.killed_at:.2f} s after kill -9, "
        f"first ack {run.first_ack_after_kill - run.killed_at:.2f} s after the kill; "
        f"{len(run.acked)} acked, lost {lost}, duplicates {duplicates}, "
        f"{run.unavailable} unavailable answers re-sent, {resets} resets"
    )
