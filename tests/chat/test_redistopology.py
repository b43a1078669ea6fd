"""Redis deployments against real servers: Sentinel failover and WAIT, and the deployment settings.

The cluster's tests are in test_redistopology_cluster.py.

The topologies come from tests/redis_topology.py (Debian's Redis 7). Each
async scenario runs under a timeout; waiting for a failover polls the
servers against a deadline.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chat import redistopology
from tests.redis_topology import INCR_SCRIPT, SentinelTopology, run, until_ok

pytest_plugins = ["tests.redis_topology_fixtures"]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sentinel_settings(settings: Any, sentinel_topology: SentinelTopology) -> SentinelTopology:
    settings.KAIWA_REDIS_MODE = "sentinel"
    settings.KAIWA_REDIS_SENTINELS = sentinel_topology.sentinel_addresses
    settings.KAIWA_REDIS_SENTINEL_SERVICE = sentinel_topology.service
    settings.REDIS_URL = "redis:///0"
    return sentinel_topology


# Sentinel -----------------------------------------------------------------------


def test_sentinel_topology_has_one_master_and_a_linked_replica(sentinel_topology: SentinelTopology) -> None:
    """The fixture's Sentinels agree on a master, and its replica's link is up."""
    primary = sentinel_topology.primary
    with primary.client() as client:
        info: Any = client.info("replication")
    assert info["role"] == "master"
    assert info["connected_slaves"] == 1
    assert [r.name for r in sentinel_topology.replicas] != [primary.name]


def test_sentinel_clients_reach_the_master_and_a_script_waits_for_its_replica(
    sentinel_settings: SentinelTopology,
) -> None:
    """make_async_client in sentinel mode writes to the master; WAIT 1 confirms the write on the replica."""

    async def scenario() -> tuple[int, redistopology.Replicated]:
        client = redistopology.make_async_client()
        try:
            script = client.register_script(INCR_SCRIPT)
            result = await redistopology.call_script_with_replicas(
                client, script, keys=["sentinel:wait"], args=[], replicas=1, timeout_ms=2000
            )
            return int(await client.get("sentinel:wait") or 0), result
        finally:
            await client.aclose()

    value, result = run(scenario())
    assert value == result.reply == 1
    assert (result.replicas, result.confirmed) == (1, True)
    replica = sentinel_settings.replicas[0]
    with replica.client() as client:
        assert client.get("sentinel:wait") == b"1"


def test_sentinel_pubsub_and_sync_client_and_cache(sentinel_settings: SentinelTopology) -> None:
    """The sync client and the Django cache backend write to the master; a pub/sub client gets a PUBLISH."""
    sync = redistopology.make_sync_client()
    try:
        sync.set("sentinel:sync", "yes")
    finally:
        sync.close()
    cache = redistopology.TopologyRedisCache("", {"OPTIONS": {}})
    cache.set_many({"a": 1, "b": 2}, timeout=60)
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2}

    async def scenario() -> Any:
        reader = redistopology.make_async_client(blocking_reads=True)
        writer = redistopology.make_async_client()
        pubsub = redistopology.make_pubsub(reader)
        try:
            await pubsub.subscribe("control")
            assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
            assert await writer.publish("control", "hello") == 1
            return await pubsub.get_message(timeout=5)
        finally:
            await pubsub.aclose()
            await reader.aclose()
            await writer.aclose()

    message = run(scenario())
    assert message["data"] == b"hello"
    with sentinel_settings.primary.client() as client:
        assert client.get("sentinel:sync") == b"yes"


def test_sentinel_failover_is_followed_and_wait_reports_the_missing_replica(
    settings: Any, fresh_sentinel_topology: SentinelTopology
) -> None:
    """kill -9 the master: the Sentinels promote the replica, the same async client and the same
    PubSub reach it without being re-made (after failing while it ran), the replicated write is there,
    and WAIT 1 now answers 0 replicas (confirmed false: the sender would get `unavailable`)."""
    deployment = fresh_sentinel_topology
    settings.KAIWA_REDIS_MODE = "sentinel"
    settings.KAIWA_REDIS_SENTINELS = deployment.sentinel_addresses
    settings.KAIWA_REDIS_SENTINEL_SERVICE = deployment.service
    settings.REDIS_URL = "redis:///0"

    async def scenario() -> dict[str, Any]:
        client = redistopology.make_async_client()
        assert isinstance(client, redistopology.SentinelRedis)
        pool: Any = client.connection_pool
        reader = redistopology.make_async_client(blocking_reads=True)
        pubsub = redistopology.make_pubsub(reader)
        try:
            script = client.register_script(INCR_SCRIPT)
            before = await redistopology.call_script_with_replicas(
                client, script, keys=["failover"], args=[], replicas=1, timeout_ms=2000
            )
            await pubsub.subscribe("control")
            await pubsub.get_message(timeout=5)
            old = deployment.kill_primary()
            started = time.monotonic()
            new = await asyncio.to_thread(deployment.wait_for_failover, old)
            promoted_after = time.monotonic() - started
            value = await until_ok(lambda: client.get("failover"))
            address = await until_ok(lambda: pool.get_master_address())
            after = await until_ok(
                lambda: redistopology.call_script_with_replicas(
                    client, script, keys=["failover"], args=[], replicas=1, timeout_ms=100
                )
            )

            async def resubscribed() -> Any:
                # The first read fails on the dead connection; the next reconnects via
                # the Sentinels and subscribes again.
                await writer_publish(client)
                return await pubsub.get_message(timeout=1)

            message = None
            deadline = time.monotonic() + 10
            while message is None or message["type"] != "message":
                message = await until_ok(resubscribed)
                assert time.monotonic() < deadline, "the PubSub did not follow the failover"
            return {
                "before": before,
                "value": value,
                "address": address,
                "new": new,
                "after": after,
                "promoted_after": promoted_after,
                "message": message,
            }
        finally:
            await pubsub.aclose()
            await reader.aclose()
            await client.aclose()

    async def writer_publish(client: aioredis.Redis) -> None:
        await client.publish("control", "after-failover")

    got = run(scenario(), timeout=60)
    assert got["before"].confirmed
    assert got["value"] == b"1"
    assert tuple(got["address"]) == got["new"].address
    assert got["after"].reply == 2
    assert (got["after"].replicas, got["after"].confirmed) == (0, False)
    assert got["message"]["data"] == b"after-failover"
    assert got["promoted_after"] < 15


# Settings -----------------------------------------------------------------------

BASE_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": str(ROOT),
    "SECRET_KEY": "k" * 20 + "-production-secret-" + "z" * 30,
    "ALLOWED_HOSTS": "chat.example.com",
}


def check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**BASE_ENV, "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"KAIWA_REDIS_MODE": "sentinel"}, "KAIWA_REDIS_MODE=sentinel needs KAIWA_REDIS_SENTINELS"),
        (
            {"KAIWA_REDIS_MODE": "sentinel", "KAIWA_REDIS_SENTINELS": "10.0.0.5", "KAIWA_REDIS_SENTINEL_SERVICE": "m"},
            "is not host:port",
        ),
        ({"KAIWA_REDIS_MODE": "cluster", "REDIS_URL": "redis://h1:7000,h2:7000/3"}, "has only database 0"),
        ({"KAIWA_REDIS_MODE": "cluster"}, "needs REDIS_URL with one or more seed nodes"),
        ({"KAIWA_REDIS_MODE": "shard", "REDIS_URL": "redis://h:1/0"}, "is not a Redis deployment"),
        ({"REDIS_URL": "redis://h1:7000,h2:7000/0"}, "set KAIWA_REDIS_MODE=cluster"),
        ({"REDIS_URL": "redis://h:1/0", "KAIWA_ACK_REPLICAS": "-1"}, "KAIWA_ACK_REPLICAS=-1 is too small"),
        ({"REDIS_URL": "redis://h:1/0", "KAIWA_ACK_REPLICA_TIMEOUT_MS": "0"}, "KAIWA_ACK_REPLICA_TIMEOUT_MS=0"),
        ({"REDIS_URL": "redis://h:1/0", "KAIWA_ACK_REPLICA_TIMEOUT_MS": "9000"}, "use at most 4000"),
        ({"REDIS_URL": "redis://h:1/0", "KAIWA_REDIS_SENTINELS": "h:26379"}, "set KAIWA_REDIS_MODE=sentinel"),
    ],
)
def test_bad_redis_deployment_settings_stop_startup_with_a_clear_message(env: dict[str, str], expected: str) -> None:
    """A Redis deployment setting that cannot work stops startup and says what to write instead."""
    result = check(env)
    assert result.returncode != 0
    assert expected in result.stderr


def test_good_redis_deployment_settings_are_parsed() -> None:
    """Sentinel addresses and cluster seeds come out as (host, port) pairs; the cache uses Kaiwa's backend."""
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.KAIWA_REDIS_MODE, s.KAIWA_REDIS_CLUSTER_NODES, s.KAIWA_ACK_REPLICAS, "
        "s.KAIWA_ACK_REPLICA_TIMEOUT_MS, s.CACHES['default']['BACKEND'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **BASE_ENV,
            "DJANGO_SETTINGS_MODULE": "project.settings",
            "KAIWA_REDIS_MODE": "cluster",
            "REDIS_URL": "redis://:pw@h1:7000,[::1]:7001/0",
            "KAIWA_ACK_REPLICAS": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split(" ", 1)[1].strip() == (
        "[('h1', 7000), ('::1', 7001)] 1 500 chat.redistopology.TopologyRedisCache"
    )
    assert redistopology.split_url("redis://:pw@h1:7000,[::1]:7001/0?x=1") == (
        "redis://:pw@h1:7000/0?x=1",
        [("h1", 7000), ("::1", 7001)],
    )


def test_wait_counts_a_killed_replica_out_and_a_restarted_one_back_in(
    settings: Any, fresh_sentinel_topology: SentinelTopology
) -> None:
    """WAIT 1 answers 1 with the replica up, 0 (after the timeout) once it was killed, and 1 again after it
    was restarted and caught up; the master stays the master throughout."""
    deployment = fresh_sentinel_topology
    settings.KAIWA_REDIS_MODE = "sentinel"
    settings.KAIWA_REDIS_SENTINELS = deployment.sentinel_addresses
    settings.KAIWA_REDIS_SENTINEL_SERVICE = deployment.service
    settings.REDIS_URL = "redis:///0"
    replica = deployment.replicas[0]

    async def replicated(client: Any, script: Any, timeout_ms: int) -> tuple[redistopology.Replicated, float]:
        started = time.monotonic()
        result = await redistopology.call_script_with_replicas(
            client, script, keys=["wait"], args=[], replicas=1, timeout_ms=timeout_ms
        )
        return result, time.monotonic() - started

    async def scenario() -> list[tuple[redistopology.Replicated, float]]:
        client = redistopology.make_async_client()
        try:
            script = client.register_script(INCR_SCRIPT)
            results = [await replicated(client, script, 2000)]
            replica.kill()
            results.append(await replicated(client, script, 300))
            await asyncio.to_thread(replica.start)
            await asyncio.to_thread(deployment.wait_settled)
            results.append(await replicated(client, script, 2000))
            return results
        finally:
            await client.aclose()

    (up, _), (down, waited), (back, _) = run(scenario(), timeout=60)
    assert (up.reply, up.replicas, up.confirmed) == (1, 1, True)
    assert (down.reply, down.replicas, down.confirmed) == (2, 0, False)
    assert waited >= 0.3
    assert (back.reply, back.replicas, back.confirmed) == (3, 1, True)
    assert deployment.primary is not replica


def test_single_mode_factory_runs_the_script_and_reports_no_replicas() -> None:
    """In single mode (the suite's Redis, no replica) the script runs once per call; with replicas=0 there is no
    WAIT, with replicas=1 WAIT answers 0 after its timeout, so the ack would be `unavailable`."""

    async def scenario() -> tuple[redistopology.Replicated, redistopology.Replicated, Any]:
        client = redistopology.make_async_client()
        assert type(client) is aioredis.Redis
        try:
            script = client.register_script(INCR_SCRIPT)
            plain = await redistopology.call_script_with_replicas(
                client, script, keys=["single"], args=[], replicas=0, timeout_ms=100
            )
            waited = await redistopology.call_script_with_replicas(
                client, script, keys=["single"], args=[], replicas=1, timeout_ms=50
            )
            return plain, waited, await client.get("single")
        finally:
            await client.aclose()

    plain, waited, value = run(scenario())
    assert (plain.reply, plain.replicas, plain.confirmed) == (1, 0, True)
    assert (waited.reply, waited.replicas, waited.confirmed) == (2, 0, False)
    assert value == b"2"
    assert plain.confirmed_reply() == 1
    with pytest.raises(redistopology.ReplicasDidNotConfirm, match="0 of 1 replicas") as refused:
        waited.confirmed_reply()
    assert isinstance(refused.value, RedisError)
