"""Concurrent appends share one Redis round trip and answer exactly as appends sent one by one (real Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from chat import scriptbatch
from chat.epochs import MemoryEpochs
from chat.messagelog import AppendResult, MessageLog, RateLimit, RateLimited
from chat.scriptbatch import ScriptBatch
from tests import redis_server


def _count_pipelines(client: aioredis.Redis) -> list[int]:
    opened = [0]
    original = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        opened[0] += 1
        return original(*args, **kwargs)

    client.pipeline = pipeline  # type: ignore[method-assign]
    return opened


def _run(scenario: Any) -> None:
    async def main() -> None:
        assert redis_server.SERVER is not None
        client = aioredis.Redis.from_url(redis_server.SERVER.url)
        try:
            log = MessageLog(client, dedup_seconds=600, stream_keep=10000, epoch_store=MemoryEpochs())
            await asyncio.wait_for(scenario(log, client), timeout=30)
        finally:
            await client.aclose()

    asyncio.run(main())


async def _append(log: MessageLog, room_id: int, token: str, *, floor: int | None = None) -> AppendResult:
    """As the endpoint appends: no floor once the room's epoch is settled (the first append settles it)."""
    return await log.append(
        room_id=room_id, slug=f"room-{room_id}", user_id=7, username="ann", body=token,
        client_id=token, token=token, floor=floor,
    )  # fmt: skip


def test_concurrent_appends_get_consecutive_seqs_in_one_round_trip():
    """40 appends to two rooms started together: one pipeline; each room's seqs are consecutive in the order they
    were started; a client_id sent twice in the same batch is a duplicate of the first."""

    async def scenario(log: MessageLog, client: aioredis.Redis) -> None:
        for room in (1, 2):  # Redis learns the script, the rooms their epoch
            await _append(log, room, f"warm{room}", floor=0)
        opened = _count_pipelines(client)
        tokens = [(room, f"r{room}-{i}") for i in range(20) for room in (1, 2)]
        results = await asyncio.gather(*(_append(log, room, token) for room, token in tokens))
        assert opened[0] == 1
        for room in (1, 2):
            assert [r.seq for (rid, _), r in zip(tokens, results, strict=True) if rid == room] == list(range(2, 22))
        assert not any(r.duplicate for r in results)
        again = await asyncio.gather(_append(log, 1, "fresh"), _append(log, 1, "fresh"))
        assert [(r.seq, r.duplicate) for r in again] == [(22, False), (22, True)]

    _run(scenario)


def test_a_refusal_in_a_batch_refuses_only_its_own_append():
    """A rate-limited append in the middle of a batch raises RateLimited; the others are appended."""

    async def scenario(log: MessageLog, client: aioredis.Redis) -> None:
        await _append(log, 1, "warm", floor=0)
        tight = RateLimit(burst=1, per_second=0.001)
        results = await asyncio.gather(
            _append(log, 1, "a"),
            log.append(
                room_id=1, slug="room-1", user_id=8, username="bob", body="b1", client_id="b1", token="b1",
                floor=None, rate=tight,
            ),
            log.append(
                room_id=1, slug="room-1", user_id=8, username="bob", body="b2", client_id="b2", token="b2",
                floor=None, rate=tight,
            ),
            _append(log, 1, "c"),
            return_exceptions=True,
        )  # fmt: skip
        assert isinstance(results[2], RateLimited), results
        assert [r.seq for r in results if isinstance(r, AppendResult)] == [2, 3, 4]

    _run(scenario)


def test_appends_after_redis_forgot_the_script_are_still_appended():
    """SCRIPT FLUSH (a restarted Redis) between batches: the batch meets NOSCRIPT, loads the script, appends."""

    async def scenario(log: MessageLog, client: aioredis.Redis) -> None:
        await _append(log, 1, "first", floor=0)
        await client.script_flush()
        results = await asyncio.gather(*(_append(log, 1, f"m{i}") for i in range(3)))
        assert [r.seq for r in results] == [2, 3, 4]

    _run(scenario)


class _HeldBatches(ScriptBatch):
    """Records each batch it would send and answers it only when the test releases it (scheduling only)."""

    def __init__(self) -> None:
        super().__init__(client=None)
        self.sent: list[list[Any]] = []
        self.release: list[asyncio.Event] = []

    async def _execute(self, calls: list[Any]) -> list[Any]:
        self.sent.append([call.args[0] for call in calls])
        released = asyncio.Event()
        self.release.append(released)
        await released.wait()
        return [f"reply-{call.args[0]}" for call in calls]


async def _turns(condition: Any) -> None:
    async with asyncio.timeout(5):
        while True:
            if condition():
                return
            await asyncio.sleep(0)  # one loop turn: the tasks under test run


def test_calls_made_while_a_batch_is_in_flight_follow_it_as_one_batch(monkeypatch: Any) -> None:
    """While a batch waits for its answer, calls from later loop iterations gather and go out together
    as soon as it is answered; each caller gets its own reply."""
    monkeypatch.setattr(scriptbatch, "FOLLOW_SECONDS", 30.0)

    async def scenario() -> None:
        batch = _HeldBatches()
        first = asyncio.ensure_future(batch.call(None, [], [1]))  # type: ignore[arg-type]
        await _turns(lambda: batch.sent == [[1]])
        later = []
        for i in (2, 3, 4):  # one per loop iteration
            later.append(asyncio.ensure_future(batch.call(None, [], [i])))  # type: ignore[arg-type]
            for _ in range(3):
                await asyncio.sleep(0)
        assert batch.sent == [[1]]
        batch.release[0].set()
        await _turns(lambda: len(batch.sent) == 2)
        assert batch.sent == [[1], [2, 3, 4]]
        batch.release[1].set()
        async with asyncio.timeout(5):
            assert await first == "reply-1"
            assert await asyncio.gather(*later) == ["reply-2", "reply-3", "reply-4"]

    asyncio.run(scenario())


def test_a_batch_answered_late_holds_the_next_one_back_at_most_follow_seconds(monkeypatch: Any) -> None:
    """A batch stuck without an answer (a dead connection) does not hold the calls after it: they go out
    on their own once FOLLOW_SECONDS have passed."""
    monkeypatch.setattr(scriptbatch, "FOLLOW_SECONDS", 0.01)

    async def scenario() -> None:
        batch = _HeldBatches()
        first = asyncio.ensure_future(batch.call(None, [], [1]))  # type: ignore[arg-type]
        await _turns(lambda: batch.sent == [[1]])
        second = asyncio.ensure_future(batch.call(None, [], [2]))  # type: ignore[arg-type]
        await _turns(lambda: len(batch.sent) == 2)
        assert batch.sent == [[1], [2]] and not first.done()
        for released in batch.release:
            released.set()
        async with asyncio.timeout(5):
            assert (await first, await second) == ("reply-1", "reply-2")

    asyncio.run(scenario())


def test_a_batch_cancelled_while_it_waits_cancels_its_calls_and_the_next_call_is_still_sent(
    monkeypatch: Any,
) -> None:
    """Cancelling a waiting batch (loop shutdown) cancels the calls it held instead of leaving them unanswered,
    and a later call starts a batch of its own."""
    monkeypatch.setattr(scriptbatch, "FOLLOW_SECONDS", 30.0)

    async def scenario() -> None:
        batch = _HeldBatches()
        first = asyncio.ensure_future(batch.call(None, [], [1]))  # type: ignore[arg-type]
        await _turns(lambda: batch.sent == [[1]])
        sending = batch._in_flight
        waiting = asyncio.ensure_future(batch.call(None, [], [2]))  # type: ignore[arg-type]
        await _turns(lambda: batch._in_flight is not sending)  # the next batch started and waits
        follower = batch._in_flight
        assert follower is not None
        follower.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):
                await waiting
        batch.release[0].set()
        third = asyncio.ensure_future(batch.call(None, [], [3]))  # type: ignore[arg-type]
        await _turns(lambda: len(batch.sent) == 2)
        batch.release[1].set()
        async with asyncio.timeout(5):
            assert (await first, await third) == ("reply-1", "reply-3")
        assert batch.sent == [[1], [3]]

    asyncio.run(scenario())
