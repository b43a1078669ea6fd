"""A lean WebSocket client for the load generator.

It drives aaugustin's ``websockets`` sans-I/O ``ClientProtocol`` from a plain
``asyncio.Protocol``: no task, future or queue per incoming frame, so one
process can receive tens of thousands of frames per second before it becomes
the bottleneck (the harness reports its own CPU in every run to show it is not).

Once the handshake is done, incoming frames are parsed here (``_parse``):
server frames are unmasked and the bench never negotiates an extension, so a
frame is a two-to-ten-byte header and its payload. In the fan-out scenario
``websockets``' general parser was about a fifth of the load generator's CPU.
Everything sent, and the answers to pings and closes, still goes through the
``ClientProtocol``.

``pause_reading()`` makes a client stop reading its socket, which is how the
slow-reader scenario stalls a receiver: the kernel buffers fill and the server
has to cope with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Origin
from websockets.uri import parse_uri


class HandshakeError(Exception):
    """The server answered the upgrade with something else than 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status} instead of 101 Switching Protocols")
        self.status = status


class Conn(asyncio.Protocol):
    """One WebSocket connection; text messages go to ``on_text(conn, data)``."""

    def __init__(
        self,
        uri: str,
        *,
        origin: str | None,
        cookie: str | None,
        on_text: Callable[[Conn, bytes], None],
        on_close: Callable[[Conn], None] | None = None,
        tag: Any = None,
    ) -> None:
        self.uri = uri
        self.proto = ClientProtocol(parse_uri(uri), origin=Origin(origin) if origin else None, max_size=None)
        self.cookie = cookie
        self.on_text = on_text
        self.on_close = on_close
        self.tag = tag
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        self.close_reason = ""
        self.lost = False  # TCP closed without a close frame
        self._fragments: list[bytes] = []
        self.bytes_received = 0
        self._fast = False  # parsing frames ourselves (after the handshake)
        self._buffer = bytearray()

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)
        request = self.proto.connect()
        if self.cookie:
            request.headers["Cookie"] = self.cookie
        self.proto.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self._fast:
            self._buffer += data
            self._parse()
            return
        self.proto.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        if self._fast:
            self._finish()
            return None
        self.proto.receive_eof()
        self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"connection lost during the handshake: {exc!r}"))
        if self.close_code is None:
            self.lost = True
        self._finish()

    # -- internals -------------------------------------------------------------

    def _process(self) -> None:
        for event in self.proto.events_received():
            if isinstance(event, Response):
                if event.status_code == 101 and self.proto.handshake_exc is None:
                    if not self.opened.done():
                        self.opened.set_result(None)
                    self._switch_to_fast_parser()
                elif not self.opened.done():
                    self.opened.set_exception(HandshakeError(event.status_code))
            elif isinstance(event, Frame):
                self._frame(event)
        self._flush()
        if self.proto.close_rcvd is not None and self.close_code is None:
            self.close_code = self.proto.close_rcvd.code
            self.close_reason = self.proto.close_rcvd.reason

    def _frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT:
            if frame.fin:
                self.on_text(self, bytes(frame.data))
            else:
                self._fragments = [bytes(frame.data)]
        elif frame.opcode is Opcode.CONT and self._fragments:
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self.on_text(self, data)

    def _switch_to_fast_parser(self) -> None:
        # Bytes that arrived with the handshake response (a first frame) are
        # still in the protocol's reader: take them over.
        reader = self.proto.reader
        pending = bytes(reader.buffer)
        del reader.buffer[:]
        self._fast = True
        self._buffer += pending

    def _parse(self) -> None:
        buf = self._buffer
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            self._fast_frame(b0 & 0x80 != 0, b0 & 0x0F, payload)
            if not self._fast:
                break
        del buf[:pos]

    def _fast_frame(self, fin: bool, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            if fin:
                self.on_text(self, payload)
            else:
                self._fragments = [payload]
        elif opcode == 0x0 and self._fragments:
            self._fragments.append(payload)
            if fin:
                data = b"".join(self._fragments)
                self._fragments = []
                self.on_text(self, data)
        elif opcode == 0x9:  # ping
            self.proto.send_pong(payload)
            self._flush()
        elif opcode == 0x8:  # close: record it, echo it; the server then closes TCP
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if self.close_code is None:
                self.close_code = code
                self.close_reason = payload[2:].decode("utf-8", "replace")
            self._fast = False
            try:
                if code == 1005:
                    self.proto.send_close()
                else:
                    self.proto.send_close(code)
            except Exception:
                pass
            self._flush()

    def _flush(self) -> None:
        if self.transport is None:
            return
        for data in self.proto.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                # websockets signals "half-close now" with an empty chunk.
                self.transport.write_eof()

    def _finish(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
            if self.on_close is not None:
                self.on_close(self)

    # -- API ---------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.opened.done() and not self.closed.done() and self.close_code is None

    def send_text(self, text: str) -> None:
        if self.transport is None or self.transport.is_closing() or self.close_code is not None:
            raise ConnectionError("connection is closed")
        self.proto.send_text(text.encode())
        self._flush()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._fast = False
        try:
            if self.close_code is None:
                self.proto.send_close(1000)
                self._flush()
        except Exception:
            pass
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str,
    port: int,
    *,
    path: str = "/ws",
    origin: str | None,
    cookie: str | None,
    on_text: Callable[[Conn, bytes], None],
    on_close: Callable[[Conn], None] | None = None,
    tag: Any = None,
    open_timeout: float = 30.0,
) -> Conn:
    """Open a connection and complete the WebSocket handshake."""
    loop = asyncio.get_running_loop()
    uri = f"ws://{host}:{port}{path}"
    holder: list[Conn] = []

    def factory() -> Conn:
        conn = Conn(uri, origin=origin, cookie=cookie, on_text=on_text, on_close=on_close, tag=tag)
        holder.append(conn)
        return conn

    try:
        async with asyncio.timeout(open_timeout):
            await loop.create_connection(factory, host, port)
            conn = holder[0]
            await conn.opened
    except BaseException:
        if holder:
            # Do not leak the socket, and do not leave a failure nobody will read.
            holder[0].opened.add_done_callback(_consume)
            holder[0].abort()
        raise
    return conn


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
