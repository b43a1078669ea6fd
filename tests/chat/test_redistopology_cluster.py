"""Redis Cluster against a real six-node cluster: MOVED, sharded pub/sub, failover, WAIT on the slot's owner."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterPubSub, RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from chat import redistopology
from tests.redis_cluster_topology import ClusterTopology
from tests.redis_topology import INCR_SCRIPT, run, until_ok

pytest_plugins = ["tests.redis_topology_fixtures"]


@pytest.fixture
def cluster_settings(settings: Any, cluster_topology: ClusterTopology) -> ClusterTopology:
    settings.KAIWA_REDIS_MODE = "cluster"
    settings.REDIS_URL = cluster_topology.url
    return cluster_topology


def test_cluster_topology_covers_every_slot_with_three_primaries(cluster_topology: ClusterTopology) -> None:
    """The fixture's cluster has three masters, each with a replica whose link is up."""
    primaries = cluster_topology.primaries()
    assert len(primaries) == 3
    assert {cluster_topology.replica_of(p).name for p in primaries}.isdisjoint({p.name for p in primaries})


def test_cluster_client_follows_moved_after_a_slot_migrates(cluster_settings: ClusterTopology) -> None:
    """A slot moved to another primary under a running client: redis-py follows MOVED, reads the moved key
    and sends the next command straight to the new owner; a replicated script call confirms 1 replica there."""
    cluster = cluster_settings

    async def scenario() -> dict[str, Any]:
        client = redistopology.make_async_client()
        assert isinstance(client, RedisCluster)
        try:
            await client.set("{room:7}:seq", "41")
            slot = client.keyslot("{room:7}:seq")
            source = cluster.owner_of_slot(slot)
            target = next(p for p in cluster.primaries() if p is not source)
            await asyncio.to_thread(cluster.move_slot, slot, target)
            value = await client.get("{room:7}:seq")
            owner: Any = client.get_node_from_key("{room:7}:seq")
            script = client.register_script(INCR_SCRIPT)
            result = await redistopology.call_script_with_replicas(
                client, script, keys=["{room:7}:seq"], args=[], replicas=1, timeout_ms=2000
            )
            return {"value": value, "owner": owner.port, "target": target.port, "result": result}
        finally:
            await client.aclose()

    got = run(scenario())
    assert got["value"] == b"41"
    assert got["owner"] == got["target"]
    assert got["result"].reply == 42
    assert got["result"].confirmed


def test_cluster_sharded_pubsub_reaches_subscribers_on_every_primary(cluster_settings: ClusterTopology) -> None:
    """SSUBSCRIBE to channels hashed to all three primaries: every SPUBLISH reaches exactly this subscriber,
    and a plain PUBLISH (control events) reaches a SUBSCRIBE made on any node."""

    async def scenario() -> tuple[set[bytes], set[int], list[int], Any]:
        reader = redistopology.make_async_client(blocking_reads=True)
        writer = redistopology.make_async_client()
        assert isinstance(reader, RedisCluster) and isinstance(writer, RedisCluster)
        # ClusterPubSub.ssubscribe and get_node_from_key need the slot map.
        await reader.initialize()
        await writer.initialize()
        pubsub = redistopology.make_pubsub(reader)
        control = redistopology.make_pubsub(reader)
        assert isinstance(pubsub, ClusterPubSub)
        channels = [f"{{room:{i}}}:events" for i in range(12)]
        try:
            await pubsub.ssubscribe(*channels)
            await control.subscribe("kaiwa:control")
            await control.get_message(timeout=5)
            nodes = {int(node.port) for c in channels if (node := writer.get_node_from_key(c))}
            counts = [await writer.spublish(c, c) for c in channels]
            received: set[bytes] = set()
            deadline = time.monotonic() + 10
            while len(received) < len(channels) and time.monotonic() < deadline:
                message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
                if message is not None:
                    received.add(message["data"])
            await writer.publish("kaiwa:control", "ctl")
            event = await control.get_message(timeout=5)
            return received, nodes, counts, event
        finally:
            await pubsub.aclose()
            await control.aclose()
            await reader.aclose()
            await writer.aclose()

    received, nodes, counts, event = run(scenario())
    assert len(nodes) == 3
    assert counts == [1] * 12
    assert received == {f"{{room:{i}}}:events".encode() for i in range(12)}
    assert event["data"] == b"ctl"


def test_cluster_failover_is_followed_by_commands_and_sharded_pubsub(
    settings: Any, fresh_cluster_topology: ClusterTopology
) -> None:
    """kill -9 the primary of a room's slot: its replica is promoted, the same client's next commands
    reach it (one fails first), the replicated key is there, and after resync_sharded_subscriptions the
    sharded subscription receives from the new primary; WAIT 1 there answers 0 (no replica left)."""
    cluster = fresh_cluster_topology
    settings.KAIWA_REDIS_MODE = "cluster"
    settings.REDIS_URL = cluster.url
    channel, key = "{room:3}:events", "{room:3}:seq"

    async def scenario() -> dict[str, Any]:
        client = redistopology.make_async_client()
        reader = redistopology.make_async_client(blocking_reads=True)
        assert isinstance(client, RedisCluster) and isinstance(reader, RedisCluster)
        await reader.initialize()
        pubsub = redistopology.make_pubsub(reader)
        assert isinstance(pubsub, ClusterPubSub)
        try:
            script = client.register_script(INCR_SCRIPT)
            before = await redistopology.call_script_with_replicas(
                client, script, keys=[key], args=[], replicas=1, timeout_ms=2000
            )
            await pubsub.ssubscribe(channel)
            await pubsub.get_sharded_message(timeout=5)
            slot = client.keyslot(key)
            old = cluster.kill_primary_of(slot)
            new = await asyncio.to_thread(cluster.wait_for_failover, old, slot)
            value = await until_ok(lambda: client.get(key))
            after = await until_ok(
                lambda: redistopology.call_script_with_replicas(
                    client, script, keys=[key], args=[], replicas=1, timeout_ms=100
                )
            )
            failed_reads = 0
            message = None
            deadline = time.monotonic() + 10
            while message is None or message["type"] != "smessage":
                assert time.monotonic() < deadline, "the sharded subscription did not follow the failover"
                await client.spublish(channel, "after-failover")
                try:
                    message = await pubsub.get_sharded_message(timeout=0.2)
                except RedisConnectionError:
                    failed_reads += 1
                    await redistopology.resync_sharded_subscriptions(reader, pubsub)
            return {
                "before": before,
                "value": value,
                "after": after,
                "message": message,
                "new": new.port,
                "owner": getattr(client.get_node_from_key(key), "port", None),
                "failed_reads": failed_reads,
            }
        finally:
            await pubsub.aclose()
            await reader.aclose()
            await client.aclose()

    got = run(scenario(), timeout=60)
    assert got["before"].confirmed
    assert got["value"] == b"1"
    assert got["owner"] == got["new"]
    assert got["after"].reply == 2
    assert (got["after"].replicas, got["after"].confirmed) == (0, False)
    assert got["message"]["data"] == b"after-failover"
    assert got["failed_reads"] >= 1


def test_cluster_cache_backend_and_sync_client_span_slots(cluster_settings: ClusterTopology) -> None:
    """The Django cache backend in cluster mode reads and writes keys in different slots in one call
    (Django's own backend would send a CROSSSLOT MGET), and the sync client reaches the key's owner."""
    cache = redistopology.TopologyRedisCache("", {"OPTIONS": {}})
    values = {f"throttle:{i}": i for i in range(20)}
    cache.set_many(values, timeout=60)
    assert cache.get_many([*values, "missing"]) == values
    cache.delete_many(list(values))
    assert cache.get_many(list(values)) == {}
    sync = redistopology.make_sync_client()
    assert isinstance(sync, SyncRedisCluster)
    try:
        sync.set("{room:9}:sync", "yes")
        owner = cluster_settings.owner_of_slot(int(sync.keyslot("{room:9}:sync")))
    finally:
        sync.close()
    with owner.client() as client:
        assert client.get("{room:9}:sync") == b"yes"
