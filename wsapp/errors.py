"""The one place where failures become error codes and close codes (protocol.md section 4).

A refused request gets an ``error`` frame and the connection stays open; a
connection-level failure closes the socket with one of the ``Close`` codes.
"""

from __future__ import annotations

import logging
from enum import IntEnum

from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from chat.messageedits import Forbidden, TargetNotFound, Unavailable
from chat.messagelog import RateLimited
from chat.services import AttachmentsInvalid, MessageBodyEmpty, MessageBodyTooLong, MessageUnavailable
from wsapp.sessioncheck import AuthUnavailable

logger = logging.getLogger("kaiwa.ws")


class Close(IntEnum):
    """WebSocket close codes of the wire contract."""

    NORMAL = 1000
    POLICY = 1008  # flood of bad frames, inbound frame flood
    TOO_BIG = 1009  # frame larger than KAIWA_MAX_FRAME_BYTES
    SERVER_ERROR = 1011
    RESTART = 1012  # graceful shutdown
    TRY_AGAIN = 1013  # outgoing queue overflowed: the client reads too slowly
    UNAUTHENTICATED = 4401


CLOSE_REASONS: dict[int, str] = {
    Close.POLICY: "policy violation",
    Close.TOO_BIG: "frame too large",
    Close.SERVER_ERROR: "server error",
    Close.RESTART: "server restarting",
    Close.TRY_AGAIN: "too slow: outgoing queue overflowed",
    Close.UNAUTHENTICATED: "unauthenticated",
}


DATABASE_UNAVAILABLE_REASON = "try again later: database unavailable"


def handshake_close_for(exc: BaseException) -> tuple[Close, str] | None:
    """The close a failed session check at the handshake means, or None for a bug (1011, with its traceback).

    An uncached session while the database is down or slow is an expected
    outage, not a bug: one WARNING line, no traceback, and 1013 so the client
    reconnects with backoff (protocol.md section 4).
    """
    if isinstance(exc, AuthUnavailable):
        logger.warning("session check at the handshake unavailable (%s); closing 1013", exc)
        return Close.TRY_AGAIN, DATABASE_UNAVAILABLE_REASON
    return None


def too_big_reason(size: int, limit: int) -> str:
    """The 1009 reason, worded as uvicorn's default implementation words its own (``--ws-max-size``).

    Whichever refuses the frame first, uvicorn or Kaiwa's ``KAIWA_MAX_FRAME_BYTES``,
    the client reads the same text.
    """
    return f"frame with {size} bytes exceeds limit of {limit} bytes"


BAD_REQUEST = "bad_request"
NOT_FOUND = "not_found"
NOT_JOINED = "not_joined"
TOO_LONG = "too_long"
RATE_LIMITED = "rate_limited"
LIMIT = "limit"
UNAVAILABLE = "unavailable"
FORBIDDEN = "forbidden"


class Refused(Exception):
    """A request the server refuses; the connection stays open."""

    def __init__(self, code: str, message: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms


def unavailable(message: str = "") -> Refused:
    return Refused(
        UNAVAILABLE,
        message or "The server cannot accept this now (Redis is unreachable); re-send with the same client_id.",
        retry_after_ms=settings.KAIWA_UNAVAILABLE_RETRY_MS,
    )


def refusal_for(exc: BaseException) -> Refused | None:
    """The refusal an exception means, or None for a bug (the connection then closes with 1011)."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, MessageBodyEmpty | AttachmentsInvalid):
        return Refused(BAD_REQUEST, str(exc))
    if isinstance(exc, MessageBodyTooLong):
        return Refused(TOO_LONG, str(exc))
    if isinstance(exc, RateLimited):
        return Refused(
            RATE_LIMITED,
            f"You are sending too fast (at most {settings.KAIWA_RATE_PER_SECOND:g} messages per second); "
            "wait and re-send.",
            retry_after_ms=exc.retry_after_ms,
        )
    if isinstance(exc, TargetNotFound):
        return Refused(
            NOT_FOUND,
            f"There is no message {exc.args[0]} in this room (or it was deleted); check the seq you named.",
        )
    if isinstance(exc, Forbidden):
        return Refused(FORBIDDEN, str(exc))
    if isinstance(exc, MessageUnavailable | Unavailable):
        return unavailable()
    if isinstance(exc, RedisError | OSError | TimeoutError):
        logger.warning("request refused as unavailable: %r", exc)
        return unavailable()
    if isinstance(exc, DatabaseError):
        logger.warning("request refused as unavailable (database): %r", exc)
        return unavailable("The server cannot reach its database right now; try again shortly.")
    return None
