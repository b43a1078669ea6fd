"""Figures a process samples every ``KAIWA_METRICS_SAMPLE_SECONDS`` instead of counting on the hot path.

Outgoing queue depth changes with every frame written: it is summed over this
process's sockets now and then rather than tracked per frame. The same loop
records whether the relay is connected and one PING's round trip to Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from chat import metrics

if TYPE_CHECKING:
    from wsapp.hub import Hub

logger = logging.getLogger("kaiwa.metrics")


def sample_queues(hub: Hub) -> tuple[int, int]:
    """(frames queued or held over all sockets, the most on one socket)."""
    total = deepest = 0
    for conn in hub.connections:
        frames = conn.queued[0] + conn.held_messages
        total += frames
        if frames > deepest:
            deepest = frames
    return total, deepest


async def sample_once(hub: Hub, redis: aioredis.Redis) -> None:
    total, deepest = sample_queues(hub)
    metrics.sampled(queued_frames=total, queued_max=deepest, relay_connected=hub.relay.connected)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.KAIWA_READY_TIMEOUT_SECONDS):
            await redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        logger.debug("sampled PING to Redis failed: %r", exc)
        metrics.redis_roundtrip(None)
    else:
        metrics.redis_roundtrip(time.perf_counter() - started)


async def sample_loop(hub: Hub, redis: aioredis.Redis) -> None:
    """Until cancelled (the lifespan's end)."""
    while True:
        try:
            await sample_once(hub, redis)
        except Exception:
            logger.exception("sampling the metrics failed; trying again in %g s", settings.KAIWA_METRICS_SAMPLE_SECONDS)
        await asyncio.sleep(settings.KAIWA_METRICS_SAMPLE_SECONDS)
