"""Admission: how many handshakes and joins the event loop works on at once.

After a deploy every client reconnects at once. Each handshake and each
``join`` takes several Redis round trips, and every join announces its user
to the room. With all of them in flight together, every turn of the event
loop carries thousands of their steps: the listening socket is served seconds
apart, so the kernel's accept queue overflows (a client whose connection was
dropped there waits for TCP to retransmit: 1, 3, 7, 15 s), and the clients
already connected get their messages seconds late, behind the storm.

``Admission`` lets ``KAIWA_ADMISSION_CONCURRENCY`` of them run at a time,
first come first served. The others wait in a queue, which costs one future
each and no CPU; the loop's turns stay short, the accept queue is drained,
and a message to a connected client waits for at most that many handshake
steps. The limit bounds work in progress, not a rate: while the loop keeps
up, the slots are free and nobody waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Admission:
    """A first-come first-served gate of ``limit`` slots (one per hub, so per process)."""

    __slots__ = ("_slots", "waiting")

    def __init__(self, limit: int) -> None:
        self.waiting = 0  # callers queued for a slot now
        self._slots = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block (a handshake, or one ``join``)."""
        # A free slot is taken without suspending, so only a caller that waits is ever seen counted.
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
