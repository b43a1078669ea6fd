"""Each user's upload budget, counted in Django's cache (the Redis every server process shares).

``KAIWA_UPLOAD_RATE_BURST`` uploads per window of ``burst / per_minute``
minutes: with the defaults (20, 30 per minute), 20 at once, then the next 20
after 40 seconds, which is 30 a minute on average. A fixed window is one
atomic ``INCR`` per upload; the price is that two bursts may meet at a
window's edge, which a budget meant to stop a flood can afford.

If the cache cannot be reached the upload is let through (and a warning
logged): the budget protects the server, it must not lock every user out.
"""

from __future__ import annotations

import logging
import math
import time

from django.conf import settings
from django.core.cache import cache
from redis.exceptions import RedisError

logger = logging.getLogger("kaiwa.attachments")

_PREFIX = "uploads"


def window_seconds() -> float:
    return settings.KAIWA_UPLOAD_RATE_BURST * 60.0 / settings.KAIWA_UPLOAD_RATE_PER_MINUTE


async def acharge_upload(*, user_id: int, now: float | None = None) -> int | None:
    """Count one upload for ``user_id``; ``None`` if allowed, else the seconds to wait (at least 1)."""
    window = window_seconds()
    now = time.time() if now is None else now
    index = math.floor(now / window)
    key = f"{_PREFIX}:{user_id}:{index}"
    timeout = math.ceil(window) + 1
    try:
        await cache.aadd(key, 0, timeout=timeout)
        count = await cache.aincr(key)
    except (RedisError, OSError, ValueError) as exc:
        # ValueError: the key expired between add and incr (a window just ended).
        logger.warning("upload budget not checked for user %s: %s", user_id, exc)
        return None
    if count <= settings.KAIWA_UPLOAD_RATE_BURST:
        return None
    return max(1, math.ceil((index + 1) * window - now))
