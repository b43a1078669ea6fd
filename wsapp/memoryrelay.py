"""``MemoryRelay``: the relay's in-memory twin (the ``wsapp.relay.Relay`` protocol).

One per simulated server process, all on one ``chat.memorybroker.MemoryBroker``.
Like a Redis PubSub connection, it hands events to the listener one at a time
in the order they were published, confirms every subscription with
``on_subscribed``, and loses what was published while it was disconnected
(``drop_connection`` simulates that; it reconnects at once and confirms every
channel again, as ``RedisRelay`` does after a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from chat.memorybroker import MemoryBroker
from wsapp.relay import RelayListener

logger = logging.getLogger("kaiwa.relay")

_SUBSCRIBED = object()


class MemoryRelay:
    def __init__(self, broker: MemoryBroker, *, always: tuple[str, ...] = ()) -> None:
        self.broker = broker
        self.channels: set[str] = set(always)
        self._subscribed: set[str] = set()
        self._inbox: asyncio.Queue[tuple[str, object]] = asyncio.Queue()
        self._listener: RelayListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._live = False

    @property
    def connected(self) -> bool:
        return self._live

    async def start(self, listener: RelayListener) -> None:
        self._listener = listener
        self.broker.attach(self)
        self._connect()
        self._task = asyncio.create_task(self._read(), name="memory-relay")

    async def stop(self) -> None:
        self.broker.detach(self)
        self._live = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def subscribe(self, channel: str) -> None:
        if not self._live:
            raise ConnectionError("the in-memory relay is disconnected")
        self.channels.add(channel)
        self._subscribed.add(channel)
        self._inbox.put_nowait((channel, _SUBSCRIBED))

    def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        self._subscribed.discard(channel)

    async def publish(self, channel: str, data: str) -> None:
        if not self._live:
            raise ConnectionError("the in-memory relay is disconnected")
        self.broker.publish(channel, data)

    # -- the broker's side --------------------------------------------------------

    def subscribed_to(self, channel: str) -> bool:
        return self._live and channel in self._subscribed

    def push(self, channel: str, data: str) -> None:
        self._inbox.put_nowait((channel, data))

    # -- faults and synchronisation (tests) --------------------------------------------

    def drop_connection(self) -> None:
        """The connection is lost: whatever was not read yet is gone; reconnect and confirm every channel again."""
        self._live = False
        while not self._inbox.empty():
            self._inbox.get_nowait()
            self._inbox.task_done()
        self._connect()

    async def settle(self) -> None:
        """Wait until every event handed to this relay has been handled by its listener."""
        await self._inbox.join()

    def _connect(self) -> None:
        self._live = True
        self._subscribed = set(self.channels)
        for channel in sorted(self.channels):
            self._inbox.put_nowait((channel, _SUBSCRIBED))

    async def _read(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            channel, data = await self._inbox.get()
            try:
                if data is _SUBSCRIBED:
                    if channel in self.channels:
                        await listener.on_subscribed(channel)
                elif channel in self.channels:
                    assert isinstance(data, str)
                    await listener.on_event(channel, data)
            except Exception:
                # RedisRelay reconnects after a failure in its read loop: so does the twin.
                logger.exception("in-memory relay: listener failed; reconnecting")
                self.drop_connection()
            finally:
                self._inbox.task_done()
