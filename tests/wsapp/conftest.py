"""Helpers for /ws tests: real uvicorn processes, real Redis, the ``websockets`` client."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from django.conf import settings
from django.test import Client as DjangoClient
from websockets.asyncio.client import ClientConnection

from chat.models import Room

TIMEOUT = 10.0
PASSWORD = "correct horse battery"
# Server env for tests that send faster than a person: the per-user and
# per-connection rate limits out of the way, every other limit at its default.
UNLIMITED_RATES = {
    "KAIWA_RATE_BURST": "100000",
    "KAIWA_RATE_PER_SECOND": "100000",
    "KAIWA_FRAME_RATE_BURST": "100000",
    "KAIWA_FRAME_RATE_PER_SECOND": "100000",
}


def session_cookie(user: Any, password: str = PASSWORD) -> str:
    """Log ``user`` in through Django and return their session key."""
    client = DjangoClient()
    assert client.login(username=user.get_username(), password=password)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


# Every client connection a test opened; the ``aio`` fixture closes them all,
# so a failing test does not leak sockets into the next one.
_OPENED: list[ClientConnection] = []


async def connect(url: str, session: str | None = None, *, origin: str | None = None, **kw: Any) -> ClientConnection:
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"} if session else {}
    ws = await asyncio.wait_for(
        websockets.connect(url, additional_headers=headers, origin=origin, open_timeout=TIMEOUT, **kw),  # type: ignore[arg-type]
        TIMEOUT,
    )
    _OPENED.append(ws)
    return ws


async def recv(ws: ClientConnection, wait: float = TIMEOUT) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), wait)
    assert isinstance(raw, str)
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def recv_until(
    ws: ClientConnection, predicate: Callable[[dict[str, Any]], bool], wait: float = TIMEOUT
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read frames until one matches; returns it and the frames skipped before it."""
    skipped: list[dict[str, Any]] = []
    async with asyncio.timeout(wait):
        while True:
            frame = await recv(ws, wait)
            if predicate(frame):
                return frame, skipped
            skipped.append(frame)


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await asyncio.wait_for(ws.send(json.dumps(frame)), TIMEOUT)


async def join(ws: ClientConnection, room: str, since: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "join", "room": room}
    if since is not None:
        frame["since"] = since
    await send(ws, frame)
    joined, _ = await recv_until(ws, lambda f: f["type"] in ("joined", "error"))
    assert joined["type"] == "joined", joined
    return joined


async def close_code(ws: ClientConnection, wait: float = TIMEOUT) -> int | None:
    """Read until the server closes; return its close code."""
    async with asyncio.timeout(wait):
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


@pytest.fixture
def room(db: Any) -> Room:
    return Room.objects.create(slug="lobby", name="Lobby")


@pytest.fixture
def login() -> Callable[..., str]:
    return session_cookie


@pytest.fixture
def aio() -> Any:
    """One event loop for the whole test: ``aio(coroutine)`` runs it there (sync DB work stays outside)."""
    with asyncio.Runner() as runner:
        try:
            yield runner.run
        finally:
            runner.run(_close_all())


async def _close_all() -> None:
    while _OPENED:
        ws = _OPENED.pop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 5)
    for task in asyncio.all_tasks() - {asyncio.current_task()}:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


class Peer:
    """A client that records every frame it receives, so a test can wait for any of them in any order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self._changed = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url: str, session: str | None, **kw: Any) -> Peer:
        return cls(await connect(url, session, **kw))

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(json.loads(raw))
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self._changed.set()

    @property
    def closed(self) -> bool:
        return self._task.done()

    async def send(self, frame: dict[str, Any]) -> None:
        await send(self.ws, frame)

    def matching(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [f for f in self.frames if predicate(f)]

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], count: int = 1, wait: float = TIMEOUT
    ) -> list[dict[str, Any]]:
        """The first ``count`` frames matching ``predicate`` (waits for them to arrive)."""
        async with asyncio.timeout(wait):
            while True:
                found = self.matching(predicate)
                if len(found) >= count:
                    return found[:count]
                if self.closed:
                    raise AssertionError(
                        f"closed ({self.close_code}) with {len(found)}/{count} frames: {str(found[-3:])[:600]}"
                    )
                self._changed.clear()
                await self._changed.wait()

    async def wait_closed(self, wait: float = TIMEOUT) -> int | None:
        async with asyncio.timeout(wait):
            await asyncio.shield(self._task)
        return self.close_code

    async def join(self, room: str, since: int | None = None) -> dict[str, Any]:
        before = len(self.matching(lambda f: f["type"] in ("joined", "error")))
        frame: dict[str, Any] = {"type": "join", "room": room}
        if since is not None:
            frame["since"] = since
        await self.send(frame)
        answers = await self.wait_for(lambda f: f["type"] in ("joined", "error"), before + 1)
        assert answers[-1]["type"] == "joined", answers[-1]
        return answers[-1]

    async def send_message(self, room: str, body: str, client_id: str) -> dict[str, Any]:
        """Send and wait for the answer (ack or error) to this client_id."""
        await self.send({"type": "send", "room": room, "body": body, "client_id": client_id})
        answer = await self.wait_for(
            lambda f: (
                (f["type"] == "ack" and f["client_id"] == client_id) or (f["type"] == "error" and f["ref"] == client_id)
            )
        )
        return answer[-1]

    def seqs(self, room: str) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] == "message" and f["room"] == room]

    async def wait_seqs(self, room: str, count: int, wait: float = TIMEOUT) -> list[int]:
        await self.wait_for(lambda f: f["type"] == "message" and f["room"] == room, count, wait)
        return self.seqs(room)

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, TIMEOUT)


@pytest.fixture
def start_server(start_server: Callable[..., Any]) -> Any:
    """The suite's ``start_server``, plus: no server may log a traceback, shutdown included."""
    started: list[Any] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        server = start_server(*args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        # Stop it here (SIGTERM, the graceful path), so its shutdown is checked too.
        with contextlib.suppress(Exception):
            server.terminate(timeout=15)
        if server.reader is not None:
            server.reader.join(timeout=10)
        problems = [
            line
            for line in server.lines
            if "Traceback" in line or "Exception in ASGI application" in line or "never retrieved" in line
        ]
        assert not problems, "".join(server.lines)
