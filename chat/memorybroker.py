"""An in-memory pub/sub server: the twin of Redis pub/sub for in-process tests.

``chat.memorylog.MemoryLog`` and ``wsapp.memorypresence.MemoryPresence``
publish through it, and each ``wsapp.memoryrelay.MemoryRelay`` (one per
simulated server process) subscribes to it, the way encode/broadcaster's
memory backend and centrifuge's memory broker stand in for Redis. Like
Redis, it keeps nothing for a subscriber that is away and delivers to each
subscriber in publish order. ``deliver`` is the one place every event passes
on its way to a relay, so a test can lose, repeat or reorder events there.
"""

from __future__ import annotations

from typing import Protocol


class Subscriber(Protocol):
    def subscribed_to(self, channel: str) -> bool: ...

    def push(self, channel: str, data: str) -> None: ...


class MemoryBroker:
    def __init__(self) -> None:
        self.subscribers: list[Subscriber] = []

    def attach(self, subscriber: Subscriber) -> None:
        self.subscribers.append(subscriber)

    def detach(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.remove(subscriber)

    def publish(self, channel: str, data: str) -> int:
        """Hand ``data`` to every subscriber of ``channel`` now (atomic with the caller's step); returns how many."""
        receivers = [s for s in self.subscribers if s.subscribed_to(channel)]
        for subscriber in receivers:
            self.deliver(subscriber, channel, data)
        return len(receivers)

    def deliver(self, subscriber: Subscriber, channel: str, data: str) -> None:
        subscriber.push(channel, data)
