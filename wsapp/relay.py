"""The relay: this process's one pub/sub connection, with typed callbacks out.

A socket never owns a Redis connection: one ``RedisRelay`` per process holds
ONE PubSub connection, subscribed to the control channel and to the channel
of every room that has members here. One supervised task reads it; a lost
connection is reconnected with backoff (every channel subscribed again), a
silent one gets a PING and is treated as dead if it stays silent. Messages
published while the relay was away are lost (Redis pub/sub keeps nothing):
the listener learns of every (re)subscription through ``on_subscribed`` and
repairs from the stream.

Events go to the listener by direct calls from the read loop (no queue, no
task per event): the fan-out of a message runs in the same step as its read.
``wsapp.memoryrelay.MemoryRelay`` is the in-process twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chat import metrics

logger = logging.getLogger("kaiwa.relay")

# A pub/sub connection that carried nothing for this long gets a PING; one that
# stays silent for twice as long is treated as dead and reconnected.
IDLE_PING_SECONDS = 10.0
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0


class RelayListener(Protocol):
    """What the relay tells its owner (the hub)."""

    async def on_subscribed(self, channel: str) -> None:
        """``channel``'s subscription is confirmed: first time, or again after a reconnect."""

    async def on_event(self, channel: str, data: bytes | str) -> None:
        """One event published on ``channel`` (``chat.events`` decodes it)."""


class Relay(Protocol):
    """One pub/sub connection per process: ``RedisRelay``, or ``MemoryRelay`` in-process."""

    @property
    def connected(self) -> bool:
        """Whether the subscription is live now (a subscribe made now is confirmed promptly)."""

    async def start(self, listener: RelayListener) -> None:
        """Connect in the background; ``listener`` gets every confirmation and event from then on."""

    async def stop(self) -> None: ...

    async def subscribe(self, channel: str) -> None:
        """Add ``channel``; its confirmation arrives as ``on_subscribed``. Raises when not connected."""

    def unsubscribe(self, channel: str) -> None:
        """Drop ``channel``: no event of it reaches the listener from now on (a subscribe again wins)."""

    async def publish(self, channel: str, data: str) -> None: ...


class Silence:
    """The idle rule of a pub/sub read loop: a PING after ``IDLE_PING_SECONDS`` of quiet, dead if still silent."""

    __slots__ = ("pinged", "since")

    def __init__(self) -> None:
        self.since = time.monotonic()
        self.pinged = False

    def heard(self) -> None:
        self.since = time.monotonic()
        self.pinged = False

    async def quiet(self, pubsub: Any) -> None:
        """A read timed out: PING once; raise ``TimeoutError`` after twice the idle time with the PING unanswered."""
        if time.monotonic() - self.since >= 2 * IDLE_PING_SECONDS and self.pinged:
            raise TimeoutError("pub/sub connection silent; assuming it is dead")
        if not self.pinged:
            await pubsub.ping()
            self.pinged = True


class SupervisedRelay:
    """What both Redis relays share: the channel set, the supervised task's start and stop, background tasks.

    A subclass gives ``_supervise`` (the reconnecting read loop, which sets and
    clears ``_live``) and may close connections of its own in ``_close_connections``.
    """

    _task_name = "relay"

    def __init__(self, client: Any, *, publisher: Any, always: tuple[str, ...] = ()) -> None:
        self._client = client
        self._publisher = publisher
        self.channels: set[str] = set(always)
        self._listener: RelayListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._live = asyncio.Event()

    async def start(self, listener: RelayListener) -> None:
        self._listener = listener
        self._task = asyncio.create_task(self._supervise(), name=self._task_name)

    async def wait_connected(self) -> None:
        await self._live.wait()

    async def stop(self) -> None:
        self._stopping = True
        for task in [t for t in (self._task, *self._background) if t is not None]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_connections()
        await self._client.aclose()

    async def _supervise(self) -> None:
        raise NotImplementedError

    async def _close_connections(self) -> None:
        """Connections the subclass opened beside ``_client``, closed at ``stop``."""

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


class RedisRelay(SupervisedRelay):
    """``Relay`` over one redis-py PubSub connection, reconnected by a supervised reader task."""

    _task_name = "relay-pubsub-reader"

    def __init__(self, client: aioredis.Redis, *, publisher: aioredis.Redis, always: tuple[str, ...] = ()) -> None:
        """``client``: a one-connection client without socket timeout (``make_async_client(blocking_reads=True)``),
        owned by the relay and used for the subscription only; ``publisher``: the process's pool.
        ``always``: channels subscribed for the relay's whole life (the control channel).
        """
        super().__init__(client, publisher=publisher, always=always)
        self._client: aioredis.Redis = client
        self._publisher: aioredis.Redis = publisher
        self._pubsub: Any = None

    @property
    def connected(self) -> bool:
        return self._pubsub is not None and self._live.is_set()

    async def subscribe(self, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is None or not self._live.is_set():
            raise ConnectionError("the pub/sub connection to Redis is down")
        self.channels.add(channel)
        await pubsub.subscribe(channel)

    def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        if self._pubsub is not None:
            self._spawn(self._unsubscribe(self._pubsub, channel))

    async def publish(self, channel: str, data: str) -> None:
        await self._publisher.publish(channel, data)

    async def _unsubscribe(self, pubsub: Any, channel: str) -> None:
        if channel in self.channels:
            return  # subscribed again meanwhile
        try:
            await pubsub.unsubscribe(channel)
        except (RedisError, OSError) as exc:
            logger.debug("unsubscribe %s failed (%r); the reconnect will drop it", channel, exc)

    async def _supervise(self) -> None:
        backoff = BACKOFF_FIRST_SECONDS
        while not self._stopping:
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)
            try:
                await pubsub.subscribe(*sorted(self.channels))
                self._pubsub = pubsub
                self._live.set()
                if backoff > BACKOFF_FIRST_SECONDS:
                    logger.info("pub/sub reconnected; resubscribed %d channels", len(self.channels))
                    metrics.relay_reconnected()
                backoff = BACKOFF_FIRST_SECONDS
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("pub/sub connection lost (%r); reconnecting in %.1f s", exc, backoff)
            except Exception:
                logger.exception("pub/sub reader failed; reconnecting in %.1f s", backoff)
            finally:
                self._live.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    async def _read(self, pubsub: Any) -> None:
        listener = self._listener
        assert listener is not None
        silence = Silence()
        while True:
            message = await pubsub.get_message(timeout=IDLE_PING_SECONDS)
            if message is None:
                await silence.quiet(pubsub)
                continue
            silence.heard()
            kind = message["type"]
            name = message["channel"]
            name = name.decode() if isinstance(name, bytes) else name
            if kind == "message":
                if name in self.channels:  # not one unsubscribed while its UNSUBSCRIBE is under way
                    await listener.on_event(name, message["data"])
            elif kind == "subscribe":
                if name in self.channels:
                    await listener.on_subscribed(name)
            elif kind == "unsubscribe" and name in self.channels:
                # An unsubscribe overtook a new subscribe of the same channel: subscribe
                # again (its confirmation repairs whatever was published meanwhile).
                self._spawn(pubsub.subscribe(name))
