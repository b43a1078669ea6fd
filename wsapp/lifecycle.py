"""A server process's end: signals, in-flight sends, and the graceful close of every socket with 1012.

uvicorn, on SIGTERM, sends 1012 to every socket itself and only then runs the
lifespan shutdown, so in-flight sends could never be acked. We take the
signal first, refuse new sends, let the ones in flight be acked or refused,
close every socket with 1012 (after what is already queued), and only then
hand the signal to uvicorn. The lifespan (``wsapp.app``) starts and stops it
through the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from django.conf import settings

from wsapp.errors import Close, unavailable

if TYPE_CHECKING:
    from wsapp.hub import Hub

logger = logging.getLogger("kaiwa.hub")


class Lifecycle:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.accepting = True
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._shutdown_task: asyncio.Task[None] | None = None
        self._signal_previous: dict[int, Any] = {}

    @contextlib.contextmanager
    def send_slot(self) -> Iterator[None]:
        """Count a send in flight (graceful shutdown waits for it); refuse it once shutting down."""
        if not self.accepting:
            raise unavailable("The server is restarting; re-send with the same client_id after reconnecting.")
        self.inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()

    async def shutdown(self) -> None:
        """Refuse new sends, let in-flight ones be acked or refused, then close every socket with 1012.

        Bounded by ``KAIWA_SHUTDOWN_GRACE_SECONDS``.
        """
        if not self.accepting:
            return
        self.accepting = False
        connections = self.hub.connections
        grace = settings.KAIWA_SHUTDOWN_GRACE_SECONDS
        deadline = time.monotonic() + grace
        logger.info("graceful shutdown: %d sockets, %d sends in flight", len(connections), self.inflight)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        for conn in list(connections):
            conn.close(Close.RESTART, flush=True)
        remaining = max(0.1, deadline - time.monotonic())
        waits = [asyncio.ensure_future(conn.wait_ended()) for conn in list(connections)]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=remaining)
            for fut in pending:
                fut.cancel()
        logger.info("graceful shutdown: sockets closed with 1012")

    async def finish_shutdown(self) -> None:
        """The lifespan's exit: shut down unless a signal already did, then give the signals back."""
        if self._shutdown_task is None:
            await self.shutdown()
        else:
            with contextlib.suppress(Exception):
                await self._shutdown_task
        self._remove_signal_handlers()

    def install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous) or previous is signal.default_int_handler:
                continue
            self._signal_previous[sig] = previous
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, previous in self._signal_previous.items():
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous)
        self._signal_previous.clear()

    def _on_signal(self, sig: int) -> None:
        previous: Callable[[int, Any], None] = self._signal_previous[sig]
        if self._shutdown_task is not None:
            previous(sig, None)  # a second signal: let uvicorn force its way out
            return
        logger.info("signal %s: draining before shutdown", signal.Signals(sig).name)

        async def drain_then_exit() -> None:
            try:
                await self.shutdown()
            finally:
                previous(sig, None)

        self._shutdown_task = asyncio.create_task(drain_then_exit(), name="hub-shutdown")
