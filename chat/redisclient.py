"""Redis clients, made from settings when a process starts (never at import).

One pool per process: the FastAPI lifespan makes the async client and hands it
to everything that needs it. Blocking readers (XREADGROUP BLOCK, pub/sub) get
clients of their own with no socket timeout, since redis-py would otherwise
time out an idle blocking read and silently re-send it.

The clients come from ``chat.redistopology`` for ``KAIWA_REDIS_MODE``: with
``sentinel`` every new connection asks the Sentinels for the master, so the
hub, the append path, the worker and the signal handlers follow a failover
without a restart (docs/redis-deployments.md); with ``cluster`` they are
``RedisCluster`` clients, and ``chat.clusterlog`` / ``wsapp.shardedrelay`` adapt
the log and the relay to them.
"""

from __future__ import annotations

from typing import cast

import redis
import redis.asyncio as aioredis

from chat import redistopology


def make_async_client(*, blocking_reads: bool = False) -> aioredis.Redis:
    """The process's async client, or (``blocking_reads``) a one-connection one."""
    return cast(aioredis.Redis, redistopology.make_async_client(blocking_reads=blocking_reads))


def sync_client() -> redis.Redis:
    """A small sync client for code that runs outside the event loop (signals)."""
    return cast(redis.Redis, redistopology.sync_client())
