"""A raw WebSocket client on a plain socket, for what a library client will not do.

Floods pings without reading the pongs, sends invalid UTF-8 in a text frame,
sends oversized frames. Every blocking call has a timeout.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
from dataclasses import dataclass

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked client frame."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if payload else b""
    return head + mask + masked


@dataclass
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if self.opcode == OP_CLOSE and len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> str:
        return self.payload[2:].decode("utf-8", "replace") if self.opcode == OP_CLOSE else ""


class RawSocket:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    def connect(cls, port: int, cookie: str | None, *, timeout: float = 10.0, rcvbuf: int | None = None) -> RawSocket:
        """Open ``/ws`` on 127.0.0.1:port and complete the handshake (101) or raise."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /ws HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if cookie:
            lines.append(f"Cookie: sessionid={cookie}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = cls(sock)
        while b"\r\n\r\n" not in raw.buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed during the handshake")
            raw.buffer += chunk
        head, _, raw.buffer = raw.buffer.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"handshake refused: {status!r}")
        return raw

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("connection closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def recv_frame(self) -> Frame:
        """The next server frame (the socket's timeout applies)."""
        b0, b1 = self._read_exact(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read_exact(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read_exact(8))[0]
        return Frame(b0 & 0x0F, self._read_exact(length))

    def recv_until(self, opcodes: set[int], limit: int = 1_000_000) -> Frame:
        """Skip frames until one with an opcode in ``opcodes`` (at most ``limit`` frames)."""
        for _ in range(limit):
            got = self.recv_frame()
            if got.opcode in opcodes:
                return got
        raise AssertionError(f"no frame with opcode in {opcodes} within {limit} frames")

    def close(self) -> None:
        self.sock.close()
