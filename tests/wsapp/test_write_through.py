"""The write-through trampoline against uvicorn's own ``send``, in-process (wsapp/connection.py, ``_write_through``).

``Connection.put`` starts uvicorn's ``send`` coroutine itself and steps it
once, relying on it to finish without suspending while the transport is
writable, and to suspend (then be finished by the writer task) while the
transport is paused. These tests run uvicorn's installed WebSocket protocol
over a recording transport, so an uvicorn release that changes how its
``send`` suspends fails here, not in production. KAIWA_WS_WRITE_THROUGH=0
is the fallback (plain ``await send()``).
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from wsapp.connection import Connection

WAIT = 5.0


class Transport(asyncio.Transport):
    """Records what the protocol writes; flow control is driven by the test (``pause_writing``)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.wrote = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data
        self.wrote.set()

    async def wait_for(self, needle: bytes) -> None:
        async with asyncio.timeout(WAIT):
            while needle not in self.written:
                self.wrote.clear()
                await self.wrote.wait()

    def is_closing(self) -> bool:
        return self.closing

    # Read flow control (wsapp.controlframes patches the protocol to use it once installed).
    reading = True

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)


def handshake() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        "GET /ws HTTP/1.1\r\nHost: testserver\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def serve(app: Any) -> tuple[WebSocketsSansIOProtocol, Transport]:
    config = Config(app=app, ws="websockets-sansio", ws_per_message_deflate=False, lifespan="off", log_level="error")
    config.load()
    protocol = WebSocketsSansIOProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    protocol.connection_made(transport)
    protocol.data_received(handshake())
    return protocol, transport


def test_put_writes_through_uvicorn_send_and_hands_a_paused_send_to_the_writer() -> None:
    """Writable: each frame is on the transport when put() returns. Paused: none is; resumed: all, in order."""

    async def scenario() -> None:
        done = asyncio.Event()
        checks: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            conn = Connection(send=send, user_id=1, username="ann", session_key="k")
            for i in range(3):
                before = len(transport.written)
                assert conn.put(f"through-{i}", 9)
                assert len(transport.written) > before, "written during put()"
                assert f"through-{i}".encode() in transport.written
            checks.append("through")
            protocol.pause_writing()  # the client stopped reading: uvicorn's send now waits
            before = len(transport.written)
            for i in range(3):
                assert conn.put(f"paused-{i}", 8)
            assert len(transport.written) == before, "nothing written while paused"
            assert conn.queued[0] == 2  # the first waits inside uvicorn's send (the writer finishes it)
            protocol.resume_writing()
            await transport.wait_for(b"paused-2")
            written = bytes(transport.written)
            positions = [written.index(f"paused-{i}".encode()) for i in range(3)]
            assert positions == sorted(positions)
            checks.append("paused")
            await conn.finish()
            done.set()

        protocol, transport = await serve(app)
        async with asyncio.timeout(WAIT):
            await done.wait()
        assert checks == ["through", "paused"]

    asyncio.run(scenario())


@pytest.mark.parametrize("write_through", [True, False])
def test_frames_arrive_in_order_with_and_without_write_through(write_through: bool, monkeypatch: Any) -> None:
    """Both settings of KAIWA_WS_WRITE_THROUGH deliver 200 frames through uvicorn's send, in order."""
    monkeypatch.setattr(Connection, "write_through", write_through)

    async def scenario() -> None:
        done = asyncio.Event()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            conn = Connection(send=send, user_id=1, username="ann", session_key="k")
            for i in range(200):
                assert conn.put(f"<{i:03d}>", 5)
            await transport.wait_for(b"<199>")
            await conn.finish()
            done.set()

        _, transport = await serve(app)
        async with asyncio.timeout(WAIT):
            await done.wait()
        written = bytes(transport.written)
        positions = [written.index(f"<{i:03d}>".encode()) for i in range(200)]
        assert positions == sorted(positions)

    asyncio.run(scenario())
