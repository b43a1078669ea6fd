"""In-process server processes on the in-memory twins, and the one fault-injection layer for the relay.

Several ``Process``es (each a hub, its relay and presence, and the ``/ws``
endpoint) share one ``FaultyBroker`` (Redis pub/sub), one ``MemoryLog`` (the
Redis log) and one ``PresenceTable`` (the presence keys). Every event any twin
publishes reaches a relay through ``FaultyBroker.deliver``, where a test may
drop, duplicate or hold back (and later release in any order) what a process
receives. Tests drive sockets either directly (``Recorder`` + ``hub.join``) or
through the endpoint with asgiref's ``ApplicationCommunicator`` (``Client``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypeVar

from asgiref.testing import ApplicationCommunicator
from django.conf import settings

from chat.logkeys import CONTROL_CHANNEL
from chat.memorybroker import MemoryBroker, Subscriber
from chat.memorylog import MemoryLog
from chat.models import Room
from wsapp.connection import Connection
from wsapp.endpoint import Endpoint
from wsapp.hub import Hub
from wsapp.memorypresence import MemoryPresence, PresenceTable
from wsapp.memoryrelay import MemoryRelay

WAIT = 5.0


class FaultyBroker(MemoryBroker):
    """Test-only: the relay's faults, applied to every event on its way to one process's relay.

    ``drop`` / ``duplicate`` count the next deliveries to lose or to repeat;
    while ``holding``, deliveries are kept back until ``release(order)``.
    ``only``: limit the faults to one subscriber (one process).
    """

    def __init__(self) -> None:
        super().__init__()
        self.drop = 0
        self.duplicate = 0
        self.holding = False
        self.held: list[tuple[Subscriber, str, str]] = []
        self.only: Subscriber | None = None

    def deliver(self, subscriber: Subscriber, channel: str, data: str) -> None:
        if self.only is not None and subscriber is not self.only:
            subscriber.push(channel, data)
            return
        if self.drop > 0:
            self.drop -= 1
            return
        if self.holding:
            self.held.append((subscriber, channel, data))
            return
        subscriber.push(channel, data)
        if self.duplicate > 0:
            self.duplicate -= 1
            subscriber.push(channel, data)

    def release(self, order: Callable[[list[Any]], list[Any]] = list) -> None:
        """Deliver what was held, in ``order(held)`` (e.g. ``reversed`` to reorder)."""
        held, self.held, self.holding = self.held, [], False
        for subscriber, channel, data in order(held):
            subscriber.push(channel, data)


class Recorder:
    """An ASGI ``send`` that records the frames a connection writes; ``paused`` pushes back like a full socket."""

    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.writable = asyncio.Event()
        self.writable.set()

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        await self.writable.wait()
        self.messages.append(message)

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(m["text"]) for m in self.messages if m["type"] == "websocket.send"]

    def seqs(self, room: str) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] == "message" and f["room"] == room]

    @property
    def close_code(self) -> int | None:
        closes = [m["code"] for m in self.messages if m["type"] == "websocket.close"]
        return closes[-1] if closes else None


_users = itertools.count(1)
_tokens = itertools.count(1)


def connection(*, user_id: int | None = None, username: str | None = None) -> tuple[Recorder, Connection]:
    uid = next(_users) if user_id is None else user_id
    socket = Recorder()
    conn = Connection(send=socket, user_id=uid, username=username or f"user{uid}", session_key=f"s{uid}")
    return socket, conn


@dataclass
class Process:
    hub: Hub
    relay: MemoryRelay
    endpoint: Endpoint

    async def settle(self) -> None:
        """Every event published so far (and not held back) has been handled by this process."""
        async with asyncio.timeout(WAIT):
            await self.relay.settle()


@dataclass
class Cluster:
    """The shared "Redis" of several in-process server processes."""

    broker: FaultyBroker = field(default_factory=FaultyBroker)
    table: PresenceTable = field(default_factory=PresenceTable)
    log: MemoryLog | None = None
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = MemoryLog(self.broker, dedup_seconds=settings.KAIWA_DEDUP_SECONDS)

    async def start(self) -> Process:
        assert self.log is not None
        relay = MemoryRelay(self.broker, always=(CONTROL_CHANNEL,))
        presence = MemoryPresence(
            self.table,
            self.broker,
            process_id=f"p{len(self.processes)}",
            ttl_seconds=settings.KAIWA_PRESENCE_TTL_SECONDS,
        )
        hub = Hub(log=self.log, relay=relay, presence=presence)
        await hub.start()
        app = SimpleNamespace(state=SimpleNamespace(runtime=SimpleNamespace(hub=hub)))
        process = Process(hub=hub, relay=relay, endpoint=Endpoint(app))
        self.processes.append(process)
        await process.settle()
        return process

    async def settle(self) -> None:
        for process in self.processes:
            await process.settle()

    async def stop(self) -> None:
        for process in self.processes:
            await process.hub.stop()

    def room(self, pk: int = 1, slug: str = "lobby") -> Room:
        """An unsaved room (the hub needs only its id and slug) whose sequence the log already has.

        With a sequence in the log, the hub never asks the database for the room's start point.
        """
        assert self.log is not None
        self.log.seqs.setdefault(pk, 0)
        return Room(pk=pk, slug=slug, name=slug)

    def hold_range_reads(self) -> tuple[asyncio.Event, asyncio.Event]:
        """Make the log's range reads wait: returns (set when a read started, set it to let reads go on)."""
        log = self.log
        assert log is not None
        reading, gate = asyncio.Event(), asyncio.Event()
        original = log.read_range

        async def held(**kwargs: Any) -> list[Any]:
            reading.set()
            await gate.wait()
            return await original(**kwargs)

        log.read_range = held  # type: ignore[method-assign]
        return reading, gate

    async def append(self, room: Room, body: str, *, user_id: int = 999, client_id: str | None = None) -> int:
        """A message appended to the log (as another process's sender would), published at once."""
        assert self.log is not None
        result = await self.log.append(
            room_id=room.pk, slug=room.slug, user_id=user_id, username=f"user{user_id}", body=body,
            client_id=client_id, token=client_id or f"t{next(_tokens)}", floor=0,
        )  # fmt: skip
        return result.seq


class Client:
    """One WebSocket client of a process's ``/ws`` endpoint, through asgiref's ``ApplicationCommunicator``."""

    def __init__(self, process: Process, session_key: str | None) -> None:
        headers = [(b"host", b"testserver")]
        if session_key is not None:
            headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={session_key}".encode()))
        scope = {"type": "websocket", "path": "/ws", "headers": headers, "scheme": "ws", "subprotocols": []}
        self.communicator = ApplicationCommunicator(process.endpoint, scope)

    async def connect(self) -> dict[str, Any]:
        await self.communicator.send_input({"type": "websocket.connect"})
        return dict(await self.communicator.receive_output(WAIT))

    async def send(self, frame: dict[str, Any]) -> None:
        await self.communicator.send_input({"type": "websocket.receive", "text": json.dumps(frame)})

    async def receive(self) -> dict[str, Any]:
        """The next frame (a dict), or the close message itself (``{"type": "websocket.close", ...}``)."""
        message = await self.communicator.receive_output(WAIT)
        if message["type"] == "websocket.send":
            frame: dict[str, Any] = json.loads(message["text"])
            return frame
        return dict(message)

    async def receive_until(self, kind: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        skipped: list[dict[str, Any]] = []
        while True:
            frame = await self.receive()
            if frame["type"] == kind:
                return frame, skipped
            skipped.append(frame)

    async def disconnect(self) -> None:
        await self.communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.communicator.wait(WAIT)


T = TypeVar("T")


def run_scenario(scenario: Callable[[Cluster, Process], Awaitable[T]]) -> T:
    """Run ``scenario(cluster, process)`` on a fresh cluster with one started process; stop it afterwards."""

    async def main() -> T:
        cluster = Cluster()
        try:
            process = await cluster.start()
            async with asyncio.timeout(WAIT * 2):
                return await scenario(cluster, process)
        finally:
            await cluster.stop()

    return asyncio.run(main())
