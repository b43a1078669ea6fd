"""The message log on a Redis Cluster (``KAIWA_REDIS_MODE=cluster``): only what differs from one Redis.

A Lua script may touch keys of one slot only, and every key of a room carries
the room's hash tag, so the append script runs on the room's node as it is,
except for the two keys that are not the room's:

* The sender's rate bucket lives in the *user's* slot. ``TAKE`` takes the token
  there first, then the append runs without a bucket; an append that took
  nothing (a duplicate, a refused epoch) gives the token back (``REFUND``). The
  bucket stays one per user, exact across processes, rooms and slots, at the
  cost of a second round trip per send while a rate limit is set
  (docs/redis-deployments.md, "Rate limit on a cluster", has the figures and
  the alternatives that were rejected).
* The set of rooms the worker reads (``ROOMS_KEY``) lives in one slot. A
  process adds a room to it before its first append there (and again after
  ``REGISTER_AGAIN_SECONDS``, which repairs a registration lost in a failover
  with ``KAIWA_ACK_REPLICAS=0``), with the same ``WAIT`` as the append.

Room events go out on sharded pub/sub (``SPUBLISH``, Redis 7): a message reaches
only the processes subscribed to that room's channel, on the room's node.
``sharded_script`` turns any script that publishes on a room channel into its
cluster form.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from chat.logkeys import ROOMS_KEY, room_id_from_stream_key
from chat.logscripts import TAKE_TOKEN
from chat.messagelog import MessageLog
from chat.redistopology import call_script_with_replicas

REGISTER_AGAIN_SECONDS = 60.0

# KEYS: bucket   ARGV: burst, per_second -> 0 a token taken | the ms until one is back (nothing taken)
# The append script's bucket rule, alone, on the user's slot (Redis's clock).
TAKE = (
    TAKE_TOKEN
    + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return take_token(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]) / 1000, now)
"""
)

# KEYS: bucket   ARGV: burst -> 1 given back | 0 the bucket is gone (it was full anyway)
REFUND = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens == nil then return 0 end
redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(tonumber(ARGV[1]), tokens + 1)))
return 1
"""

# KEYS: rooms   ARGV: room id
REGISTER = "return redis.call('SADD', KEYS[1], ARGV[1])"

_PUBLISH = "redis.call('PUBLISH', KEYS["
_SPUBLISH = "redis.call('SPUBLISH', KEYS["
_REGISTER_LINE = "redis.call('SADD', KEYS[6], ARGV[4])\n"


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


def sharded_script(script: str) -> str:
    """``script`` with every publish on a KEYS channel made a sharded publish (SPUBLISH, Redis 7)."""
    if _PUBLISH not in script:
        raise ValueError("the script publishes on no KEYS channel: nothing to shard (was it changed?)")
    return script.replace(_PUBLISH, _SPUBLISH)


def cluster_append_script(script: str) -> str:
    """The append script for a cluster: sharded publish, and no registration in ``ROOMS_KEY`` (another slot)."""
    if script.count(_REGISTER_LINE) != 1:
        raise ValueError(
            "chat.logscripts.APPEND no longer has its one SADD of the room into KEYS[6]: "
            "update chat.clusterlog.cluster_append_script with it"
        )
    return sharded_script(script.replace(_REGISTER_LINE, ""))


class ClusterMessageLog(MessageLog):
    """``MessageLog`` on a ``RedisCluster``: the append's keys all in the room's slot, the rest around it."""

    def __init__(self, client: aioredis.Redis, **options: Any) -> None:
        super().__init__(client, **options)
        from chat import logscripts

        self._append = client.register_script(cluster_append_script(logscripts.APPEND))
        self._seed = client.register_script(sharded_script(logscripts.SEED))
        self._take = client.register_script(TAKE)
        self._refund = client.register_script(REFUND)
        self._register = client.register_script(REGISTER)
        self._registered: dict[int, float] = {}

    async def _run_append(self, keys: list[str], args: list[str | int]) -> Any:
        # keys: seq, stream, dedup, channel, bucket (the user's slot), rooms (its own slot), epoch, ...
        # args: epoch/known, ttl, has_dedup, room_id, slug, burst, per_second, fields...
        bucket = keys[4]
        burst, per_second = args[5], args[6]
        room_keys = [*keys[:4], keys[0], keys[0], *keys[6:]]  # the two foreign keys: declared, never touched
        room_args = [*args[:5], "", "", *args[7:]]
        await self._ensure_registered(room_id_from_stream_key(keys[1]))
        took = False
        if burst != "":
            wait = int(await self._take(keys=[bucket], args=[burst, per_second]))
            if wait > 0:
                seen = await self.client.get(keys[2]) if args[2] == "1" else None
                if seen is None:
                    return [-2, wait, 0]
                # A re-send of a message already appended: the original, as the one-slot script answers.
                seq, _, ts = (seen.decode() if isinstance(seen, bytes) else str(seen)).partition(":")
                return [0, int(seq), int(ts)]
            took = True
        # An append that raised keeps its token: it may have run (a timeout, too few replicas in time).
        reply = await super()._run_append(room_keys, room_args)
        if took and int(reply[0]) != 1:
            await self._refund(keys=[bucket], args=[burst])
        return reply

    async def _ensure_registered(self, room_id: int) -> None:
        now = time.monotonic()
        if now - self._registered.get(room_id, -REGISTER_AGAIN_SECONDS) < REGISTER_AGAIN_SECONDS:
            return
        replicated = await call_script_with_replicas(
            self.client,
            self._register,
            keys=[ROOMS_KEY],
            args=[room_id],
            replicas=self.ack_replicas,
            timeout_ms=self.ack_timeout_ms,
        )
        replicated.confirmed_reply()
        self._registered[room_id] = now


def message_log(client: Any, **options: Any) -> MessageLog:
    """The process's ``MessageLog`` for its client's deployment (cluster or not)."""
    if is_cluster(client):
        return ClusterMessageLog(client, **options)
    return MessageLog(client, **options)
