"""chat.clusterlog without a cluster: the cluster forms of the scripts, and which log a client gets.

The behaviour on a real cluster is tests/wsapp/test_cluster.py's.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode

from chat import logscripts
from chat.clusterlog import ClusterMessageLog, cluster_append_script, message_log, sharded_script
from chat.messagelog import MessageLog
from chat.redistopology import KaiwaRedisCluster
from wsapp import presence


def test_cluster_append_script_publishes_sharded_and_registers_nothing_in_another_slot() -> None:
    """The append script's cluster form publishes with SPUBLISH only and no longer adds the room to ROOMS_KEY."""
    script = cluster_append_script(logscripts.APPEND)
    assert "'SPUBLISH'" in script and "'PUBLISH'" not in script
    assert "KEYS[6]" not in script
    assert script.replace("'SPUBLISH'", "'PUBLISH'") != logscripts.APPEND  # the SADD line is gone


def test_every_script_that_publishes_on_a_room_channel_has_a_sharded_form() -> None:
    """Seed and the presence scripts publish with SPUBLISH on a cluster, on the same KEYS channel."""
    for script in (logscripts.SEED, presence._JOIN, presence._LEAVE, presence._SWEEP):
        sharded = sharded_script(script)
        assert "'PUBLISH'" not in sharded
        assert sharded.count("'SPUBLISH'") == script.count("'PUBLISH'") >= 1


def test_changed_scripts_are_refused_with_the_fix() -> None:
    """A script without a room-channel publish, or an append script without its one SADD, raises ValueError
    naming what to update (so a change to the Lua cannot silently break cluster mode)."""
    with pytest.raises(ValueError, match="publishes on no KEYS channel"):
        sharded_script("return 1")
    with pytest.raises(ValueError, match=r"update chat\.clusterlog\.cluster_append_script"):
        cluster_append_script("redis.call('PUBLISH', KEYS[4], 'x')")


def test_message_log_is_the_cluster_one_only_for_a_cluster_client() -> None:
    """message_log gives ClusterMessageLog for a RedisCluster client and the plain MessageLog otherwise."""
    single = aioredis.Redis()
    cluster = KaiwaRedisCluster(startup_nodes=[ClusterNode("127.0.0.1", 1)])
    try:
        plain = message_log(single, dedup_seconds=60, stream_keep=10)
        sharded = message_log(cluster, dedup_seconds=60, stream_keep=10)
        assert type(plain) is MessageLog
        assert isinstance(sharded, ClusterMessageLog)
    finally:
        asyncio.run(single.aclose())
        asyncio.run(cluster.aclose())
