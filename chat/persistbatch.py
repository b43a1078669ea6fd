"""The persistence worker's batch: entries read and not yet written, closed by size or by time.

Also the sweep that fills it with entries other consumers read and never
acknowledged (``claim_idle``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence

from chat.persistgroup import PendingEntry, PersistGroup

logger = logging.getLogger("kaiwa.worker")

CLAIM_ROOMS_PER_CALL = 50  # XAUTOCLAIMs pipelined together (bounds one sweep's memory too)


class Batch:
    def __init__(self, *, size: int, window_ms: int) -> None:
        self.size = size
        self.window_ms = window_ms
        # (stream, entry id) -> entry: a claim may hand back an entry already held.
        self._items: dict[tuple[str, str], PendingEntry] = {}
        self._started: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: Sequence[PendingEntry]) -> None:
        if not self._items:
            self._started = time.monotonic()
        for item in items:
            self._items[(item.stream, item.entry_id)] = item

    def holds(self, item: PendingEntry) -> bool:
        return (item.stream, item.entry_id) in self._items

    def pending(self) -> list[PendingEntry]:
        return list(self._items.values())

    def full(self) -> bool:
        return len(self._items) >= self.size

    def remaining_ms(self) -> int:
        """Time left in the batch's window (the whole window while it is empty)."""
        if self._started is None:
            return self.window_ms
        return int(self.window_ms - (time.monotonic() - self._started) * 1000)

    def clear(self) -> None:
        self._items.clear()
        self._started = None


async def claim_idle(
    log: PersistGroup,
    *,
    consumer: str,
    room_ids: list[int],
    min_idle_ms: int,
    count: int,
    stopping: Callable[[], bool],
) -> AsyncIterator[dict[int, list[PendingEntry]]]:
    """Entries idle longer than ``min_idle_ms``, taken over by ``consumer``: one dict (room -> entries) per call.

    Rooms that returned a full ``count`` may hold more and are asked again.
    """
    for start in range(0, len(room_ids), CLAIM_ROOMS_PER_CALL):
        chunk = room_ids[start : start + CLAIM_ROOMS_PER_CALL]
        while chunk and not stopping():
            taken, gone = await log.persist_claim_rooms(
                consumer=consumer, room_ids=chunk, min_idle_ms=min_idle_ms, count=count
            )
            if gone:
                logger.error(
                    "%d pending entries were deleted from their streams before anyone persisted them "
                    "(trimmed by hand?); they cannot be written and were dropped from the queue",
                    gone,
                )
            yield taken
            chunk = [rid for rid, items in taken.items() if len(items) >= count]
