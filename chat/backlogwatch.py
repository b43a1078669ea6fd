"""The persistence backlog, looked at regularly: a warning past ``KAIWA_WORKER_BACKLOG_WARN``, one when back."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from chat.persistgroup import PersistGroup

logger = logging.getLogger("kaiwa.worker")

CHECK_SECONDS = 10.0


class BacklogWatch:
    def __init__(self, warn: int) -> None:
        self.warn = warn
        self.checked_at = 0.0
        self.high = False

    def due(self) -> bool:
        return time.monotonic() - self.checked_at >= CHECK_SECONDS

    async def check(self, log: PersistGroup, rooms: Sequence[int]) -> None:
        self.checked_at = time.monotonic()
        total, oldest_ms = await log.backlog(rooms)
        oldest = "-" if oldest_ms is None else f"{oldest_ms / 1000:.1f} s"
        if total > self.warn:
            logger.warning(
                "persistence backlog: %d entries not yet in the database, oldest %s old (warning above %d, "
                "KAIWA_WORKER_BACKLOG_WARN); add workers or check the database",
                total,
                oldest,
                self.warn,
            )
            self.high = True
        elif self.high:
            logger.warning("persistence backlog back to %d entries (oldest %s old)", total, oldest)
            self.high = False
