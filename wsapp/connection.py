"""One client socket: its bounded outgoing queue and its single writer task.

Everything the server sends to a client (answers, errors, room events) is a
pre-serialised text frame put on the queue without awaiting; only the writer
task touches the socket. A queue past ``KAIWA_SEND_QUEUE_MAX_MESSAGES`` or
``KAIWA_SEND_QUEUE_MAX_BYTES`` means the client reads too slowly: the queue
is dropped and the connection closed with 1013, so one slow reader can
neither stall the fan-out nor grow the server's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from starlette.types import Send

from wsapp.errors import CLOSE_REASONS, Close

logger = logging.getLogger("kaiwa.ws")

# How long a close frame may wait for a client that does not read before the
# transport is dropped without one.
CLOSE_TIMEOUT_SECONDS = 10.0

_ids = itertools.count(1)


def encode(frame: dict[str, Any]) -> tuple[str, int]:
    """A frame serialised once, with its size in bytes (what the queue limit counts)."""
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    return text, len(text.encode("utf-8"))


@dataclass
class RoomMembership:
    room_id: int
    slug: str
    last_typing: float = 0.0


@dataclass(eq=False)
class Connection:
    send: Send
    user_id: int
    username: str
    session_key: str
    user: Any = None
    # When the session was checked (time.monotonic()): a revocation handled after it is re-checked.
    checked_at: float = 0.0
    id: int = field(default_factory=lambda: next(_ids))
    rooms: dict[str, RoomMembership] = field(default_factory=dict)  # by slug
    close_code: int | None = None
    close_reason: str = ""
    max_messages: int = 0
    max_bytes: int = 0
    _queue: deque[tuple[str, int]] = field(default_factory=deque)
    _queued_bytes: int = 0
    # Frames held back by the hub while a backlog is replayed (see Hub.join):
    # they count against the same limits as the queue.
    held_messages: int = 0
    held_bytes: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _drained: asyncio.Event = field(default_factory=asyncio.Event)
    _writer: asyncio.Task[None] | None = None
    _closer: asyncio.Task[None] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    # The endpoint task reading this socket: cancelled when a close frame could
    # not be delivered in time (the client stopped reading altogether).
    reader: asyncio.Task[Any] | None = None
    abandoned: bool = False

    def __post_init__(self) -> None:
        self.max_messages = settings.KAIWA_SEND_QUEUE_MAX_MESSAGES
        self.max_bytes = settings.KAIWA_SEND_QUEUE_MAX_BYTES

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")

    @property
    def open(self) -> bool:
        return self.close_code is None

    def put(self, text: str, nbytes: int) -> bool:
        """Queue one frame without waiting; on overflow close 1013. Returns whether it was queued."""
        if self.close_code is not None:
            return False
        if not self.has_room(nbytes):
            logger.warning(
                "connection %s (user %s) reads too slowly: %d frames / %d bytes queued (%d / %d held); "
                "closing with 1013",
                self.id,
                self.user_id,
                len(self._queue),
                self._queued_bytes,
                self.held_messages,
                self.held_bytes,
            )
            self.close(Close.TRY_AGAIN)
            return False
        self._queue.append((text, nbytes))
        self._queued_bytes += nbytes
        self._wake.set()
        return True

    def put_frame(self, frame: dict[str, Any]) -> bool:
        return self.put(*encode(frame))

    def has_room(self, nbytes: int) -> bool:
        """Whether one more frame of ``nbytes`` fits under the limits (queued and held frames together)."""
        return (
            len(self._queue) + self.held_messages < self.max_messages
            and self._queued_bytes + self.held_bytes + nbytes <= self.max_bytes
        )

    async def wait_room(self, nbytes: int, patience: float) -> bool:
        """Wait until a frame of ``nbytes`` fits (the writer drains the queue); False if closed or timed out.

        Used to pace a backlog into the queue at the pace the client reads it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            if self.close_code is not None or self.closed.is_set():
                return False
            if self.has_room(nbytes) or (not self._queue and self.held_messages == 0):
                # An empty queue always takes one frame (a frame larger than the byte limit
                # would otherwise wait forever; put() refuses it with 1013 as before).
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._drained.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._drained.wait()
            except TimeoutError:
                return False

    @property
    def queued(self) -> tuple[int, int]:
        return len(self._queue), self._queued_bytes

    def close(self, code: int, reason: str = "", *, flush: bool = False) -> None:
        """Close with ``code``; ``flush`` first sends what is already queued (graceful shutdown)."""
        if self.close_code is not None:
            return
        self.close_code = int(code)
        self.close_reason = reason or CLOSE_REASONS.get(code, "")
        if flush and self._writer is not None and not self._writer.done():
            self._wake.set()  # the writer drains the queue, then sends the close frame
            return
        self._queue.clear()
        self._queued_bytes = 0
        self._drained.set()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self._closer = asyncio.create_task(self._send_close(), name=f"ws-closer-{self.id}")

    async def _write_loop(self) -> None:
        try:
            while True:
                while self._queue:
                    text, nbytes = self._queue.popleft()
                    self._queued_bytes -= nbytes
                    self._drained.set()
                    await self.send({"type": "websocket.send", "text": text})
                if self.close_code is not None:
                    break
                self._wake.clear()
                await self._wake.wait()
        except (OSError, RuntimeError):
            # The client is gone (uvicorn raises ClientDisconnected, an OSError).
            self.closed.set()
            self._drained.set()
            return
        await self._send_close()

    async def _send_close(self) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self.send({"type": "websocket.close", "code": self.close_code, "reason": self.close_reason})
            logger.debug("connection %s: close %s sent", self.id, self.close_code)
        except TimeoutError:
            logger.warning(
                "connection %s: the client read nothing for %.0f s; dropping it without a close frame",
                self.id,
                CLOSE_TIMEOUT_SECONDS,
            )
            self.abandoned = True
            if self.reader is not None and not self.reader.done():
                self.reader.cancel()
        except (OSError, RuntimeError):
            pass
        finally:
            self.closed.set()

    async def finish(self) -> None:
        """Stop the tasks once the client is gone (the reader saw the disconnect)."""
        if self.close_code is None:
            self.close_code = Close.NORMAL
        self._queue.clear()
        self._queued_bytes = 0
        self._drained.set()
        for task in (self._writer, self._closer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.closed.set()


class FrameBudget:
    """Inbound limits of one connection: a token bucket for frames, a window for bad frames."""

    def __init__(self) -> None:
        self.burst = float(settings.KAIWA_FRAME_RATE_BURST)
        self.rate = float(settings.KAIWA_FRAME_RATE_PER_SECOND)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.bad_limit = settings.KAIWA_BAD_FRAMES_PER_MINUTE
        self.bad: deque[float] = deque()

    def take_frame(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def bad_frame(self) -> bool:
        """Count a bad frame; False once more than the per-minute allowance arrived."""
        now = time.monotonic()
        while self.bad and now - self.bad[0] > 60:
            self.bad.popleft()
        self.bad.append(now)
        return len(self.bad) <= self.bad_limit
