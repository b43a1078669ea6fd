"""Bound what a client's WebSocket pings can cost, whatever uvicorn's ``--ws`` implementation.

uvicorn answers every ping itself and the application never sees control
frames, so Kaiwa's frame budget cannot count them. Its default
``websockets-sansio`` implementation (and ``wsproto``) writes each pong into
the transport and never stops reading: a client that floods pings and never
reads grows the server's write buffer without bound (measured: +104 MB on one
socket for 1,000,000 pings in 5 s, freed only at close).

``install()`` (called once per process by ``project/asgi.py``) adds two rules
to those implementations' protocol classes:

1. **Stop reading while the write buffer is full.** After a ping is answered,
   if the transport holds more than its high-water mark (64 KiB by default)
   of unsent bytes, reading pauses; when the transport drains below its
   low-water mark (``resume_writing``), reading resumes unless uvicorn itself
   holds it paused (``read_paused``: the app has not read its last message).
   The flooding client's own socket then fills and its sends block: TCP does
   the rest, at no cost to the server.
2. **Close 1008 past a hard cap.** uvicorn resumes reading whenever the app
   takes a message, so a client that mixes data frames into its flood gets one
   more read (at most one TCP read, 256 KiB) each time. Once the unsent bytes
   pass ``KAIWA_WS_WRITE_BUFFER_MAX_BYTES`` after answering a ping, the
   connection is closed with 1008 ("control frame flood"), the app sees the
   disconnect, and the TCP connection is dropped 10 s later if the client
   still reads nothing (as for every other close).

The app's own writes cannot reach the cap: ``send`` waits until the transport
is below its high-water mark, so they add at most one frame on top of it.

The rules are patched onto the classes, not wrapped around each socket: an
attribute set per socket would cost every idle connection memory. The legacy
``--ws websockets`` implementation needs nothing: it awaits the transport's
drain after each pong, which stops its reads (checked by
tests/wsapp/test_controlframes.py). An implementation this module does not
know is logged as unguarded at startup.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings

logger = logging.getLogger("kaiwa.ws")

CLOSE_CODE = 1008
CLOSE_REASON = "control frame flood"
# Like wsapp.connection's close timeout: how long a close may wait for a client that reads nothing.
DROP_AFTER_SECONDS = 10.0

_GUARDED_MARK = "_kaiwa_control_frame_guard"


def _close_sansio(protocol: Any) -> None:
    protocol.conn.fail(CLOSE_CODE, CLOSE_REASON)
    protocol.transport.write(b"".join(protocol.conn.data_to_send()))


def _close_wsproto(protocol: Any) -> None:
    from wsproto.connection import ConnectionState
    from wsproto.events import CloseConnection

    if protocol.conn.state == ConnectionState.OPEN:
        protocol.transport.write(protocol.conn.send(CloseConnection(code=CLOSE_CODE, reason=CLOSE_REASON)))


# uvicorn's implementations this module guards: module, class, how to write a close frame.
GUARDED: tuple[tuple[str, str, Callable[[Any], None]], ...] = (
    ("uvicorn.protocols.websockets.websockets_sansio_impl", "WebSocketsSansIOProtocol", _close_sansio),
    ("uvicorn.protocols.websockets.wsproto_impl", "WSProtocol", _close_wsproto),
)
_NEEDED = ("handle_ping", "resume_writing")


def _flood_close(protocol: Any, close: Callable[[Any], None], unsent: int) -> None:
    client = getattr(protocol, "client", None)
    logger.warning(
        "WebSocket client %s sends pings without reading the pongs (%d bytes unsent); closing with 1008",
        f"{client[0]}:{client[1]}" if client else "?",
        unsent,
    )
    transport: asyncio.Transport = protocol.transport
    try:
        close(protocol)
    except Exception as exc:  # the protocol library refused a close frame (already closing): drop the socket
        logger.debug("no close frame for a flooding client: %r", exc)
    protocol.close_sent = True
    protocol.queue.put_nowait({"type": "websocket.disconnect", "code": CLOSE_CODE, "reason": CLOSE_REASON})
    transport.close()  # stops reading; closes once the buffer drains...
    asyncio.get_running_loop().call_later(DROP_AFTER_SECONDS, transport.abort)  # ...or is dropped


def _patch(cls: type, close: Callable[[Any], None], cap: int) -> None:
    original_ping = cls.handle_ping  # type: ignore[attr-defined]
    original_resume = cls.resume_writing  # type: ignore[attr-defined]

    def handle_ping(self: Any, *args: Any) -> None:
        original_ping(self, *args)
        transport = self.transport
        if transport.is_closing():
            return
        unsent = transport.get_write_buffer_size()
        if unsent > cap:
            _flood_close(self, close, unsent)
        elif unsent > transport.get_write_buffer_limits()[1]:
            transport.pause_reading()

    def resume_writing(self: Any) -> None:
        original_resume(self)
        transport = self.transport
        # Paused by handle_ping above, not by uvicorn waiting for the app to read: reading may go on.
        if not self.read_paused and not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()

    handle_ping.__doc__ = "Answer a ping (uvicorn), then stop reading while the pongs are not read (Kaiwa)."
    resume_writing.__doc__ = "uvicorn's resume_writing, then resume reading if handle_ping paused it."
    cls.handle_ping = handle_ping  # type: ignore[attr-defined]
    cls.resume_writing = resume_writing  # type: ignore[attr-defined]
    setattr(cls, _GUARDED_MARK, True)


def install() -> list[str]:
    """Guard every uvicorn WebSocket implementation importable here; the names of those guarded.

    Idempotent. An implementation whose library is not installed is skipped
    (uvicorn cannot run it either); one whose shape changed is logged as
    unguarded instead of being patched blindly.
    """
    cap = settings.KAIWA_WS_WRITE_BUFFER_MAX_BYTES
    guarded = []
    for module_name, class_name, close in GUARDED:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, class_name, None)
        if cls is None or not all(callable(getattr(cls, name, None)) for name in _NEEDED):
            logger.warning(
                "uvicorn's %s.%s is not what Kaiwa's control-frame guard expects (uvicorn upgraded?): "
                "ping floods are NOT bounded with this --ws implementation; check wsapp/controlframes.py",
                module_name,
                class_name,
            )
            continue
        if not getattr(cls, _GUARDED_MARK, False):
            _patch(cls, close, cap)
        guarded.append(f"{module_name}.{class_name}")
    return guarded
