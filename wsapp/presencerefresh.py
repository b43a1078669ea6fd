"""Keeping this process's presence entries alive, and sweeping those of crashed processes.

Every third of ``KAIWA_PRESENCE_TTL_SECONDS`` the hub's users in each room get
their entry's expiry pushed forward; entries that went missing meanwhile (an
outage swept them, or Redis lost its data) are joined again, which announces
the user again if they were gone; then expired entries of other processes are
swept (and their users announced as left).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from django.conf import settings
from redis.exceptions import RedisError

if TYPE_CHECKING:
    from wsapp.hub import Hub

logger = logging.getLogger("kaiwa.hub")


async def presence_refresh_loop(hub: Hub) -> None:
    interval = settings.KAIWA_PRESENCE_TTL_SECONDS / 3
    while True:
        await asyncio.sleep(interval)
        try:
            await refresh_once(hub)
        except (RedisError, OSError) as exc:
            logger.warning("presence refresh failed (%r); retrying in %.1f s", exc, interval)
        except Exception:
            logger.exception("presence refresh failed")


async def refresh_once(hub: Hub) -> None:
    entries = [
        (state.room_id, uid, conns[0].username)
        for state in list(hub.rooms.values())
        for uid, conns in list(state.present.items())
        if conns
    ]
    missing = await hub.presence.refresh(entries)
    for room_id, uid, username in missing:
        state = hub.rooms.get(room_id)
        if state is not None and state.present.get(uid):
            await hub.presence.join(room_id=room_id, user_id=uid, username=username)
    await hub.presence.sweep(list(hub.rooms))
