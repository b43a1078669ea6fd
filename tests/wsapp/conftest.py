"""Helpers for /ws tests: real uvicorn processes, real Redis, the ``websockets`` client."""

from __future__ import annotations

import asyncio
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


def session_cookie(user: Any, password: str = PASSWORD) -> str:
    """Log ``user`` in through Django and return their session key."""
    client = DjangoClient()
    assert client.login(username=user.get_username(), password=password)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


async def connect(url: str, session: str | None = None, *, origin: str | None = None, **kw: Any) -> ClientConnection:
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session}"} if session else {}
    return await asyncio.wait_for(
        websockets.connect(url, additional_headers=headers, origin=origin, open_timeout=TIMEOUT, **kw),  # type: ignore[arg-type]
        TIMEOUT,
    )


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
        yield runner.run
