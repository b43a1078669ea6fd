"""The in-memory log keeps the append script's rules: the same operations give the same answers as on Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

import pytest
import redis.asyncio as aioredis

from chat import epochs, events
from chat.logkeys import channel
from chat.memorybroker import MemoryBroker
from chat.memorylog import MemoryLog
from chat.messagelog import FloorNeeded, Log, MessageLog, RateLimit, RateLimited
from tests import redis_server


class Recorder:
    """A broker subscriber that keeps what is published on one channel."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.data: list[str] = []

    def subscribed_to(self, name: str) -> bool:
        return name == self.name

    def push(self, name: str, data: str) -> None:
        self.data.append(data)


async def script(log: Log) -> list[Any]:
    """One fixed sequence of log operations; what each answered (seq, duplicate, refusal, range)."""
    out: list[Any] = []

    async def append(token: str, *, user_id: int = 7, floor: int | None = None, rate: RateLimit | None = None) -> None:
        try:
            result = await log.append(
                room_id=1, slug="lobby", user_id=user_id, username="ann", body=f"body {token}",
                client_id=token if token.startswith("c") else None, token=token, floor=floor, rate=rate,
            )  # fmt: skip
        except FloorNeeded:
            out.append("floor needed")
        except RateLimited:
            out.append("rate limited")
        else:
            out.append((result.seq, result.duplicate))

    out.append(await log.last_seq(1))
    await append("c1")  # no sequence and no floor
    await append("c1", floor=5)  # resumes above the floor
    await append("c1")  # the same client_id: the original seq
    await append("t2")
    limit = RateLimit(burst=2, per_second=0.001)
    await append("c3", user_id=9, rate=limit)
    await append("c4", user_id=9, rate=limit)
    await append("c5", user_id=9, rate=limit)  # the bucket is empty
    await append("c3", user_id=9, rate=limit)  # a duplicate takes no token: still acked
    out.append(await log.last_seq(1))
    out.append(await log.last_seq(2))
    for after, upto in ((0, None), (5, 7), (7, 7), (6, None)):
        entries = await log.read_range(room_id=1, slug="lobby", after=after, upto=upto)
        out.append([(e.seq, e.user_id, e.body, e.client_id, e.room) for e in entries])
    return out


def without_ts(data: list[str]) -> list[Any]:
    decoded = [events.decode(d) for d in data]
    return [dataclasses.replace(e, ts_ms=0) if isinstance(e, events.Entry) else e for e in decoded]


def test_memory_log_answers_like_the_redis_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Epoch seeding, floor, dedup, rate limit, range reads and the published events are the same on both logs."""

    def numbered_epochs() -> None:
        counter = itertools.count(1)
        monkeypatch.setattr(epochs, "new_epoch", lambda: f"e{next(counter)}")

    async def on_redis() -> tuple[list[Any], list[str]]:
        assert redis_server.SERVER is not None
        client = aioredis.Redis.from_url(redis_server.SERVER.url)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(channel(1))
            numbered_epochs()
            log = MessageLog(client, dedup_seconds=600, stream_keep=100, epoch_store=epochs.MemoryEpochs())
            answers = await script(log)
            published: list[str] = []
            async with asyncio.timeout(10):
                while len(published) < 5:  # the epoch's seed, then the four appends that were accepted
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        published.append(message["data"].decode())
            return answers, published
        finally:
            await pubsub.aclose()
            await client.aclose()

    async def in_memory() -> tuple[list[Any], list[str]]:
        broker = MemoryBroker()
        recorder = Recorder(channel(1))
        broker.attach(recorder)
        numbered_epochs()
        return await script(MemoryLog(broker, dedup_seconds=600)), recorder.data

    redis_answers, redis_events = asyncio.run(asyncio.wait_for(on_redis(), 30))
    memory_answers, memory_events = asyncio.run(asyncio.wait_for(in_memory(), 30))
    assert redis_answers == memory_answers
    assert redis_answers[1:9] == [
        "floor needed", (6, False), (6, True), (7, False), (8, False), (9, False), "rate limited", (8, True)
    ]  # fmt: skip
    assert len(memory_events) == 5
    assert without_ts(memory_events)[0] == events.EpochChange("e1", 5)
    assert all(e.epoch == "e1" for e in without_ts(memory_events)[1:])
    assert without_ts(redis_events) == without_ts(memory_events)
