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

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import redis.asyncio as aioredis
from django.conf import settings

from chat import epochs, logscripts
from chat.events import (
    DELETE_OP,
    EDIT_OP,
    Entry,
    entry_from_stream,
    format_ts,
    message_fields,
    parse_ts,
    ts_ms_of,
)
from chat.logkeys import (
    CONTROL_CHANNEL,
    GROUP,
    ROOMS_KEY,
    bucket_key,
    channel,
    dedup_key,
    epoch_key,
    gone_key,
    room_id_from_stream_key,
    room_tag,
    seq_key,
    stream_key,
)
from chat.persistgroup import PendingEntry, PersistGroup, RoomBacklog
from chat.redistopology import call_script_with_replicas
from chat.scriptbatch import ScriptBatch

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
    "TargetGone",
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


class TargetGone(Exception):
    """The message an edit, deletion or reply names is deleted (the append script's guard)."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"message {seq} is deleted")
        self.seq = seq


def append_guard(*, op: str, target: int | None, reply_to: int | None) -> tuple[str, str]:
    """The append script's guard: a deletion takes its target, an edit or reply needs theirs not deleted."""
    if op == DELETE_OP and target is not None:
        return "take", str(target)
    if op and target is not None:
        return "live", str(target)
    if reply_to is not None:
        return "live", str(reply_to)
    return "", ""


def blank_deleted(entries: list[Entry], gone: set[int]) -> list[Entry]:
    """``entries`` with the messages in ``gone`` (and edits of them) emptied: what users may still read."""
    if not gone:
        return entries
    out = []
    for e in entries:
        if not e.op and e.seq in gone:
            e = replace(e, body="", attachments=(), mentions=(), deleted=True)
        elif e.op == EDIT_OP and e.target in gone:
            e = replace(e, body="", mentions=())
        out.append(e)
    return out


class FloorNeeded(Exception):
    """The room's Redis state is not one this process validated (a new room, Redis lost or restored it,
    another process re-seeded it): append again with ``floor`` = max(highest stored seq, highest seen),
    and the log settles the room's epoch first (``chat.epochs``)."""


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
        known_last: int = 0,
        rate: RateLimit | None = None,
        attachments: Sequence[Mapping[str, Any]] = (),
        op: str = "",
        target: int | None = None,
        reply_to: int | None = None,
        mentions: Sequence[int] = (),
    ) -> AppendResult: ...

    async def last_seq(self, room_id: int) -> int | None: ...

    async def room_state(self, room_id: int) -> tuple[str | None, int | None]: ...

    async def settle(self, *, room_id: int, slug: str, floor: int) -> epochs.EpochState: ...

    async def read_range(
        self, *, room_id: int, slug: str | None, after: int, upto: int | None = None
    ) -> list[Entry]: ...


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class MessageLog(PersistGroup):
    """The Redis side of the message history. One per process, sharing a pool."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        dedup_seconds: int,
        stream_keep: int,
        epoch_store: epochs.EpochStore | None = None,
        ack_replicas: int | None = None,
        ack_timeout_ms: int | None = None,
    ) -> None:
        super().__init__(client, stream_keep=stream_keep)
        self.dedup_seconds = dedup_seconds
        self.epoch_store: epochs.EpochStore = epoch_store or epochs.DatabaseEpochs()
        # protocol.md 7.2: an ack waits for this many replicas (Redis WAIT), at most ack_timeout_ms.
        self.ack_replicas = settings.KAIWA_ACK_REPLICAS if ack_replicas is None else ack_replicas
        self.ack_timeout_ms = settings.KAIWA_ACK_REPLICA_TIMEOUT_MS if ack_timeout_ms is None else ack_timeout_ms
        self._append = client.register_script(logscripts.APPEND)
        # Concurrent appends (frames read in one loop iteration) share one round trip.
        self._append_batch = ScriptBatch(client)
        self._seed = client.register_script(logscripts.SEED)
        self._epochs: dict[int, str] = {}  # room -> the epoch this process validated

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
        known_last: int = 0,
        rate: RateLimit | None = None,
        attachments: Sequence[Mapping[str, Any]] = (),
        op: str = "",
        target: int | None = None,
        reply_to: int | None = None,
        mentions: Sequence[int] = (),
    ) -> AppendResult:
        """Append a message; raise ``FloorNeeded`` when the room's seq is unknown.

        ``token`` identifies the attempt for dedup: the client's ``client_id``
        when it gave one, else a server-made one (kept ``token_seconds``) so a
        retry after a lost reply cannot create a second message. With ``rate``
        the message takes a token from the user's bucket first, or the append
        raises ``RateLimited``.
        ``known_last``: the highest seq this process has seen in the room; a
        counter below it (Redis restored from an older copy) is refused like a lost epoch.
        """
        if floor is not None:
            await self.settle(room_id=room_id, slug=slug, floor=floor)
        epoch = self._epochs.get(room_id)
        if epoch is None:
            raise FloorNeeded(room_id)
        keys = [
            seq_key(room_id),
            stream_key(room_id),
            dedup_key(room_id, user_id, token),
            channel(room_id),
            bucket_key(user_id),
            ROOMS_KEY,
            epoch_key(room_id),
            gone_key(room_id),
        ]
        guard, guarded = append_guard(op=op, target=target, reply_to=reply_to)
        args: list[str | int] = [
            f"{epoch}/{known_last}",
            token_seconds or self.dedup_seconds,
            "1",
            room_id,
            slug,
            "" if rate is None else rate.burst,
            "" if rate is None else repr(float(rate.per_second)),
            guard,
            guarded,
            *message_fields(
                user_id=user_id,
                username=username,
                body=body,
                client_id=client_id,
                attachments=attachments,
                op=op,
                target=target,
                reply_to=reply_to,
                mentions=mentions,
            ),
        ]

        result = await self._run_append(keys, args)
        status, seq, ts = (int(x) for x in result)
        if status == -1:
            self._epochs.pop(room_id, None)  # lost, restored or re-seeded since this process validated it
            raise FloorNeeded(room_id)
        if status == -2:
            raise RateLimited(max(1, seq))
        if status == -3:
            raise TargetGone(int(guarded))
        return AppendResult(seq=seq, ts_ms=ts, duplicate=status == 0)

    async def _run_append(self, keys: list[str], args: list[str | int]) -> Any:
        if self.ack_replicas <= 0:
            return await self._append_batch.call(self._append, keys, args)
        replicated = await call_script_with_replicas(
            self.client, self._append, keys=keys, args=args, replicas=self.ack_replicas, timeout_ms=self.ack_timeout_ms
        )
        if int(replicated.reply[0]) < 0:
            return replicated.reply  # refused: no message was written, nothing to confirm
        # Too few replicas in time: ReplicasDidNotConfirm (a RedisError), answered unavailable.
        return replicated.confirmed_reply()

    # -- epochs (chat.epochs) -------------------------------------------------

    async def settle(self, *, room_id: int, slug: str, floor: int) -> epochs.EpochState:
        """Validate the room's Redis state against the database (and ``floor``), re-seeding it if needed."""
        return await epochs.settle(self, self.epoch_store, room_id=room_id, slug=slug, floor=floor)

    async def room_state(self, room_id: int) -> tuple[str | None, int | None]:
        """The room's epoch and latest seq in Redis (None where Redis has none)."""
        epoch, seq = await self.client.mget([epoch_key(room_id), seq_key(room_id)])
        return (None if epoch is None else _text(epoch)), (None if seq is None else int(seq))

    async def preload_dedup(self, room_id: int, tokens: Sequence[epochs.StoredToken]) -> None:
        if not tokens:
            return
        now_ms = int(time.time() * 1000)
        async with self.client.pipeline(transaction=False) as pipe:
            for t in tokens:
                ttl = epochs.dedup_ttl(t, self.dedup_seconds, now_ms)
                # NX: a token Redis still holds is the same fact.
                pipe.set(dedup_key(room_id, t.user_id, t.client_id), f"{t.seq}:{t.ts_ms}", ex=ttl, nx=True)
            await pipe.execute()

    async def seed(self, *, room_id: int, slug: str, found: str, new: str, floor: int) -> tuple[bool, str, int]:
        keys = [seq_key(room_id), epoch_key(room_id), channel(room_id)]
        status, epoch, base = await self._seed(keys=keys, args=[found, new, floor, room_id, slug])
        return int(status) == 1, _text(epoch), int(base)

    def adopt(self, room_id: int, epoch: str) -> None:
        self._epochs[room_id] = epoch

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
        entries = [entry_from_stream(room_id, slug, entry_id, fields) for entry_id, fields in rows]
        asked = sorted({e.seq if not e.op else e.target or 0 for e in entries if e.op != DELETE_OP})
        if not asked:
            return entries
        # A deleted message's body stays in the stream until trimmed: blank it (and its edits) on the way out.
        flags = await self.client.execute_command("SMISMEMBER", gone_key(room_id), *asked)
        return blank_deleted(entries, {seq for seq, flag in zip(asked, flags, strict=True) if int(flag)})
