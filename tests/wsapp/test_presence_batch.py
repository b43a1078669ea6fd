"""RedisPresence sends the joins, leaves and member lists of one loop iteration as one pipeline (real Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from chat.events import UserSignal, decode
from tests import redis_server
from wsapp.presence import RedisPresence

WAIT = 10.0


def _client(**kw: Any) -> aioredis.Redis:
    assert redis_server.SERVER is not None
    return aioredis.Redis.from_url(redis_server.SERVER.url, **kw)


class _Counted:
    """Counts the pipelines the presence opens (the round trips of its batches)."""

    def __init__(self, presence: RedisPresence) -> None:
        self.count = 0
        original = presence.client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        presence.client.pipeline = pipeline  # type: ignore[method-assign]


def test_concurrent_joins_and_lists_share_one_round_trip_and_announce_each_user_once() -> None:
    """60 joins (two connections per user) and their member lists, all at once: two pipelines, right answers,
    one join event per user; then concurrent leaves announce each user once when their last entry goes."""

    async def scenario() -> None:
        redis = _client()
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe("kaiwa:{r:1}:live", "kaiwa:{r:2}:live")
        presence = RedisPresence(redis, process_id="p1", ttl_seconds=30)
        users = [(room, uid) for room in (1, 2) for uid in range(room * 100, room * 100 + 15)]
        try:
            async with asyncio.timeout(WAIT):
                # Redis learns the scripts (the first batch meets NOSCRIPT and runs again)
                await presence.join(room_id=9, user_id=1, username="warm")
                await presence.members(room_id=9)
                await presence.leave(room_id=9, user_id=1, username="warm")
                counted = _Counted(presence)

                async def join_then_list(room: int, uid: int) -> tuple[bool, list[dict[str, Any]]]:
                    first = await presence.join(room_id=room, user_id=uid, username=f"u{uid}")
                    return first, await presence.members(room_id=room)

                answers = await asyncio.gather(*(join_then_list(r, u) for r, u in users + users))
                assert counted.count == 2  # every join in one pipeline, every list in the next
                assert sorted(first for first, _ in answers) == [False] * 30 + [True] * 30
                for (room, _), (_, members) in zip(users + users, answers, strict=True):
                    assert [m["id"] for m in members] == sorted(u for r, u in users if r == room)
                left = await asyncio.gather(
                    *(presence.leave(room_id=r, user_id=u, username=f"u{u}") for r, u in users + users)
                )
                assert counted.count == 3
                # the member is per process: the first leave of a user removes it and announces the user gone
                assert sorted(left) == [False] * 30 + [True] * 30
                events: list[UserSignal] = []
                while len(events) < 60:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        event = decode(message["data"])
                        assert isinstance(event, UserSignal), event
                        events.append(event)
                kinds = sorted((e.event, e.user_id) for e in events)
                assert kinds == sorted([("join", u) for _, u in users] + [("leave", u) for _, u in users])
        finally:
            await pubsub.aclose()
            await redis.aclose()

    asyncio.run(scenario())


def test_a_redis_that_lost_its_scripts_still_answers() -> None:
    """After SCRIPT FLUSH (a restarted Redis) the batched calls get NOSCRIPT and are answered by loading the
    scripts again."""

    async def scenario() -> None:
        redis = _client()
        presence = RedisPresence(redis, process_id="p1", ttl_seconds=30)
        try:
            async with asyncio.timeout(WAIT):
                assert await presence.join(room_id=1, user_id=5, username="ann")
                await redis.script_flush()
                joined = await asyncio.gather(
                    presence.join(room_id=1, user_id=6, username="bob"), presence.members(room_id=1)
                )
                assert joined[0] is True
                assert [m["username"] for m in joined[1]] == ["ann", "bob"]
                assert await presence.leave(room_id=1, user_id=5, username="ann")
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_every_call_of_a_failed_batch_gets_the_error() -> None:
    """Redis unreachable: each joined call of the batch raises the connection error (none is left hanging)."""

    async def scenario() -> None:
        dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
        presence = RedisPresence(dead, process_id="p1", ttl_seconds=30)
        try:
            async with asyncio.timeout(WAIT):
                results = await asyncio.gather(
                    presence.join(room_id=1, user_id=5, username="ann"),
                    presence.members(room_id=1),
                    presence.members(room_id=1),
                    presence.leave(room_id=1, user_id=6, username="bob"),
                    return_exceptions=True,
                )
            assert all(isinstance(r, OSError | aioredis.ConnectionError) for r in results), results
        finally:
            await dead.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("callers", [1, 5])
def test_a_cancelled_caller_leaves_the_others_answered(callers: int) -> None:
    """A caller that gives up (its join timed out) does not take the batch's other answers with it."""

    async def scenario() -> None:
        redis = _client()
        presence = RedisPresence(redis, process_id="p1", ttl_seconds=30)
        try:
            async with asyncio.timeout(WAIT):
                await presence.join(room_id=1, user_id=5, username="ann")
                queued = asyncio.Event()

                async def give_up_later() -> list[dict[str, Any]]:
                    listing = presence.members(room_id=1)
                    queued.set()  # set just before members() runs up to its first await: in the batch
                    return await listing

                gone = asyncio.ensure_future(give_up_later())
                others = [asyncio.ensure_future(presence.members(room_id=1)) for _ in range(callers)]
                await queued.wait()
                gone.cancel()
                for listed in await asyncio.gather(*others):
                    assert [m["username"] for m in listed] == ["ann"]
                assert gone.cancelled()
        finally:
            await redis.aclose()

    asyncio.run(scenario())


def test_refresh_pushes_every_existing_entry_forward_in_one_round_trip_and_returns_the_missing() -> None:
    """Refresh of 1,203 entries in three rooms (one room over two chunks): one pipeline; the expiry of every
    existing entry moves forward, entries that were gone are returned (in no room do they come back by
    themselves), and another process's entries are untouched."""

    async def scenario() -> None:
        redis = _client()
        presence = RedisPresence(redis, process_id="p1", ttl_seconds=30)
        other = RedisPresence(redis, process_id="p2", ttl_seconds=30)
        entries = [(room, uid, f"u{uid}") for room, count in ((1, 1100), (2, 100), (3, 3)) for uid in range(count)]
        try:
            async with asyncio.timeout(WAIT):
                await redis.delete("kaiwa:{r:1}:presence", "kaiwa:{r:2}:presence", "kaiwa:{r:3}:presence")
                await asyncio.gather(*(presence.join(room_id=r, user_id=u, username=n) for r, u, n in entries))
                await other.join(room_id=1, user_id=5000, username="elsewhere")
                gone = [entries[0], entries[1099], entries[1100], entries[1202]]
                for room, uid, name in gone:
                    await redis.zrem(f"kaiwa:{{r:{room}}}:presence", f"p1|{uid}|{name}")
                # Scores far in the past: a refresh must move every existing one forward.
                for room in (1, 2, 3):
                    key = f"kaiwa:{{r:{room}}}:presence"
                    members = [bytes(m) for m in await redis.zrange(key, 0, -1)]  # type: ignore[arg-type]
                    await redis.zadd(key, dict.fromkeys(members, 1), xx=True)
                assert await presence.refresh([(9, 1, "warm")]) == [(9, 1, "warm")]  # Redis learns the script
                counted = _Counted(presence)
                missing = await presence.refresh(entries)
                assert counted.count == 1
                assert sorted(missing) == sorted(gone)
                now_ms = int((await redis.time())[0]) * 1000
                for room in (1, 2, 3):
                    scored: Any = await redis.zrange(f"kaiwa:{{r:{room}}}:presence", 0, -1, withscores=True)
                    scores: dict[bytes, float] = dict(scored)
                    mine = {m: s for m, s in scores.items() if m.startswith(b"p1|")}
                    assert len(mine) == sum(1 for r, _, _ in entries if r == room) - sum(
                        1 for g in gone if g[0] == room
                    )
                    assert all(s > now_ms + 20_000 for s in mine.values())
                    assert 0 < await redis.pttl(f"kaiwa:{{r:{room}}}:presence") <= 60_000
                assert (await redis.zscore("kaiwa:{r:1}:presence", "p2|5000|elsewhere") or 0) == 1
        finally:
            await redis.aclose()

    asyncio.run(scenario())
