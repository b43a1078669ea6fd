"""One client socket: its bounded outgoing queue and its single writer task.

Everything the server sends to a client (answers, errors, room events) is a
pre-serialised text frame handed to ``put`` without awaiting. A queue past
``KAIWA_SEND_QUEUE_MAX_MESSAGES`` or ``KAIWA_SEND_QUEUE_MAX_BYTES`` means the
client reads too slowly: the queue is dropped and the connection closed with
1013, so one slow reader can neither stall the fan-out nor grow the server's
memory.

Write-through (``KAIWA_WS_WRITE_THROUGH``, on by default): while nothing is
queued and no send is under way, ``put`` starts the ASGI send coroutine
itself and steps it once. uvicorn completes a send without suspending unless
the socket pushes back (its transport is paused), so in the common case the
frame is written at once and no task has to wake up (that wake-up per member
per message was measured: docs/architecture.md, "Measured reasons"). A send
that does suspend is handed to the writer task, which finishes it, then sends
what queued behind it, in order. With the setting off, every frame goes
through the queue and the writer task's plain ``await send(...)``: slower,
but it relies on nothing about how the server's ``send`` coroutine suspends
(see docs/architecture.md, "Write-through").

The writer task exists only while there is such work: it is started when a
send has to wait and ends when the queue is empty. An idle socket holds no
writer task, no queue and no ``asyncio.Event`` (``Flag`` is its lazy
stand-in), which keeps idle memory per socket low (docs/performance.md,
idle connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from django.conf import settings
from starlette.types import Send

from wsapp.errors import CLOSE_REASONS, Close
from wsapp.frames import encode

logger = logging.getLogger("kaiwa.ws")

# How long a close frame may wait for a client that does not read before the
# transport is dropped without one.
CLOSE_TIMEOUT_SECONDS = 10.0

_ids = itertools.count(1)


class Flag:
    """``asyncio.Event``'s set/clear/wait, allocating only when someone waits.

    An ``asyncio.Event`` allocates its waiter deque (over 600 bytes) up front.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class Phase(Enum):
    """Where a connection is in its closing: one field instead of several flags."""

    OPEN = "open"
    CLOSING = "closing"  # a close code is chosen; the close frame (or the flush before it) is under way
    CLOSED = "closed"  # the close frame was sent, or the socket failed: nothing more is written
    ABANDONED = "abandoned"  # the client read nothing while the close frame waited: its reader was cancelled


# Module constants: reading an Enum member through its class costs several times a
# global lookup, and ``put`` checks the phase once per delivered frame.
_OPEN = Phase.OPEN
_CLOSED = Phase.CLOSED
_ABANDONED = Phase.ABANDONED


@dataclass(slots=True)
class Subscription:
    """A chat room this connection has joined (``Connection.subscriptions``, by slug)."""

    room_id: int
    slug: str
    last_typing: float = 0.0
    present: bool = True  # joined with presence (protocol.md 7.5): makes the user present in the room


@dataclass(eq=False, slots=True)
class Connection:
    send: Send
    user_id: int
    username: str
    session_key: str
    # When the session was checked (time.monotonic()): a revocation handled after it is re-checked.
    checked_at: float = 0.0
    id: int = field(default_factory=lambda: next(_ids))
    subscriptions: dict[str, Subscription] = field(default_factory=dict)  # by room slug
    phase: Phase = Phase.OPEN
    close_code: int | None = None  # chosen when the phase leaves OPEN by close()
    close_reason: str = ""
    max_messages: int = 0
    max_bytes: int = 0
    # Created on first use: most sockets never queue a frame.
    _queue: deque[tuple[str, int]] | None = None
    _queued_bytes: int = 0
    # Frames held back by the hub while a backlog is replayed (see Hub.join):
    # they count against the same limits as the queue.
    held_messages: int = 0
    held_bytes: int = 0
    _drained: Flag = field(default_factory=Flag)
    _writer: asyncio.Task[None] | None = None
    # True while a send is under way outside the caller's step: the writer is
    # suspended in one, or a written-through send waits for the writer to finish it.
    _busy: bool = False
    _pending: tuple[Coroutine[Any, Any, None], Any] | None = None
    _closer: asyncio.Task[None] | None = None
    _ended: Flag = field(default_factory=Flag)  # set when the phase reaches CLOSED or ABANDONED
    # The endpoint task reading this socket: cancelled when a close frame could
    # not be delivered in time (the client stopped reading altogether).
    reader: asyncio.Task[Any] | None = None

    # KAIWA_WS_WRITE_THROUGH, set once by the app's lifespan (a class attribute:
    # no per-socket memory, one lookup per frame).
    write_through: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.max_messages = settings.KAIWA_SEND_QUEUE_MAX_MESSAGES
        self.max_bytes = settings.KAIWA_SEND_QUEUE_MAX_BYTES

    @property
    def open(self) -> bool:
        return self.phase is _OPEN

    @property
    def ended(self) -> bool:
        """Nothing more will be written: the close frame went out, or the socket failed or was abandoned."""
        return self.phase is _CLOSED or self.phase is _ABANDONED

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def _end(self, phase: Phase) -> None:
        if not self.ended:
            self.phase = phase
        self._ended.set()

    def put(self, text: str, nbytes: int) -> bool:
        """Send or queue one frame without waiting; on overflow close 1013. Returns whether it was taken."""
        if self.phase is not _OPEN:
            return False
        if not self._queue and not self._busy and self.write_through and self.has_space(nbytes):
            self._write_through(text)
            return True
        if not self.has_space(nbytes):
            logger.warning(
                "connection %s (user %s) reads too slowly: %d frames / %d bytes queued (%d / %d held); "
                "closing with 1013",
                self.id,
                self.user_id,
                len(self._queue or ()),
                self._queued_bytes,
                self.held_messages,
                self.held_bytes,
            )
            self.close(Close.TRY_AGAIN)
            return False
        if self._queue is None:
            self._queue = deque()
        self._queue.append((text, nbytes))
        self._queued_bytes += nbytes
        self._start_writer()
        return True

    def put_frame(self, frame: dict[str, Any]) -> bool:
        return self.put(*encode(frame))

    def has_space(self, nbytes: int) -> bool:
        """Whether one more frame of ``nbytes`` fits under the limits (queued and held frames together)."""
        return (
            len(self._queue or ()) + self.held_messages < self.max_messages
            and self._queued_bytes + self.held_bytes + nbytes <= self.max_bytes
        )

    async def wait_for_space(self, nbytes: int, patience: float) -> bool:
        """Wait until a frame of ``nbytes`` fits (the writer drains the queue); False if closed or timed out.

        Used to pace a backlog into the queue at the pace the client reads it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        while True:
            if self.phase is not Phase.OPEN:
                return False
            if self.has_space(nbytes) or (not self._queue and self.held_messages == 0):
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
        return len(self._queue or ()), self._queued_bytes

    def close(self, code: int, reason: str = "", *, flush: bool = False) -> None:
        """Close with ``code``; ``flush`` first sends what is already queued (graceful shutdown)."""
        if self.phase is not Phase.OPEN:
            return
        self.phase = Phase.CLOSING
        self.close_code = int(code)
        self.close_reason = reason or CLOSE_REASONS.get(code, "")
        if flush and self._writer is not None and not self._writer.done():
            return  # the writer drains the queue, then sends the close frame
        self._drop_queue()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self._closer = asyncio.create_task(self._send_close(), name=f"ws-closer-{self.id}")

    def _drop_queue(self) -> None:
        self._queue = None
        self._queued_bytes = 0
        self._drained.set()
        if self._pending is not None:
            self._pending[0].close()
            self._pending = None
        self._busy = False

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name=f"ws-writer-{self.id}")

    def _write_through(self, text: str) -> None:
        sending = self.send({"type": "websocket.send", "text": text})
        coro = sending if isinstance(sending, Coroutine) else _awaited(sending)
        try:
            waiting = coro.send(None)
        except StopIteration:
            return  # written
        except Exception as exc:
            self._lost(exc)
            return
        # The send waits for the socket to drain: the writer task finishes it.
        self._busy = True
        self._pending = (coro, waiting)
        self._start_writer()

    def _lost(self, exc: BaseException) -> None:
        """The socket failed under a send: stop writing (the reader sees the disconnect and finishes)."""
        if not isinstance(exc, OSError | RuntimeError):
            # uvicorn raises ClientDisconnected (an OSError), or RuntimeError after a close.
            logger.error("connection %s: sending failed: %r", self.id, exc)
        self._end(Phase.CLOSED)
        self._drop_queue()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()

    async def _write_loop(self) -> None:
        """Finish the send that had to wait, then the queue; end when it is empty."""
        try:
            if self._pending is not None:
                coro, waiting = self._pending
                await _resume(coro, waiting)
                self._pending = None
            while self._queue:
                text, nbytes = self._queue.popleft()
                self._queued_bytes -= nbytes
                self._drained.set()
                self._busy = True
                await self.send({"type": "websocket.send", "text": text})
            self._busy = False
        except Exception as exc:
            self._lost(exc)
            return
        if self.phase is Phase.CLOSING:
            await self._send_close()  # a graceful close waited for the queue

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
            self._end(Phase.ABANDONED)
            if self.reader is not None and not self.reader.done():
                self.reader.cancel()
        except (OSError, RuntimeError):
            pass
        finally:
            self._end(Phase.CLOSED)

    async def finish(self) -> None:
        """Stop the tasks once the client is gone (the reader saw the disconnect)."""
        if self.close_code is None:
            self.close_code = Close.NORMAL
        self._drop_queue()
        for task in (self._writer, self._closer):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._end(Phase.CLOSED)


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


async def _resume(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Run a started coroutine to its end from the current task.

    ``waiting`` is what it last yielded: the future it waits for, as an
    asyncio task would see it (or None, a bare yield). Closed if this task is
    cancelled meanwhile.
    """
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await asyncio.wait((waiting,))
            waiting = coro.send(None)
    except StopIteration:
        return
    except BaseException:
        coro.close()
        raise
