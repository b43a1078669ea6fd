"""The durable message log on Redis.

Everything Kaiwa keeps in Redis about messages goes through this module:

* ``append``: one Lua script takes a token from the sender's rate-limit
  bucket, assigns the room's next ``seq``, appends the message to the room's
  stream, remembers its ``client_id`` for dedup and publishes it to every
  server process. Because it is one atomic step, a room's sequence has no gaps
  and no reuse, and the publish order is the seq order; and a send costs one
  round trip to Redis.
* ``read_range``: re-read messages by seq (resume after reconnect, gap repair).
* the ``persist`` consumer group on each room stream, which the worker reads,
  acknowledges after the database commit, and reclaims from crashed consumers.
* ``trim``: room streams are trimmed only below what the group has persisted.
* the control channel, which carries session revocations to every process.

Layout: every key of a room carries the hash tag ``{r:<room id>}`` so that one
room lives in one Redis Cluster slot (the append script also touches the
sender's bucket ``kaiwa:{u:<user id>}:rate``, so Kaiwa needs a single Redis,
not a Cluster: see docs/protocol.md). A stream entry's id is ``0-<seq>``,
which turns "messages after seq N" into a plain ``XRANGE``.

Only Redis 6.2 commands are used (the bundled server is 6.2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, ResponseError

GROUP = "persist"
ROOMS_KEY = "kaiwa:rooms"
CONTROL_CHANNEL = "kaiwa:control"


def room_tag(room_id: int) -> str:
    return f"kaiwa:{{r:{room_id}}}"


def seq_key(room_id: int) -> str:
    return f"{room_tag(room_id)}:seq"


def stream_key(room_id: int) -> str:
    return f"{room_tag(room_id)}:log"


def channel(room_id: int) -> str:
    """The pub/sub channel that carries a room's live events."""
    return f"{room_tag(room_id)}:live"


def dedup_key(room_id: int, user_id: int, token: str) -> str:
    return f"{room_tag(room_id)}:dedup:{user_id}:{token}"


def bucket_key(user_id: int) -> str:
    """A user's send rate-limit bucket, shared by every connection and process."""
    return f"kaiwa:{{u:{user_id}}}:rate"


def room_id_from_stream_key(key: str) -> int:
    # "kaiwa:{r:42}:log" -> 42
    return int(key.split("{r:", 1)[1].split("}", 1)[0])


def parse_ts(ts_ms: int) -> datetime:
    """The moment of a log timestamp (milliseconds since the epoch, UTC)."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def ts_ms_of(moment: datetime) -> int:
    """The inverse of :func:`parse_ts`, truncated to whole milliseconds."""
    moment = moment.astimezone(UTC)
    return int(moment.replace(microsecond=0).timestamp()) * 1000 + moment.microsecond // 1000


def format_ts(ts_ms: int) -> str:
    """ISO-8601 UTC with milliseconds, as the wire contract prescribes."""
    return parse_ts(ts_ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Entry:
    """One message as the log holds it."""

    room_id: int
    room: str  # slug
    seq: int
    ts_ms: int
    user_id: int
    username: str
    body: str
    client_id: str | None

    @property
    def ts(self) -> str:
        return format_ts(self.ts_ms)

    def frame(self) -> dict[str, Any]:
        """The ``message`` frame of the wire contract."""
        return {
            "type": "message",
            "room": self.room,
            "seq": self.seq,
            "ts": self.ts,
            "user": {"id": self.user_id, "username": self.username},
            "body": self.body,
            "client_id": self.client_id,
        }


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


# KEYS: seq, stream, dedup, channel, bucket, rooms
# ARGV: floor, ttl, has_dedup, room_id, slug, uid, username, body, cid, burst ('' = no limit), per_second
# -> {1, seq, ts} appended | {0, seq, ts} a duplicate of that one | {-1, 0, 0} floor needed
#    | {-2, retry_after_ms, 0} rate limited
# A duplicate and a floor request take no token: the retry that follows is the same send.
# The bucket refills by the time elapsed on Redis's own clock, so the processes' clocks do not matter.
_APPEND = """
if ARGV[3] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local sep = string.find(seen, ':', 1, true)
    return {0, tonumber(string.sub(seen, 1, sep - 1)), tonumber(string.sub(seen, sep + 1))}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[1] == '' then
    return {-1, 0, 0}
  end
  redis.call('SET', KEYS[1], ARGV[1])
end
local t = redis.call('TIME')
local ts = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[10] ~= '' then
  local burst = tonumber(ARGV[10])
  local rate = tonumber(ARGV[11]) / 1000
  local data = redis.call('HMGET', KEYS[5], 'tokens', 'ts')
  local tokens = tonumber(data[1])
  local last = tonumber(data[2])
  if tokens == nil or last == nil then
    tokens = burst
    last = ts
  end
  tokens = math.min(burst, tokens + math.max(0, ts - last) * rate)
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.ceil((1 - tokens) / rate)
  end
  redis.call('HSET', KEYS[5], 'tokens', tostring(tokens), 'ts', tostring(ts))
  redis.call('PEXPIRE', KEYS[5], math.ceil(burst / rate) + 1000)
  if wait > 0 then
    return {-2, wait, 0}
  end
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], 'persist', '0', 'MKSTREAM')
end
redis.call('SADD', KEYS[6], ARGV[4])
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], '0-' .. seq,
  'ts', ts, 'uid', ARGV[6], 'un', ARGV[7], 'body', ARGV[8], 'cid', ARGV[9])
if ARGV[3] == '1' then
  redis.call('SET', KEYS[3], seq .. ':' .. ts, 'EX', ARGV[2])
end
redis.call('PUBLISH', KEYS[4], cjson.encode({k = 'm', rid = tonumber(ARGV[4]), room = ARGV[5], seq = seq,
  ts = ts, uid = tonumber(ARGV[6]), un = ARGV[7], body = ARGV[8], cid = ARGV[9]}))
return {1, seq, ts}
"""

# KEYS: stream, seq   ARGV: keep
# Trims below the oldest entry the persist group has not acknowledged, and
# keeps at most ``keep`` persisted entries for fast resumes.
_TRIM = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return 0 end
local delivered = nil
for _, g in ipairs(groups) do
  local name, last = nil, nil
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] end
    if g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  if name == 'persist' then delivered = last end
end
if not delivered then return 0 end
local safe = tonumber(string.sub(delivered, string.find(delivered, '-', 1, true) + 1)) + 1
local pending = redis.call('XPENDING', KEYS[1], 'persist')
if pending[2] then
  local lo = pending[2]
  local p = tonumber(string.sub(lo, string.find(lo, '-', 1, true) + 1))
  if p < safe then safe = p end
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local keep_from = last - tonumber(ARGV[1]) + 1
if keep_from < safe then safe = keep_from end
if safe <= 1 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', '0-' .. safe)
"""


# KEYS: stream   ARGV: min idle ms, consumer name ('' for any)
# Removes consumers of the persist group that hold no pending entry: the named
# one (a worker that stopped cleanly), or any idle that long (workers that were
# killed). Atomic, so a consumer cannot be handed entries between the check
# and the removal (XGROUP DELCONSUMER drops its pending entries).
_FORGET = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], 'persist')
if not ok then return 0 end
local removed = 0
for _, c in ipairs(consumers) do
  local name, pending, idle = nil, -1, -1
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] end
    if c[i] == 'pending' then pending = c[i + 1] end
    if c[i] == 'idle' then idle = c[i + 1] end
  end
  local wanted
  if ARGV[2] ~= '' then wanted = (name == ARGV[2]) else wanted = (idle >= tonumber(ARGV[1])) end
  if pending == 0 and wanted then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'persist', name)
    removed = removed + 1
  end
end
return removed
"""


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entry_from_fields(room_id: int, slug: str, entry_id: bytes | str, fields: dict[Any, Any]) -> Entry:
    f = {_decode(k): _decode(v) for k, v in fields.items()}
    seq = int(_decode(entry_id).split("-", 1)[1])
    return Entry(
        room_id=room_id,
        room=slug,
        seq=seq,
        ts_ms=int(f["ts"]),
        user_id=int(f["uid"]),
        username=f["un"],
        body=f["body"],
        client_id=f["cid"] or None,
    )


def entry_from_event(event: dict[str, Any]) -> Entry:
    """Turn a published message event (``k == "m"``) into an Entry."""
    return Entry(
        room_id=int(event["rid"]),
        room=str(event["room"]),
        seq=int(event["seq"]),
        ts_ms=int(event["ts"]),
        user_id=int(event["uid"]),
        username=str(event["un"]),
        body=str(event["body"]),
        client_id=str(event["cid"]) or None,
    )


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An entry handed to a persistence consumer, with its stream coordinates."""

    entry: Entry
    stream: str
    entry_id: str


@dataclass(frozen=True, slots=True)
class RoomBacklog:
    """A room's entries the persist group has not acknowledged yet."""

    room_id: int
    pending: int  # read by a consumer, not yet acknowledged (being written, or its consumer died)
    undelivered: int  # not read by any consumer yet
    oldest_age_ms: int | None  # age of the oldest of them

    @property
    def total(self) -> int:
        return self.pending + self.undelivered


_BACKLOG_CHUNK = 500


def _seq_of(entry_id: bytes | str) -> int:
    return int(_decode(entry_id).split("-", 1)[1])


class MessageLog:
    """The Redis side of the message history. One per process, sharing a pool."""

    def __init__(self, client: aioredis.Redis, *, dedup_seconds: int, stream_keep: int) -> None:
        self.client = client
        self.dedup_seconds = dedup_seconds
        self.stream_keep = stream_keep
        self._append = client.register_script(_APPEND)
        self._trim = client.register_script(_TRIM)
        self._forget = client.register_script(_FORGET)

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
            user_id,
            username,
            body,
            client_id or "",
            "" if rate is None else rate.burst,
            "" if rate is None else repr(float(rate.per_second)),
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

    async def read_range(self, *, room_id: int, slug: str, after: int, upto: int | None = None) -> list[Entry]:
        """Entries with ``after < seq <= upto`` still in the stream, oldest first.

        The stream may have been trimmed: if the first entry's seq is above
        ``after + 1``, the missing prefix is in the database.
        """
        end = "+" if upto is None else f"0-{upto}"
        if upto is not None and upto <= after:
            return []
        rows: list[Any] = (await self.client.xrange(stream_key(room_id), min=f"0-{after + 1}", max=end)) or []
        return [_entry_from_fields(room_id, slug, entry_id, fields) for entry_id, fields in rows]

    # -- persistence consumer group ---------------------------------------------

    async def active_rooms(self) -> list[int]:
        return sorted(int(x) for x in await self.client.smembers(ROOMS_KEY))

    async def active_room_count(self) -> int:
        """How many rooms ever had a message: a cheap way to notice a new one (the set only grows)."""
        return int(await self.client.scard(ROOMS_KEY))

    async def ensure_group(self, room_id: int) -> None:
        try:
            await self.client.xgroup_create(stream_key(room_id), GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def persist_read(
        self, *, consumer: str, room_ids: Sequence[int], count: int, block_ms: int | None, slugs: dict[int, str]
    ) -> list[PendingEntry]:
        """New entries for this consumer across ``room_ids`` (XREADGROUP ``>``)."""
        if not room_ids:
            return []
        streams: dict[Any, Any] = {stream_key(rid): ">" for rid in room_ids}
        try:
            reply = await self.client.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for rid in room_ids:
                await self.ensure_group(rid)
            return []
        return self._pending_entries(reply, slugs)

    async def persist_claim(
        self, *, consumer: str, room_id: int, min_idle_ms: int, count: int, slugs: dict[int, str]
    ) -> list[PendingEntry]:
        """Take over entries another consumer read but never acknowledged."""
        key = stream_key(room_id)
        try:
            reply = await self.client.xautoclaim(key, GROUP, consumer, min_idle_time=min_idle_ms, count=count)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        claimed, _, _ = self._claimed(room_id, reply, slugs)
        return claimed

    async def persist_claim_rooms(
        self, *, consumer: str, room_ids: Sequence[int], min_idle_ms: int, count: int, slugs: dict[int, str]
    ) -> tuple[dict[int, list[PendingEntry]], int]:
        """``persist_claim`` for several rooms in one round trip.

        Returns the entries taken over per room (rooms with none left out) and
        how many pending ids pointed at entries no longer in the stream; those
        cannot be written by anyone and are acknowledged so they stop coming back.
        """
        async with self.client.pipeline(transaction=False) as pipe:
            for rid in room_ids:
                pipe.xautoclaim(stream_key(rid), GROUP, consumer, min_idle_time=min_idle_ms, count=count)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        out: dict[int, list[PendingEntry]] = {}
        gone: dict[str, list[str]] = {}
        for rid, reply in zip(room_ids, replies, strict=True):
            if isinstance(reply, ResponseError) and "NOGROUP" in str(reply):
                continue
            if isinstance(reply, Exception):
                raise reply
            claimed, deleted, unnamed = self._claimed(rid, reply, slugs)
            if unnamed:
                deleted += await self._deleted_pending(rid, consumer, {p.entry_id for p in claimed})
            if claimed:
                out[rid] = claimed
            if deleted:
                gone[stream_key(rid)] = deleted
        if gone:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, ids in gone.items():
                    pipe.xack(key, GROUP, *ids)
                await pipe.execute()
        return out, sum(len(ids) for ids in gone.values())

    def _claimed(self, room_id: int, reply: Any, slugs: dict[int, str]) -> tuple[list[PendingEntry], list[str], bool]:
        """(entries, ids of deleted entries, whether some deleted entries came back without their id).

        Redis 7 drops a pending id whose entry was deleted and lists it in a
        third element. Redis 6.2 claims it, keeps it pending and answers nil in
        its place, without the id.
        """
        key = stream_key(room_id)
        slug = slugs.get(room_id, "")
        claimed: list[PendingEntry] = []
        deleted: list[str] = [_decode(eid) for eid in (reply[2] if len(reply) > 2 else [])]
        unnamed = False
        for eid, fields in reply[1]:
            if eid is None or not fields:
                unnamed = True
                continue
            claimed.append(PendingEntry(_entry_from_fields(room_id, slug, eid, fields), key, _decode(eid)))
        return claimed, deleted, unnamed

    async def _deleted_pending(self, room_id: int, consumer: str, claimed: set[str]) -> list[str]:
        """Ids pending for ``consumer`` whose entries are no longer in the stream."""
        key = stream_key(room_id)
        rows: list[Any] = await self.client.xpending_range(
            key, GROUP, min="-", max="+", count=10_000, consumername=consumer
        )
        candidates = [_decode(row["message_id"]) for row in rows if _decode(row["message_id"]) not in claimed]
        if not candidates:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for eid in candidates:
                pipe.xrange(key, min=eid, max=eid, count=1)
            found: list[Any] = await pipe.execute()
        return [eid for eid, rows in zip(candidates, found, strict=True) if not rows]

    async def persist_ack(self, entries: Iterable[PendingEntry]) -> None:
        by_stream: dict[str, list[str]] = {}
        for item in entries:
            by_stream.setdefault(item.stream, []).append(item.entry_id)
        if not by_stream:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, GROUP, *ids)
            await pipe.execute()

    async def trim_rooms(self, room_ids: Sequence[int]) -> int:
        """``trim`` for several rooms in one round trip; returns entries removed."""
        if not room_ids:
            return 0

        def build(pipe: Pipeline) -> None:
            for rid in room_ids:
                pipe.evalsha(self._trim.sha, 2, stream_key(rid), seq_key(rid), self.stream_keep)

        return sum(int(r) for r in await self._pipeline(build))

    async def persist_forget(
        self, *, room_ids: Sequence[int], consumer: str | None = None, min_idle_ms: int = 0
    ) -> int:
        """Remove group consumers that hold no pending entry; returns how many were removed.

        With ``consumer``: that one (a worker stopping cleanly). Without: every
        consumer idle for ``min_idle_ms`` or longer (workers that were killed;
        a live one holding nothing loses nothing, its next read recreates it).
        """
        if not room_ids:
            return 0

        def build(pipe: Pipeline) -> None:
            for rid in room_ids:
                pipe.evalsha(self._forget.sha, 1, stream_key(rid), min_idle_ms, consumer or "")

        return sum(int(r) for r in await self._pipeline(build))

    async def _pipeline(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """Run a non-transactional pipeline whose scripts are called by EVALSHA.

        redis-py's ``Script`` in a pipeline sends ``SCRIPT EXISTS`` before every
        execution: a second round trip on each append. Here a script is loaded
        only when Redis answers NOSCRIPT (first use, or after a restart), and
        the pipeline is sent again: NOSCRIPT means that script did not run, and
        every pipeline built here may safely run twice (trim, forget).
        """
        for attempt in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                build(pipe)
                try:
                    return list(await pipe.execute())
                except NoScriptError:
                    if attempt:
                        raise
            for script in (self._trim, self._forget):
                await self.client.script_load(script.script)
        raise AssertionError("unreachable")

    async def trim(self, room_id: int) -> int:
        """Trim a room stream below what is persisted; returns entries removed."""
        return int(await self._trim(keys=[stream_key(room_id), seq_key(room_id)], args=[self.stream_keep]))

    async def backlog(self, room_ids: Sequence[int]) -> tuple[int, int | None]:
        """(entries not yet persisted, age in ms of the oldest one) across rooms."""
        rooms = await self.backlog_by_room(room_ids)
        ages = [r.oldest_age_ms for r in rooms if r.oldest_age_ms is not None]
        return sum(r.total for r in rooms), (max(ages) if ages else None)

    async def backlog_by_room(self, room_ids: Sequence[int]) -> list[RoomBacklog]:
        """What the persist group has not acknowledged yet, per room (rooms with none left out).

        Two pipelined round trips per chunk of rooms, so the worker can afford
        to look regularly. Undelivered entries are counted from the stream's
        first entry, not from seq 1: a room whose sequence resumed above a
        floor has no entries below it.
        """
        out: list[RoomBacklog] = []
        now_s, now_us = await self.client.time()
        now_ms = int(now_s) * 1000 + int(now_us) // 1000
        ids = list(room_ids)
        for start in range(0, len(ids), _BACKLOG_CHUNK):
            chunk = ids[start : start + _BACKLOG_CHUNK]
            async with self.client.pipeline(transaction=False) as pipe:
                for rid in chunk:
                    key = stream_key(rid)
                    pipe.xinfo_groups(key)
                    pipe.get(seq_key(rid))
                    pipe.xpending(key, GROUP)
                    pipe.xrange(key, min="-", max="+", count=1)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
            found: list[tuple[int, int, int, int | None]] = []  # room, pending, undelivered, first unpersisted
            for i, rid in enumerate(chunk):
                groups, last_raw, summary, head = replies[4 * i : 4 * i + 4]
                if isinstance(groups, Exception) or isinstance(summary, Exception):
                    continue  # no stream or no group: nothing was ever appended
                group = next((g for g in groups if _decode(g["name"]) == GROUP), None)
                if group is None:
                    continue
                delivered = _seq_of(group["last-delivered-id"])
                last = int(last_raw or 0)
                first_in_stream = _seq_of(head[0][0]) if head else last + 1
                undelivered = max(0, last - max(delivered, first_in_stream - 1))
                pending = int(summary["pending"])
                first: int | None = None
                if pending:
                    first = _seq_of(summary["min"])
                elif undelivered:
                    first = max(delivered + 1, first_in_stream)
                if pending or undelivered:
                    found.append((rid, pending, undelivered, first))
            if not found:
                continue
            async with self.client.pipeline(transaction=False) as pipe:
                for rid, _, _, first in found:
                    pipe.xrange(stream_key(rid), min=f"0-{first}", max=f"0-{first}")
                heads: list[Any] = await pipe.execute(raise_on_error=False)
            for (rid, pending, undelivered, _), rows in zip(found, heads, strict=True):
                age: int | None = None
                if rows and not isinstance(rows, Exception):
                    fields = {_decode(k): _decode(v) for k, v in rows[0][1].items()}
                    age = max(0, now_ms - int(fields["ts"]))
                out.append(RoomBacklog(room_id=rid, pending=pending, undelivered=undelivered, oldest_age_ms=age))
        return out

    def _pending_entries(self, reply: Any, slugs: dict[int, str]) -> list[PendingEntry]:
        out: list[PendingEntry] = []
        for stream, messages in reply or []:
            key = _decode(stream)
            rid = room_id_from_stream_key(key)
            slug = slugs.get(rid, "")
            for eid, fields in messages:
                out.append(PendingEntry(_entry_from_fields(rid, slug, eid, fields), key, _decode(eid)))
        return out

    # -- control channel ----------------------------------------------------------

    async def publish_control(self, event: dict[str, Any]) -> None:
        await self.client.publish(CONTROL_CHANNEL, json.dumps(event))
