"""The persistence worker's batch: entries read and not yet written, closed by size or by time."""

from __future__ import annotations

import time
from collections.abc import Sequence

from chat.persistgroup import PendingEntry


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
