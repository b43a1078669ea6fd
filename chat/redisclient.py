"""Redis clients, made from settings when a process starts (never at import).

One pool per process: the FastAPI lifespan makes the async client and hands it
to everything that needs it. Blocking readers (XREADGROUP BLOCK, pub/sub) get
clients of their own with no socket timeout, since redis-py would otherwise
time out an idle blocking read and silently re-send it.
"""

from __future__ import annotations

import threading

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

_sync_client: redis.Redis | None = None
_sync_lock = threading.Lock()


def make_async_client(*, blocking_reads: bool = False) -> aioredis.Redis:
    """The process's async client, or (``blocking_reads``) a one-connection one."""
    # No automatic retries: an append that timed out after Redis ran it must
    # not be sent again blindly; callers decide (and dedup makes it safe).
    common = {
        "socket_connect_timeout": 2,
        "retry": AsyncRetry(NoBackoff(), 0),
        "health_check_interval": 0 if blocking_reads else 30,
    }
    if blocking_reads:
        pool = aioredis.ConnectionPool.from_url(settings.REDIS_URL, max_connections=1, socket_timeout=None, **common)
    else:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=settings.KAIWA_REDIS_POOL_SIZE,
            timeout=5,
            socket_timeout=5,
            **common,
        )
    return aioredis.Redis(connection_pool=pool)


def sync_client() -> redis.Redis:
    """A small sync client for code that runs outside the event loop (signals)."""
    global _sync_client
    with _sync_lock:
        if _sync_client is None:
            _sync_client = redis.Redis.from_url(
                settings.REDIS_URL,
                socket_connect_timeout=2,
                socket_timeout=5,
                retry=Retry(NoBackoff(), 1),
                max_connections=4,
            )
        return _sync_client
