"""Kaiwa on a real Redis Cluster (``KAIWA_REDIS_MODE=cluster``): three primaries, three replicas, Redis 7.

The relay, resume and presence tests of the one-server suite run here again,
unchanged, against real uvicorn processes whose ``REDIS_URL`` lists the
cluster's nodes (the ``start_server`` below adds ``cluster_topology.env()``);
one cluster serves the whole module and is emptied between tests. Then what
only a cluster has: rooms spread over every primary (sharded pub/sub, the
worker's per-slot reads), the per-user rate limit across slots, and a
primary's failover under load (tests/wsapp/test_cluster_failover.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as redis_sync
from redis.crc import key_slot

from chat.logkeys import CONTROL_CHANNEL, channel, seq_key
from chat.models import Message, Room
from tests.redis_cluster_topology import ClusterTopology
from tests.wsapp.conftest import Peer, session_cookie
from tests.wsapp.test_presence import (  # noqa: F401 (collected here again, on the cluster)
    test_presence_join_leave_once_per_user_across_processes,
    test_users_of_a_crashed_process_disappear_after_the_ttl,
)
from tests.wsapp.test_relay import test_two_users_on_two_processes_chat_in_order_once  # noqa: F401
from tests.wsapp.test_resume import (  # noqa: F401
    FAST,
    test_backlog_limit_and_future_since_give_reset,
    test_resend_with_same_client_id_is_acked_with_the_original_seq,
    test_resume_with_since_delivers_the_gap_then_live,
)

pytest_plugins = ["tests.redis_topology_fixtures"]
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _empty_cluster(cluster_topology: ClusterTopology) -> Iterator[None]:
    """Each test starts with an empty cluster (room ids are reused by the next test's database)."""
    for node in cluster_topology.primaries():
        with contextlib.closing(node.client()) as client:
            client.flushall()
    yield


@pytest.fixture
def start_server(start_server: Callable[..., Any], cluster_topology: ClusterTopology) -> Callable[..., Any]:
    """The suite's ``start_server`` with every process on the module's cluster."""

    def start(env: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return start_server(env={**cluster_topology.env(), **(env or {})}, **kwargs)

    return start


def cluster_client(topology: ClusterTopology) -> redis_sync.RedisCluster:
    return redis_sync.RedisCluster(startup_nodes=[redis_sync.cluster.ClusterNode(h, p) for h, p in topology.seeds])


def rooms_on_every_primary(topology: ClusterTopology, count: int) -> list[Room]:
    """``count`` rooms (at least one owned by each primary), created in the database."""
    rooms = [Room.objects.create(slug=f"r{i}", name=f"R{i}") for i in range(count)]
    with contextlib.closing(cluster_client(topology)) as client:
        owners = {client.get_node_from_key(channel(r.pk)).name for r in rooms}
    assert len(owners) == len(topology.primaries()), "the rooms do not cover every primary; take more"
    return rooms


def test_rooms_on_every_primary_reach_their_members_and_the_database_once(
    start_server, make_user, aio, cluster_topology
):
    """Rooms spread over the three primaries: each message reaches the members of its room on both processes
    (sharded pub/sub, each room's channel on its own node) and nothing of other rooms; the workers, reading
    per slot, store every acked message exactly once."""
    topology_rooms = rooms_on_every_primary(cluster_topology, 12)
    s1, s2 = start_server(env=FAST), start_server(env=FAST)
    ann, bob = make_user("ann"), make_user("bob")
    a_cookie, b_cookie = session_cookie(ann), session_cookie(bob)
    slugs = [r.slug for r in topology_rooms]
    watched = slugs[: len(slugs) // 2]

    async def scenario() -> dict[str, list[int]]:
        a = await Peer.open(s1.ws, a_cookie)
        b = await Peer.open(s2.ws, b_cookie)
        for slug in slugs:
            await a.join(slug)
        for slug in watched:
            await b.join(slug)
        acked: dict[str, list[int]] = {}
        for n in range(3):
            for slug in slugs:
                answer = await a.send_message(slug, f"{slug} {n}", f"{slug}-{n}")
                assert answer["type"] == "ack", answer
                acked.setdefault(slug, []).append(answer["seq"])
        for slug in watched:
            assert await b.wait_seqs(slug, 3) == [1, 2, 3]
        for slug in slugs:
            assert await a.wait_seqs(slug, 3) == [1, 2, 3]
        assert {f["room"] for f in b.frames if f["type"] == "message"} == set(watched)
        await a.close()
        await b.close()
        return acked

    acked = aio(scenario())
    assert all(seqs == [1, 2, 3] for seqs in acked.values())
    wait_stored(3 * len(slugs))
    rows = list(Message.objects.values_list("room__slug", "seq", "client_id"))
    assert sorted(rows) == sorted((slug, n + 1, f"{slug}-{n}") for slug in slugs for n in range(3))


def wait_stored(count: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while Message.objects.count() < count:
        assert time.monotonic() < deadline, f"the workers stored {Message.objects.count()} of {count} messages"
        # Polling the database for the workers' writes, not synchronising with the server.
        time.sleep(0.1)


def test_rate_limit_is_one_bucket_per_user_across_rooms_slots_and_processes(
    start_server, make_user, aio, cluster_topology
):
    """KAIWA_RATE_BURST=5 with a slow refill: a user sending into rooms on every primary through two processes
    gets exactly 5 acks, then rate_limited; a re-send of an acked message takes no token and is acked with its
    seq, whether tokens are left or not."""
    rooms = rooms_on_every_primary(cluster_topology, 12)
    env = {"KAIWA_RATE_BURST": "5", "KAIWA_RATE_PER_SECOND": "0.01"}
    s1, s2 = start_server(env=env), start_server(env=env)
    cookie = session_cookie(make_user("ann"))

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        peers = [await Peer.open(s1.ws, cookie), await Peer.open(s2.ws, cookie)]
        for peer in peers:
            for room in rooms:
                await peer.join(room.slug)
        answers = []
        for i, room in enumerate(rooms[:3]):
            answers.append(await peers[i % 2].send_message(room.slug, f"m{i}", f"c{i}"))
        # A re-send while tokens are left: the token it took on the user's slot is given back.
        resent = await peers[1].send_message(rooms[0].slug, "m0", "c0")
        assert resent["type"] == "ack" and resent["seq"] == 1, resent
        for i, room in enumerate(rooms[3:], start=3):
            answers.append(await peers[i % 2].send_message(room.slug, f"m{i}", f"c{i}"))
        first = next(a for a in answers if a["type"] == "ack")
        # And one while the bucket is empty: still the original's ack (the dedup token is looked up).
        again = await peers[1].send_message(first["room"], "again", first["client_id"])
        for peer in peers:
            await peer.close()
        return answers, again

    answers, again = aio(scenario())
    kinds = [a["type"] if a["type"] == "ack" else a["code"] for a in answers]
    assert kinds == ["ack"] * 5 + ["rate_limited"] * (len(rooms) - 5)
    assert again["type"] == "ack" and again["seq"] == 1


def test_control_events_published_on_any_node_reach_every_process(start_server, make_user, aio, cluster_topology):
    """A session revocation published (plain PUBLISH, as chat.signals does) through a primary other than the one
    the relays listen on closes that session's sockets on both processes with 4401; another user's socket stays."""
    Room.objects.create(slug="lobby", name="Lobby")
    s1, s2 = start_server(), start_server()
    ann, bob = make_user("ann"), make_user("bob")
    a_cookie, b_cookie = session_cookie(ann), session_cookie(bob)

    async def scenario() -> None:
        a1, a2, b = await Peer.open(s1.ws, a_cookie), await Peer.open(s2.ws, a_cookie), await Peer.open(s2.ws, b_cookie)
        for peer in (a1, a2, b):
            await peer.join("lobby")
        # The relays subscribe the control channel on the first primary by name: publish through the last one.
        host, port = max(n.address for n in cluster_topology.primaries())
        with contextlib.closing(redis_sync.Redis(host=host, port=port)) as node:
            event = {"kind": "session", "user_id": ann.pk, "session_key": a_cookie}
            node.publish(CONTROL_CHANNEL, json.dumps(event))
        for peer in (a1, a2):  # each Peer's reader ends when the server closes its socket
            await asyncio.wait_for(asyncio.shield(peer._task), 10)
        assert (a1.close_code, a2.close_code) == (4401, 4401)
        await b.send({"type": "ping"})
        await b.wait_for(lambda f: f["type"] == "pong")
        await b.close()

    aio(scenario())


def test_a_room_whose_slot_moves_to_another_primary_goes_on_without_gap(start_server, make_user, aio, cluster_topology):
    """The room's slot is migrated to another primary between two sends: appends follow MOVED, the relays get
    Redis's sunsubscribe, subscribe again on the new owner and repair; the member on the other process sees
    every seq once and in order, and the workers store each message once."""
    lobby = Room.objects.create(slug="lobby", name="Lobby")
    s1, s2 = start_server(env=FAST), start_server(env=FAST)
    a_cookie, b_cookie = session_cookie(make_user("ann")), session_cookie(make_user("bob"))
    slot = key_slot(seq_key(lobby.pk).encode())

    async def scenario() -> None:
        a, b = await Peer.open(s1.ws, a_cookie), await Peer.open(s2.ws, b_cookie)
        await a.join("lobby")
        await b.join("lobby")
        for i in range(3):
            assert (await a.send_message("lobby", f"before {i}", f"b{i}"))["type"] == "ack"
        assert await b.wait_seqs("lobby", 3) == [1, 2, 3]
        owner = cluster_topology.owner_of_slot(slot)
        target = next(n for n in cluster_topology.primaries() if n is not owner)
        await asyncio.to_thread(cluster_topology.move_slot, slot, target)
        for i in range(3):
            answer = await a.send_message("lobby", f"after {i}", f"a{i}")
            assert answer["type"] == "ack", answer
        assert await b.wait_seqs("lobby", 6) == [1, 2, 3, 4, 5, 6]
        await a.close()
        await b.close()

    aio(scenario())
    wait_stored(6)
    assert sorted(Message.objects.values_list("seq", flat=True)) == [1, 2, 3, 4, 5, 6]
