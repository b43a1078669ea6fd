"""The outgoing side of one socket: write-through, the writer task, order and limits.

These drive ``Connection`` with an ASGI ``send`` that behaves like uvicorn's:
it completes at once while the socket is writable and waits while the
transport is paused (a client that stopped reading).
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from wsapp.connection import Connection
from wsapp.errors import Close

WAIT = 5.0


class Socket:
    """An ASGI send callable with uvicorn's flow control: ``await writable.wait()`` first."""

    def __init__(self) -> None:
        self.writable = asyncio.Event()
        self.writable.set()
        self.sent: list[MutableMapping[str, Any]] = []
        self.progress = asyncio.Event()
        self.calls = 0
        self.fail: BaseException | None = None

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.calls += 1
        await self.writable.wait()
        if self.fail is not None:
            raise self.fail
        self.sent.append(message)
        self.progress.set()

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]

    async def wait_sent(self, n: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.sent) < n:
                self.progress.clear()
                await self.progress.wait()


def connected(*, paused: bool = False, max_messages: int = 100) -> tuple[Socket, Connection]:
    """A socket (``paused``: its transport pushes back) and the connection sending on it."""
    socket = Socket()
    if paused:
        socket.writable.clear()
    conn = Connection(send=socket, user_id=1, username="alice", session_key="k")
    conn.max_messages = max_messages
    return socket, conn


def put(conn: Connection, text: str) -> bool:
    return conn.put(text, len(text))


@pytest.fixture
def run():
    async def bounded(coro: Any) -> Any:
        async with asyncio.timeout(WAIT * 4):
            return await coro

    def run(coro: Any) -> Any:
        return asyncio.run(bounded(coro))

    return run


def test_frames_to_a_writable_socket_are_written_during_put(run):
    """While the socket takes frames, put() writes them itself, in order, with nothing queued."""

    async def scenario() -> None:
        socket, conn = connected()
        for i in range(5):
            assert put(conn, f"m{i}")
            assert socket.texts == [f"m{j}" for j in range(i + 1)]
            assert conn.queued == (0, 0)
        await conn.finish()

    run(scenario())


def test_a_send_that_waits_is_finished_by_the_writer_before_later_frames(run):
    """A paused socket: the waiting send goes first, the frames queued behind it follow in order."""

    async def scenario() -> None:
        socket, conn = connected(paused=True)
        assert put(conn, "first")  # suspends inside send: handed to the writer
        for i in range(3):
            assert put(conn, f"q{i}")
        assert conn.queued[0] == 3
        assert socket.texts == []
        socket.writable.set()
        await socket.wait_sent(4)
        assert socket.texts == ["first", "q0", "q1", "q2"]
        # Drained: the next frame is written through again.
        await asyncio.sleep(0)
        assert put(conn, "after")
        assert socket.texts[-1] == "after"
        await conn.finish()

    run(scenario())


def test_a_reader_that_never_drains_is_closed_with_1013(run):
    """Frames queued behind a waiting send count against the limit; past it the socket closes 1013."""

    async def scenario() -> None:
        socket, conn = connected(paused=True, max_messages=3)
        assert put(conn, "pending")
        assert all(put(conn, f"q{i}") for i in range(3))
        assert not put(conn, "overflow")
        assert conn.close_code == Close.TRY_AGAIN
        socket.writable.set()
        async with asyncio.timeout(WAIT):
            await conn.wait_ended()
        assert socket.sent[-1] == {"type": "websocket.close", "code": Close.TRY_AGAIN, "reason": conn.close_reason}
        assert "q0" not in socket.texts  # dropped with the queue, never sent after the close
        await conn.finish()

    run(scenario())


def test_graceful_close_sends_the_waiting_and_queued_frames_first(run):
    """close(flush=True) while a send waits: everything taken is sent, then the close frame."""

    async def scenario() -> None:
        socket, conn = connected(paused=True)
        put(conn, "pending")
        put(conn, "queued")
        conn.close(Close.RESTART, flush=True)
        assert not put(conn, "too late")
        socket.writable.set()
        async with asyncio.timeout(WAIT):
            await conn.wait_ended()
        assert socket.texts == ["pending", "queued"]
        assert socket.sent[-1]["type"] == "websocket.close" and socket.sent[-1]["code"] == Close.RESTART
        await conn.finish()

    run(scenario())


def test_a_send_failing_during_put_stops_the_connection_quietly(run):
    """The client vanished under a written-through send: later frames are refused, nothing raises."""

    async def scenario() -> None:
        socket, conn = connected()
        socket.fail = ConnectionResetError("gone")
        assert put(conn, "lost")
        assert conn.ended
        calls = socket.calls
        assert not put(conn, "refused")
        assert socket.calls == calls
        await conn.finish()
        assert conn.close_code == Close.NORMAL

    run(scenario())


def test_finish_while_a_send_waits_leaves_no_task_or_coroutine_behind(run):
    """The client disconnected while its socket was paused: finish() ends the writer and the waiting send."""

    async def scenario() -> None:
        socket, conn = connected(paused=True)
        put(conn, "pending")
        put(conn, "queued")
        await asyncio.sleep(0)  # the writer picks the waiting send up
        await conn.finish()
        socket.writable.set()
        await asyncio.sleep(0)
        assert socket.texts == []
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []

    run(scenario())


def test_without_write_through_frames_go_through_the_writer_task_in_order(run, monkeypatch):
    """KAIWA_WS_WRITE_THROUGH off: put() only queues; the writer task sends every frame, in order, with plain awaits."""
    monkeypatch.setattr(Connection, "write_through", False)

    async def scenario() -> None:
        socket, conn = connected()
        for i in range(5):
            assert put(conn, f"m{i}")
        assert socket.texts == []  # nothing is written inside put()
        assert conn.queued == (5, sum(len(f"m{i}") for i in range(5)))
        await socket.wait_sent(5)
        assert socket.texts == [f"m{i}" for i in range(5)]
        await conn.finish()

    run(scenario())


def test_without_write_through_overflow_still_closes_1013(run, monkeypatch):
    """KAIWA_WS_WRITE_THROUGH off: the queue bounds still hold; past them the socket is closed with 1013."""
    monkeypatch.setattr(Connection, "write_through", False)

    async def scenario() -> None:
        socket, conn = connected(paused=True, max_messages=3)
        assert all(put(conn, f"q{i}") for i in range(3))
        assert not put(conn, "overflow")
        assert conn.close_code == Close.TRY_AGAIN
        socket.writable.set()
        async with asyncio.timeout(WAIT):
            await conn.wait_ended()
        assert socket.sent[-1]["type"] == "websocket.close" and socket.sent[-1]["code"] == Close.TRY_AGAIN
        await conn.finish()

    run(scenario())
