"""A client that floods WebSocket pings and never reads the pongs cannot grow the server's memory.

Real ``uvicorn project.asgi:application`` processes, one per ``--ws``
implementation, and a raw socket client (tests/wsapp/rawclient.py).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.wsapp.conftest import UNLIMITED_RATES, session_cookie
from tests.wsapp.rawclient import OP_CLOSE, OP_PING, OP_TEXT, RawSocket, frame

pytestmark = pytest.mark.django_db(transaction=True)

IMPLEMENTATIONS = ["websockets-sansio", "websockets", "wsproto"]
# The largest control frame: the pongs are as big as they can be.
PING = frame(OP_PING, b"p" * 125)
PINGS = PING * 2000  # 262 KB per sendall
FLOOD_LIMIT = 300 * 1024 * 1024  # what an unguarded server swallows without blocking the client


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def flood(raw: RawSocket, chunk: bytes, stall_seconds: float = 3.0) -> tuple[int, bool]:
    """Send ``chunk`` over and over without reading: (bytes the server took, whether it stopped taking them)."""
    raw.sock.settimeout(stall_seconds)
    sent = 0
    while sent < FLOOD_LIMIT:
        try:
            raw.sock.sendall(chunk)
        except TimeoutError:
            return sent, True
        except (BrokenPipeError, ConnectionResetError):
            return sent, True
        sent += len(chunk)
    return sent, False


@pytest.mark.parametrize("ws", IMPLEMENTATIONS)
def test_ping_flood_without_reading_stops_the_server_reading(start_server, make_user, ws):
    """The server stops reading a client whose pongs pile up: the flood stalls, RSS stays flat, the socket recovers."""
    server = start_server(args=["--ws", ws])
    cookie = session_cookie(make_user("flooder"))
    raw = RawSocket.connect(server.port, cookie, rcvbuf=4096)
    try:
        before = rss_bytes(server.process.pid)
        sent, stalled = flood(raw, PINGS)
        grown = rss_bytes(server.process.pid) - before
        assert stalled, f"the server read {sent} bytes of pings without ever pushing back"
        assert sent < 64 * 1024 * 1024, sent
        assert grown < 24 * 1024 * 1024, f"server RSS grew by {grown / 1e6:.1f} MB during the flood"
        print(f"{ws}: the server took {sent / 1e6:.1f} MB of pings, RSS grew {grown / 1e6:.1f} MB")
        # Once the client reads its pongs, the server reads again and answers the application.
        # (The client's own send buffer is full of pings: the last frame is sent while it reads.)
        raw.sock.settimeout(20)
        sender = threading.Thread(target=raw.send, args=(frame(OP_TEXT, json.dumps({"type": "ping"}).encode()),))
        sender.start()
        try:
            answer = raw.recv_until({OP_TEXT, OP_CLOSE})
        finally:
            sender.join(timeout=30)
        assert not sender.is_alive()
        assert answer.opcode == OP_TEXT and json.loads(answer.payload) == {"type": "pong"}
    finally:
        raw.close()


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
def test_pings_mixed_with_data_frames_close_1008_past_the_cap(start_server, make_user, ws):
    """Data frames between pings make uvicorn read again; past KAIWA_WS_WRITE_BUFFER_MAX_BYTES unsent: close 1008."""
    env = {**UNLIMITED_RATES, "KAIWA_WS_WRITE_BUFFER_MAX_BYTES": str(256 * 1024)}
    server = start_server(env=env, args=["--ws", ws])
    cookie = session_cookie(make_user("mixer"))
    raw = RawSocket.connect(server.port, cookie, rcvbuf=4096)
    try:
        before = rss_bytes(server.process.pid)
        chunk = PINGS + frame(OP_TEXT, json.dumps({"type": "leave", "room": "nowhere"}).encode())
        sent, stalled = flood(raw, chunk)
        assert stalled, f"the server read {sent} bytes without pushing back or closing"
        line = server.wait_for_line("closing with 1008", timeout=20)
        assert "sends pings without reading the pongs" in line
        grown = rss_bytes(server.process.pid) - before
        assert grown < 24 * 1024 * 1024, f"server RSS grew by {grown / 1e6:.1f} MB"
        # The connection is over: a client reading now gets the close frame behind its pongs, or a
        # reset (the kernel resets a socket closed with unread pings in it, dropping what was unsent).
        raw.sock.settimeout(20)
        try:
            closing = raw.recv_until({OP_CLOSE})
        except ConnectionResetError:
            return
        assert (closing.close_code, closing.close_reason) == (1008, "control frame flood")
    finally:
        raw.close()


def test_install_guards_the_implementations_that_answer_pings_themselves(settings):
    """install() patches the sansio and wsproto protocols once; calling it again changes nothing."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from uvicorn.protocols.websockets.wsproto_impl import WSProtocol

    from wsapp import controlframes

    names = controlframes.install()
    assert names == [
        "uvicorn.protocols.websockets.websockets_sansio_impl.WebSocketsSansIOProtocol",
        "uvicorn.protocols.websockets.wsproto_impl.WSProtocol",
    ]
    ping = WebSocketsSansIOProtocol.handle_ping
    assert controlframes.install() == names
    assert WebSocketsSansIOProtocol.handle_ping is ping
    assert "Kaiwa" in (WSProtocol.handle_ping.__doc__ or "")
