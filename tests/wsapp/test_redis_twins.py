"""The Redis relay and presence against the suite's real Redis, and the presence twin against them.

``RedisRelay`` is driven directly (no hub, no uvicorn): events out, a lost
connection reconnected and every channel confirmed again, unsubscribe.
``MemoryPresence`` answers the same operations as ``RedisPresence``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from chat.events import decode, presence_event
from chat.memorybroker import MemoryBroker
from tests import redis_server
from wsapp.memorypresence import MemoryPresence, PresenceTable
from wsapp.presence import Presence, RedisPresence
from wsapp.relay import RedisRelay

WAIT = 10.0


class Listener:
    """Records what the relay reports; ``wait`` for a condition on the record without sleeping."""

    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.events: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    async def on_subscribed(self, channel: str) -> None:
        self.subscribed.append(channel)
        self._changed.set()

    async def on_event(self, channel: str, data: bytes | str) -> None:
        self.events.append((channel, data.decode() if isinstance(data, bytes) else data))
        self._changed.set()

    async def wait(self, condition: Any) -> None:
        async with asyncio.timeout(WAIT):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


def client() -> aioredis.Redis:
    assert redis_server.SERVER is not None
    return aioredis.Redis.from_url(redis_server.SERVER.url)


def test_redis_relay_delivers_reconnects_and_unsubscribes() -> None:
    """Events reach the listener; a killed pub/sub connection is reconnected and every channel confirmed again."""

    async def scenario() -> None:
        publisher = client()
        relay = RedisRelay(client(), publisher=publisher, always=("always",))
        listener = Listener()
        try:
            await relay.start(listener)
            await listener.wait(lambda: "always" in listener.subscribed)
            assert relay.connected
            await relay.subscribe("room")
            await listener.wait(lambda: "room" in listener.subscribed)
            await relay.publish("room", "one")
            await listener.wait(lambda: ("room", "one") in listener.events)
            # Redis drops the subscriber (as at its output-buffer limit): the relay comes back by itself.
            confirmed = len(listener.subscribed)
            await publisher.client_kill_filter(_type="pubsub")
            await listener.wait(lambda: listener.subscribed[confirmed:].count("room") == 1)
            assert sorted(listener.subscribed[confirmed:]) == ["always", "room"]
            await relay.publish("room", "two")
            await listener.wait(lambda: ("room", "two") in listener.events)
            relay.unsubscribe("room")
            await publisher.publish("room", "after unsubscribe")
            await relay.publish("always", "marker")
            await listener.wait(lambda: ("always", "marker") in listener.events)
            assert ("room", "after unsubscribe") not in listener.events
        finally:
            await relay.stop()
            await publisher.aclose()

    asyncio.run(scenario())


async def presence_script(presence_of: Any, events: Any) -> list[Any]:
    """Joins and leaves of one user on two processes and of another user; the answers and the events published."""
    first: Presence = presence_of("p1")
    second: Presence = presence_of("p2")
    out: list[Any] = [
        await first.join(room_id=1, user_id=5, username="ann"),
        await second.join(room_id=1, user_id=5, username="ann"),  # already present elsewhere: no announcement
        await first.join(room_id=1, user_id=6, username="bob"),
        await first.members(room_id=1),
        await first.leave(room_id=1, user_id=5, username="ann"),  # still on p2: no announcement
        await first.refresh([(1, 6, "bob"), (1, 5, "ann")]),  # ann has no entry of p1 any more
        await second.leave(room_id=1, user_id=5, username="ann"),
        await first.members(room_id=1),
    ]
    out.append(await events())
    return out


def test_memory_presence_answers_like_redis_presence() -> None:
    """Join/leave announcements (exactly once per user), members and refresh agree between Redis and the twin."""

    async def on_redis() -> list[Any]:
        redis = client()
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe("kaiwa:{r:1}:live")
        published: list[str] = []

        async def events() -> list[Any]:
            async with asyncio.timeout(WAIT):
                while len(published) < 3:  # ann join, bob join, ann leave
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        published.append(message["data"].decode())
            return [decode(d) for d in published]

        try:
            return await presence_script(lambda pid: RedisPresence(redis, process_id=pid, ttl_seconds=30), events)
        finally:
            await pubsub.aclose()
            await redis.aclose()

    async def in_memory() -> list[Any]:
        broker = MemoryBroker()
        table = PresenceTable()
        published: list[str] = []

        class Tap:
            def subscribed_to(self, name: str) -> bool:
                return name == "kaiwa:{r:1}:live"

            def push(self, name: str, data: str) -> None:
                published.append(data)

        broker.attach(Tap())

        async def events() -> list[Any]:
            return [decode(d) for d in published]

        return await presence_script(lambda pid: MemoryPresence(table, broker, process_id=pid, ttl_seconds=30), events)

    on_redis_answers = asyncio.run(on_redis())
    assert on_redis_answers == asyncio.run(in_memory())
    assert on_redis_answers[-1] == [
        decode(presence_event("join", user_id=5, username="ann")),
        decode(presence_event("join", user_id=6, username="bob")),
        decode(presence_event("leave", user_id=5, username="ann")),
    ]
