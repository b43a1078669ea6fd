"""The durable message log on Redis: append with a per-room seq, read a range back.

* ``append``: one Lua script (``chat.logscripts.APPEND``) takes a token from
  the sender's rate-limit bucket, assigns the room's next ``seq``, appends the
  message to the room's stream, remembers its ``client_id`` for dedup and
  publishes it to every server process. Because it is one atomic step, a
  room's sequence has no gaps and no reuse, and the publish order is the seq
  order; and a send costs one round trip to Redis.
* ``read_range``: re-read messages by seq (resume after reconnect, gap repair).
* the ``persist`` consumer group the worker reads, acknowledges and trims is
  ``chat.persistgroup`` (``MessageLog`` inherits it, one object per process).

What a message looks like in Redis is ``chat.events``; key names are
``chat.logkeys``. A stream entry's id is ``0-<seq>``, which turns "messages
after seq N" into a plain ``XRANGE``. Only Redis 6.2 commands are used (the
bundled server is 6.2). ``chat.memorylog.MemoryLog`` is the in-memory twin
(the ``Log`` protocol) for in-process tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis

from chat import logscripts
from chat.events import Entry, entry_from_stream, format_ts, message_fields, parse_ts, ts_ms_of
from chat.logkeys import (
    CONTROL_CHANNEL,
    GROUP,
    ROOMS_KEY,
    bucket_key,
    channel,
    dedup_key,
    room_id_from_stream_key,
    room_tag,
    seq_key,
    stream_key,
)
from chat.persistgroup import PendingEntry, PersistGroup, RoomBacklog

__all__ = [
    "CONTROL_CHANNEL",
    "GROUP",
    "ROOMS_KEY",
    "AppendResult",
    "Entry",
    "FloorNeeded",
    "Log",
    "MessageLog",
    "PendingEntry",
    "RateLimit",
    "RateLimited",
    "RoomBacklog",
    "bucket_key",
    "channel",
    "dedup_key",
    "format_ts",
    "parse_ts",
    "room_id_from_stream_key",
    "room_tag",
    "seq_key",
    "stream_key",
    "ts_ms_of",
]


@dataclass(frozen=True, slots=True)
class AppendResult:
    seq: int
    ts_ms: int
    duplicate: bool  # True: the client_id was seen before, this is the original


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A per-user token bucket: ``burst`` messages at once, then ``per_second``."""

    burst: int
    per_second: float


class FloorNeeded(Exception):
    """The room has no sequence in Redis (new room, or Redis lost its data)."""


class RateLimited(Exception):
    """The sender's bucket is empty; a token is back in ``retry_after_ms``."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"rate limited; retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class Log(Protocol):
    """What the real-time path needs of the log: ``MessageLog`` on Redis, ``MemoryLog`` in memory."""

    async def append(
        self,
        *,
        room_id: int,
        slug: str,
        user_id: int,
        username: str,
        body: str,
        client_id: str | None,
        token: str,
        token_seconds: int | None = None,
        floor: int | None = None,
        rate: RateLimit | None = None,
    ) -> AppendResult: ...

    async def last_seq(self, room_id: int) -> int | None: ...

    async def read_range(
        self, *, room_id: int, slug: str | None, after: int, upto: int | None = None
    ) -> list[Entry]: ...


class MessageLog(PersistGroup):
    """The Redis side of the message history. One per process, sharing a pool."""

    def __init__(self, client: aioredis.Redis, *, dedup_seconds: int, stream_keep: int) -> None:
        super().__init__(client, stream_keep=stream_keep)
        self.dedup_seconds = dedup_seconds
        self._append = client.register_script(logscripts.APPEND)

    # -- writes -------------------------------------------------------------

    async def append(
        self,
        *,
        room_id: int,
        slug: str,
        user_id: int,
        username: str,
        body: str,
        client_id: str | None,
        token: str,
        token_seconds: int | None = None,
        floor: int | None = None,
        rate: RateLimit | None = None,
    ) -> AppendResult:
        """Append a message; raise ``FloorNeeded`` when the room's seq is unknown.

        ``token`` identifies the attempt for dedup: the client's ``client_id``
        when it gave one, else a server-made one (kept ``token_seconds``) so a
        retry after a lost reply cannot create a second message. With ``rate``
        the message takes a token from the user's bucket first, or the append
        raises ``RateLimited``.
        """
        keys = [
            seq_key(room_id),
            stream_key(room_id),
            dedup_key(room_id, user_id, token),
            channel(room_id),
            bucket_key(user_id),
            ROOMS_KEY,
        ]
        args: list[str | int] = [
            "" if floor is None else str(floor),
            token_seconds or self.dedup_seconds,
            "1",
            room_id,
            slug,
            "" if rate is None else rate.burst,
            "" if rate is None else repr(float(rate.per_second)),
            *message_fields(user_id=user_id, username=username, body=body, client_id=client_id),
        ]

        result = await self._append(keys=keys, args=args)
        status, seq, ts = (int(x) for x in result)
        if status == -1:
            raise FloorNeeded(room_id)
        if status == -2:
            raise RateLimited(max(1, seq))
        return AppendResult(seq=seq, ts_ms=ts, duplicate=status == 0)

    # -- reads --------------------------------------------------------------

    async def last_seq(self, room_id: int) -> int | None:
        """The room's latest assigned seq, or None if Redis has no sequence for it."""
        raw = await self.client.get(seq_key(room_id))
        return None if raw is None else int(raw)

    async def read_range(self, *, room_id: int, slug: str | None, after: int, upto: int | None = None) -> list[Entry]:
        """Entries with ``after < seq <= upto`` still in the stream, oldest first.

        The stream may have been trimmed: if the first entry's seq is above
        ``after + 1``, the missing prefix is in the database.
        """
        end = "+" if upto is None else f"0-{upto}"
        if upto is not None and upto <= after:
            return []
        rows: list[Any] = (await self.client.xrange(stream_key(room_id), min=f"0-{after + 1}", max=end)) or []
        return [entry_from_stream(room_id, slug, entry_id, fields) for entry_id, fields in rows]
