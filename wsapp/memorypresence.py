"""``MemoryPresence``: presence's in-memory twin (the ``wsapp.presence.Presence`` protocol).

Every simulated process gets its own ``MemoryPresence`` over one shared
``PresenceTable`` and ``MemoryBroker``. The rules are the presence scripts'
(``wsapp.presence``): an entry per process and user with an expiry; ``join``
is published only for a user's first live entry in the room and ``leave``
only when their last one goes, each exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from chat.events import presence_event
from chat.logkeys import channel
from chat.memorybroker import MemoryBroker


class PresenceTable:
    """The shared state: room -> (process, user id, username) -> expiry (seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.rooms: dict[int, dict[tuple[str, int, str], float]] = {}

    def live_others(self, room_id: int, member: tuple[str, int, str], now: float) -> bool:
        entries = self.rooms.get(room_id, {})
        return any(m != member and m[1] == member[1] and expiry > now for m, expiry in entries.items())


class MemoryPresence:
    def __init__(self, table: PresenceTable, broker: MemoryBroker, *, process_id: str, ttl_seconds: float) -> None:
        self.table = table
        self.broker = broker
        self.process_id = process_id
        self.ttl = ttl_seconds

    def _publish(self, room_id: int, kind: str, user_id: int, username: str) -> None:
        self.broker.publish(channel(room_id), presence_event(kind, user_id=user_id, username=username))

    async def join(self, *, room_id: int, user_id: int, username: str) -> bool:
        now = self.table.clock()
        member = (self.process_id, user_id, username)
        entries = self.table.rooms.setdefault(room_id, {})
        first = not self.table.live_others(room_id, member, now)
        previous = entries.get(member)
        entries[member] = now + self.ttl
        if first and (previous is None or previous <= now):
            self._publish(room_id, "join", user_id, username)
            return True
        return False

    async def leave(self, *, room_id: int, user_id: int, username: str) -> bool:
        now = self.table.clock()
        member = (self.process_id, user_id, username)
        removed = self.table.rooms.get(room_id, {}).pop(member, None) is not None
        if removed and not self.table.live_others(room_id, member, now):
            self._publish(room_id, "leave", user_id, username)
            return True
        return False

    async def members(self, *, room_id: int) -> list[dict[str, Any]]:
        now = self.table.clock()
        users = {uid: name for (_, uid, name), expiry in self.table.rooms.get(room_id, {}).items() if expiry > now}
        return [{"id": uid, "username": name} for uid, name in sorted(users.items(), key=lambda u: (u[1], u[0]))]

    async def refresh(self, entries: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        now = self.table.clock()
        missing = []
        for room_id, user_id, username in entries:
            member = (self.process_id, user_id, username)
            room = self.table.rooms.get(room_id, {})
            if member in room:
                room[member] = now + self.ttl
            else:
                missing.append((room_id, user_id, username))
        return missing

    async def sweep(self, room_ids: list[int]) -> int:
        now = self.table.clock()
        announced = 0
        for room_id in room_ids:
            room = self.table.rooms.get(room_id, {})
            expired = [m for m, expiry in room.items() if expiry <= now]
            for member in expired:
                del room[member]
            done: set[int] = set()
            for member in expired:
                if member[1] not in done and not self.table.live_others(room_id, member, now):
                    done.add(member[1])
                    self._publish(room_id, "leave", member[1], member[2])
                    announced += 1
        return announced
