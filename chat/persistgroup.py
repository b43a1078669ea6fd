"""The ``persist`` consumer group on every room stream: what the persistence worker reads, acknowledges and trims.

Entries are read (XREADGROUP), written to the database by the worker, then
acknowledged; entries of a consumer that died are claimed (XAUTOCLAIM); a
stream is trimmed only below what the group has acknowledged, so a resume
never finds a hole. ``slugs`` maps room ids to slugs for callers that build
frames; the worker passes none (its entries carry ``room=None``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from chat import logscripts
from chat.events import Entry, entry_from_stream, seq_of
from chat.logkeys import GROUP, ROOMS_KEY, room_id_from_stream_key, seq_key, stream_key


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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


class PersistGroup:
    """The persistence side of the Redis log; ``MessageLog`` adds append and range reads."""

    def __init__(self, client: aioredis.Redis, *, stream_keep: int) -> None:
        self.client = client
        self.stream_keep = stream_keep
        self._trim = client.register_script(logscripts.TRIM)
        self._forget = client.register_script(logscripts.FORGET)
        # On a cluster an idle worker polls (see persist_read): how long it waits between empty reads.
        self.cluster_poll_ms = settings.KAIWA_WORKER_CLUSTER_POLL_MS

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
        self,
        *,
        consumer: str,
        room_ids: Sequence[int],
        count: int,
        block_ms: int | None,
        slugs: dict[int, str] | None = None,
    ) -> list[PendingEntry]:
        """New entries for this consumer across ``room_ids`` (XREADGROUP ``>``)."""
        if not room_ids:
            return []
        streams: dict[Any, Any] = {stream_key(rid): ">" for rid in room_ids}
        if isinstance(self.client, RedisCluster):
            by_slot: dict[int, dict[Any, Any]] = {}
            for key in streams:
                by_slot.setdefault(self.client.keyslot(key), {})[key] = ">"
            if len(by_slot) > 1:
                return await self._persist_read_slots(consumer, list(by_slot.values()), count, block_ms, slugs)
        try:
            reply = await self.client.xreadgroup(GROUP, consumer, streams, count=count, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            for rid in room_ids:
                await self.ensure_group(rid)
            return []
        return self._pending_entries(reply, slugs)

    async def _persist_read_slots(
        self,
        consumer: str,
        groups: list[dict[Any, Any]],
        count: int,
        block_ms: int | None,
        slugs: dict[int, str] | None,
    ) -> list[PendingEntry]:
        """``persist_read`` on a cluster: one XREADGROUP per slot (one over several slots is CROSSSLOT).

        The cluster pipeline sends each node its reads in one round trip, the
        nodes in parallel. A blocking read cannot wait on several nodes at
        once, so an empty answer waits ``cluster_poll_ms`` (at most ``block_ms``).
        """
        pipe = self.client.pipeline()
        for streams in groups:
            pipe.xreadgroup(GROUP, consumer, streams, count=count)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        out: list[PendingEntry] = []
        for streams, reply in zip(groups, replies, strict=True):
            if isinstance(reply, ResponseError) and "NOGROUP" in str(reply):
                for key in streams:
                    await self.ensure_group(room_id_from_stream_key(key))
                continue
            if isinstance(reply, Exception):
                raise reply
            out.extend(self._pending_entries(reply, slugs))
        if not out and block_ms:
            await asyncio.sleep(min(block_ms, self.cluster_poll_ms) / 1000)
        return out

    async def persist_claim_rooms(
        self,
        *,
        consumer: str,
        room_ids: Sequence[int],
        min_idle_ms: int,
        count: int,
        slugs: dict[int, str] | None = None,
    ) -> tuple[dict[int, list[PendingEntry]], int]:
        """Take over entries other consumers read but never acknowledged (XAUTOCLAIM), several rooms in one round trip.

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

    def _claimed(
        self, room_id: int, reply: Any, slugs: dict[int, str] | None
    ) -> tuple[list[PendingEntry], list[str], bool]:
        """(entries, ids of deleted entries, whether some deleted entries came back without their id).

        Redis 7 drops a pending id whose entry was deleted and lists it in a
        third element. Redis 6.2 claims it, keeps it pending and answers nil in
        its place, without the id.
        """
        key = stream_key(room_id)
        slug = (slugs or {}).get(room_id)
        claimed: list[PendingEntry] = []
        deleted: list[str] = [_decode(eid) for eid in (reply[2] if len(reply) > 2 else [])]
        unnamed = False
        for eid, fields in reply[1]:
            if eid is None or not fields:
                unnamed = True
                continue
            claimed.append(PendingEntry(entry_from_stream(room_id, slug, eid, fields), key, _decode(eid)))
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
        """Trim room streams below what the group has persisted (keeping ``stream_keep``); returns entries removed."""
        if not room_ids:
            return 0

        def build(pipe: Pipeline) -> None:
            for rid in room_ids:
                pipe.execute_command("EVALSHA", self._trim.sha, 2, stream_key(rid), seq_key(rid), self.stream_keep)

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
                pipe.execute_command("EVALSHA", self._forget.sha, 1, stream_key(rid), min_idle_ms, consumer or "")

        return sum(int(r) for r in await self._pipeline(build))

    async def _pipeline(self, build: Callable[[Pipeline], None]) -> list[Any]:
        """Run a non-transactional pipeline whose scripts are called by EVALSHA.

        redis-py's ``Script`` in a pipeline sends ``SCRIPT EXISTS`` before every
        execution: a second round trip on each append. (``EVALSHA`` by
        ``execute_command``: a cluster pipeline refuses its ``evalsha`` method,
        and routes the command by its keys.) Here a script is loaded
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
                delivered = seq_of(group["last-delivered-id"])
                last = int(last_raw or 0)
                first_in_stream = seq_of(head[0][0]) if head else last + 1
                undelivered = max(0, last - max(delivered, first_in_stream - 1))
                pending = int(summary["pending"])
                first: int | None = None
                if pending:
                    first = seq_of(summary["min"])
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

    def _pending_entries(self, reply: Any, slugs: dict[int, str] | None = None) -> list[PendingEntry]:
        out: list[PendingEntry] = []
        for stream, messages in reply or []:
            key = _decode(stream)
            rid = room_id_from_stream_key(key)
            slug = (slugs or {}).get(rid)
            for eid, fields in messages:
                out.append(PendingEntry(entry_from_stream(rid, slug, eid, fields), key, _decode(eid)))
        return out
