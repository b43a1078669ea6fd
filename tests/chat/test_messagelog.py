"""The Redis message log's persistence side (consumer group, trim, backlog), against the suite's real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from chat.epochs import MemoryEpochs
from chat.messagelog import GROUP, MessageLog, RateLimit, RateLimited, bucket_key, stream_key
from tests import redis_server

T = TypeVar("T")


def run(test: Callable[[MessageLog], Awaitable[T]], *, keep: int = 10000) -> T:
    async def main() -> T:
        assert redis_server.SERVER is not None
        client = aioredis.Redis.from_url(redis_server.SERVER.url)
        try:
            log = MessageLog(client, dedup_seconds=600, stream_keep=keep, epoch_store=MemoryEpochs())
            return await asyncio.wait_for(test(log), timeout=30)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def append(log: MessageLog, room_id: int, count: int, *, start: int = 0, floor: int = 0) -> None:
    for i in range(start, start + count):
        await log.append(
            room_id=room_id,
            slug=f"room-{room_id}",
            user_id=7,
            username="ann",
            body=f"m{i}",
            client_id=None,
            token=f"t{room_id}-{i}",
            floor=floor,
        )


async def stream_seqs(log: MessageLog, room_id: int) -> list[int]:
    rows: Any = await log.client.xrange(stream_key(room_id))
    return [int(eid.decode().split("-")[1]) for eid, _ in rows]


def test_append_creates_group_and_registers_room():
    """The first append creates the room's stream with the persist group and lists the room as active."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 3, 2)
        assert await log.active_rooms() == [3]
        groups = await log.client.xinfo_groups(stream_key(3))
        assert [g["name"].decode() for g in groups] == [GROUP]
        got = await log.persist_read(consumer="c1", room_ids=[3], count=10, block_ms=None, slugs={3: "lobby"})
        assert [(p.entry.seq, p.entry.body, p.entry.room) for p in got] == [(1, "m0", "lobby"), (2, "m1", "lobby")]

    run(scenario)


def test_trim_keeps_everything_not_acknowledged():
    """Trim never removes an entry that is pending (read, not acked) or not read yet, whatever ``keep`` is."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 1, 10)
        first = await log.persist_read(consumer="a", room_ids=[1], count=4, block_ms=None, slugs={})
        assert [p.entry.seq for p in first] == [1, 2, 3, 4]
        # Read but not acknowledged (1-4), never read (5-10): nothing may go.
        await log.trim_rooms([1])
        assert await stream_seqs(log, 1) == list(range(1, 11))
        # Acknowledge 1-2 only: 3 is still pending, so only 1-2 may go.
        await log.persist_ack(first[:2])
        await log.trim_rooms([1])
        assert await stream_seqs(log, 1) == list(range(3, 11))
        await log.persist_ack(first[2:])
        await log.trim_rooms([1])
        # 1-4 persisted; 5-10 never read by the group.
        assert await stream_seqs(log, 1) == list(range(5, 11))

    run(scenario, keep=1)


def test_trim_keeps_the_last_persisted_entries_for_resumes():
    """With everything acknowledged, trim keeps the ``stream_keep`` latest entries."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 1, 20)
        got = await log.persist_read(consumer="a", room_ids=[1], count=100, block_ms=None, slugs={})
        await log.persist_ack(got)
        removed = await log.trim_rooms([1])
        assert removed == 15
        assert await stream_seqs(log, 1) == list(range(16, 21))

    run(scenario, keep=5)


def test_claim_takes_over_idle_entries_of_another_consumer():
    """XAUTOCLAIM hands entries read but never acknowledged by a dead consumer to a live one."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 2, 5)
        await log.persist_read(consumer="dead", room_ids=[2], count=3, block_ms=None, slugs={})
        none, _ = await log.persist_claim_rooms(consumer="live", room_ids=[2], min_idle_ms=60_000, count=10)
        assert none == {}
        taken, gone = await log.persist_claim_rooms(consumer="live", room_ids=[2], min_idle_ms=0, count=10)
        assert [p.entry.seq for p in taken[2]] == [1, 2, 3] and gone == 0
        pending: list[Any] = await log.client.xpending_range(stream_key(2), GROUP, min="-", max="+", count=10)
        assert {p["consumer"].decode() for p in pending} == {"live"}

    run(scenario)


def test_backlog_counts_pending_and_unread_entries_per_room():
    """backlog_by_room reports pending (read, not acked) and unread entries and the oldest one's age."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 1, 6)
        await append(log, 2, 2)
        assert await log.backlog([]) == (0, None)
        got = await log.persist_read(consumer="a", room_ids=[1], count=4, block_ms=None, slugs={})
        await log.persist_ack(got[:1])
        rooms = {r.room_id: r for r in await log.backlog_by_room([1, 2, 99])}
        assert set(rooms) == {1, 2}  # room 99 has no stream
        assert (rooms[1].pending, rooms[1].undelivered) == (3, 2)
        assert (rooms[2].pending, rooms[2].undelivered) == (0, 2)
        assert rooms[1].oldest_age_ms is not None and rooms[1].oldest_age_ms >= 0
        total, oldest = await log.backlog([1, 2])
        assert total == 7
        assert oldest is not None
        await log.persist_ack(got[1:])
        rest = await log.persist_read(consumer="a", room_ids=[1, 2], count=10, block_ms=None, slugs={})
        await log.persist_ack(rest)
        assert await log.backlog([1, 2]) == (0, None)

    run(scenario)


def test_backlog_of_a_room_resumed_above_a_floor():
    """A room whose sequence resumed above a floor (Redis lost its data) counts only its real entries."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 5, 3, floor=1000)
        assert await stream_seqs(log, 5) == [1001, 1002, 1003]
        [room] = await log.backlog_by_room([5])
        assert (room.pending, room.undelivered) == (0, 3)
        assert room.oldest_age_ms is not None

    run(scenario)


def test_trim_rooms_trims_each_room_in_one_round_trip():
    """trim_rooms trims several rooms at once, each only below what is acknowledged."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 1, 6)
        await append(log, 2, 6)
        got = await log.persist_read(consumer="a", room_ids=[1, 2], count=10, block_ms=None, slugs={})
        await log.persist_ack([p for p in got if p.entry.room_id == 1])
        assert await log.trim_rooms([1, 2, 3]) == 4
        assert await stream_seqs(log, 1) == [5, 6]
        assert await stream_seqs(log, 2) == list(range(1, 7))

    run(scenario, keep=2)


def test_forget_removes_only_consumers_without_pending_entries():
    """persist_forget never removes a consumer that still holds entries (that would orphan them)."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 1, 3)
        await log.persist_read(consumer="busy", room_ids=[1], count=2, block_ms=None, slugs={})
        await log.persist_read(consumer="done", room_ids=[1], count=1, block_ms=None, slugs={})
        done = await log.persist_read(consumer="done", room_ids=[1], count=1, block_ms=None, slugs={})
        assert done == []
        await log.client.xack(stream_key(1), GROUP, "0-3")

        async def names() -> set[str]:
            return {c["name"].decode() for c in await log.client.xinfo_consumers(stream_key(1), GROUP)}

        assert await names() == {"busy", "done"}
        assert await log.persist_forget(room_ids=[1], consumer="busy") == 0
        assert await log.persist_forget(room_ids=[1], consumer="done") == 1
        assert await names() == {"busy"}
        await append(log, 1, 1, start=3)
        await log.persist_ack(await log.persist_read(consumer="idle", room_ids=[1], count=1, block_ms=None, slugs={}))
        assert await names() == {"busy", "idle"}
        assert await log.persist_forget(room_ids=[1, 2], min_idle_ms=3_600_000) == 0
        assert await log.persist_forget(room_ids=[1, 2], min_idle_ms=0) == 1  # "idle"; "busy" holds 2 entries
        assert await names() == {"busy"}

    run(scenario)


def test_scripts_are_reloaded_after_redis_forgets_them():
    """After SCRIPT FLUSH (as after a Redis restart) append and trim load their scripts again and run once."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 1, 2)
        await log.client.script_flush()
        await append(log, 1, 1, start=2)
        assert await stream_seqs(log, 1) == [1, 2, 3]
        got = await log.persist_read(consumer="a", room_ids=[1], count=10, block_ms=None, slugs={})
        await log.persist_ack(got)
        await log.client.script_flush()
        assert await log.trim_rooms([1]) == 2
        await log.client.script_flush()
        assert await log.persist_forget(room_ids=[1], consumer="a") == 1

    run(scenario, keep=1)


def test_claim_rooms_in_one_call_and_entries_deleted_while_pending():
    """persist_claim_rooms claims across rooms; a pending entry deleted by hand is dropped, not returned forever."""

    async def scenario(log: MessageLog) -> None:
        await append(log, 1, 3)
        await append(log, 2, 2)
        await log.persist_read(consumer="dead", room_ids=[1, 2], count=10, block_ms=None, slugs={})
        await log.client.xdel(stream_key(1), "0-2")
        taken, gone = await log.persist_claim_rooms(
            consumer="live", room_ids=[1, 2, 3], min_idle_ms=0, count=10, slugs={}
        )
        assert {rid: [p.entry.seq for p in items] for rid, items in taken.items()} == {1: [1, 3], 2: [1, 2]}
        assert gone == 1
        assert int((await log.client.xpending(stream_key(1), GROUP))["pending"]) == 2
        again, gone_again = await log.persist_claim_rooms(
            consumer="other", room_ids=[1], min_idle_ms=0, count=10, slugs={}
        )
        assert [p.entry.seq for p in again[1]] == [1, 3] and gone_again == 0

    run(scenario)


def test_append_charges_the_users_bucket_and_refuses_without_appending():
    """With a rate limit, each new message takes a token; an empty bucket appends nothing and says when to retry.

    A re-send of an accepted message (same token) is answered from the dedup key without a token.
    """
    limit = RateLimit(burst=2, per_second=0.5)

    async def send(log: MessageLog, token: str, room_id: int = 5) -> int:
        result = await log.append(
            room_id=room_id,
            slug="r",
            user_id=42,
            username="ann",
            body=token,
            client_id=token,
            token=token,
            floor=0,
            rate=limit,
        )
        return result.seq

    async def scenario(log: MessageLog) -> None:
        await log.client.delete(bucket_key(42))
        assert await send(log, "a") == 1
        assert await send(log, "b") == 2
        assert await send(log, "a") == 1  # duplicate: no token taken, no refusal
        with pytest.raises(RateLimited) as refused:
            await send(log, "c")
        # One token comes back every 2 s at 0.5/s.
        assert 0 < refused.value.retry_after_ms <= 2000
        assert await stream_seqs(log, 5) == [1, 2]
        # The bucket is the user's, whatever the room.
        with pytest.raises(RateLimited):
            await send(log, "d", room_id=6)
        ttl = await log.client.pttl(bucket_key(42))
        assert 0 < ttl <= 5000  # kept only as long as it takes to refill

    run(scenario)
