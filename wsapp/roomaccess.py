"""Who may join which room, remembered per process: a join's room lookup without a thread hop.

A ``join`` needs the room by slug and, for a private room, the user's
membership. After one database read both are remembered here, so the next join
of a public room, or of a private one by the same member, costs no thread hop
and no query, and still works while the database is down.

Why a remembered answer never lets in a user who lost access:

* Only grants are remembered (a room, a membership). "No such room" and "not a
  member" always ask the database, so gaining access needs no event.
* Every control event that can take access away drops what it concerns, on
  every process (each subscribes to the control channel): ``access`` (a
  membership ended), ``room`` (made private, deleted), ``room_updated`` /
  ``room_removed`` (renamed, left) and ``user``; ``wsapp.revocation`` calls
  :meth:`RoomAccess.forget_room` / :meth:`RoomAccess.forget_user`, and its
  re-checks drop a membership they find gone (changes that bypassed signals).
* Signals publish from inside the transaction that changes the rows, so a read
  made just after the event may still see the old rows: a read that started
  before, or less than ``QUIET_SECONDS`` after, an event for its room or user
  is used for that join and not remembered.
* Events published while the control channel was not subscribed are lost: a
  (re)subscription forgets everything, and nothing read before the channel's
  subscription was confirmed is remembered.
* An answer carries when it was read; the join hands that time to the hub as
  its ``checked_at``, so a join whose answer predates an event is re-checked
  as before.
* Entries live at most ``KAIWA_ROOM_ACCESS_CACHE_SECONDS``, which bounds changes
  that bypass model signals (``QuerySet.update()``) like the session cache's
  lifetime does.

Joins of one room that all miss at once (a reconnect storm after a restart,
or after the entry expired) share one database read of it: the ORM's single
thread otherwise ran one read per join, about 10,000 queued reads for 100
rooms. Only a public room is shared, as it is the same for every user; a
private room (or none) still gets each user's own read. A shared answer
carries the time the read started, like any other, and an event ends the
sharing: a join after it starts a read of its own.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from django.conf import settings

from chat import selectors
from chat.models import Room
from wsapp.dbthread import db_call

# Longer than a transaction that deletes a membership takes to commit after
# its signal published the event (the revocation's own re-check waits 0.5 s).
QUIET_SECONDS = 2.0
# Events matter only to reads in flight or within QUIET_SECONDS of them.
_EVENT_MEMORY_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class _RoomEntry:
    room: Room
    read_at: float


class RoomAccess:
    """The remembered grants of one process (see the module's docstring for the rules)."""

    def __init__(self) -> None:
        self._rooms: dict[str, _RoomEntry] = {}  # slug -> the room
        self._slugs: dict[int, str] = {}  # room id -> its slug here
        self._members: dict[tuple[int, int], float] = {}  # (room id, user id) -> when read
        self._room_events: dict[int, float] = {}
        self._user_events: dict[int, float] = {}
        self._since = float("inf")  # the control channel's confirmed subscription
        # slug -> the database read of it under way, shared by the joins that miss meanwhile
        self._reading: dict[str, asyncio.Future[tuple[Room | None, float]]] = {}

    def __len__(self) -> int:
        return len(self._rooms) + len(self._members)

    def get(self, *, user_id: int, slug: str, now: float) -> tuple[Room, float] | None:
        """The room ``user_id`` may join and when that was read, if remembered and fresh."""
        ttl = settings.KAIWA_ROOM_ACCESS_CACHE_SECONDS
        entry = self._rooms.get(slug)
        if entry is None:
            return None
        if now - entry.read_at > ttl:
            self._drop_room(entry.room.pk)
            return None
        if not entry.room.private:
            return entry.room, entry.read_at
        key = (entry.room.pk, user_id)
        member_at = self._members.get(key)
        if member_at is None:
            return None
        if now - member_at > ttl:
            del self._members[key]
            return None
        return entry.room, min(entry.read_at, member_at)

    def put(self, *, user_id: int, room: Room, read_at: float) -> None:
        """Remember that ``user_id`` may join ``room``, as read from the database at ``read_at``."""
        if settings.KAIWA_ROOM_ACCESS_CACHE_SECONDS <= 0 or read_at < self._since:
            return
        last = max(self._room_events.get(room.pk, float("-inf")), self._user_events.get(user_id, float("-inf")))
        if read_at - last < QUIET_SECONDS:
            return
        limit = settings.KAIWA_ROOM_ACCESS_CACHE_ENTRIES
        while self._members and len(self) >= limit:
            del self._members[next(iter(self._members))]  # the oldest
        if len(self) >= limit:
            self._drop_room(next(iter(self._rooms.values())).room.pk)
        current = self._rooms.get(room.slug)
        if current is None or current.room.pk != room.pk or current.read_at < read_at:
            if current is not None and current.room.pk != room.pk:
                self._drop_room(current.room.pk)
            old_slug = self._slugs.get(room.pk)
            if old_slug is not None and old_slug != room.slug:
                self._rooms.pop(old_slug, None)
            self._rooms[room.slug] = _RoomEntry(room, read_at)
            self._slugs[room.pk] = room.slug
        if room.private:
            self._members[(room.pk, user_id)] = read_at

    def forget_room(self, room_id: int, *, now: float | None = None) -> None:
        """Access to the room may have changed: drop it and its memberships; hold off remembering it a while."""
        self._note(self._room_events, room_id, time.monotonic() if now is None else now)
        self._drop_room(room_id)
        self._reading.clear()

    def forget_user(self, user_id: int, *, now: float | None = None) -> None:
        """The user changed: drop their memberships; hold off remembering them a while."""
        self._note(self._user_events, user_id, time.monotonic() if now is None else now)
        for key in [k for k in self._members if k[1] == user_id]:
            del self._members[key]
        self._reading.clear()

    def forget_member(self, *, room_id: int, user_id: int) -> None:
        """A re-check found the user may no longer see the room."""
        self._members.pop((room_id, user_id), None)

    def reset(self, *, now: float | None = None) -> None:
        """The control channel is (re)subscribed: events may have been lost, so forget everything read before."""
        self._rooms.clear()
        self._slugs.clear()
        self._members.clear()
        self._reading.clear()
        self._since = time.monotonic() if now is None else now

    def _drop_room(self, room_id: int) -> None:
        slug = self._slugs.pop(room_id, None)
        if slug is not None:
            self._rooms.pop(slug, None)
        for key in [k for k in self._members if k[0] == room_id]:
            del self._members[key]

    @staticmethod
    def _note(events: dict[int, float], key: int, now: float) -> None:
        events[key] = now
        if len(events) > 10_000:
            for k in [k for k, t in events.items() if now - t > _EVENT_MEMORY_SECONDS]:
                del events[k]

    def reading(self, slug: str) -> asyncio.Future[tuple[Room | None, float]] | None:
        """The database read of ``slug`` under way, if one is."""
        return self._reading.get(slug)

    def share(self, slug: str, read: asyncio.Future[tuple[Room | None, float]]) -> None:
        """Let the joins of ``slug`` that miss while ``read`` runs wait for it (unless one is shared already)."""
        self._reading.setdefault(slug, read)
        read.add_done_callback(lambda done: self._unshare(slug, done))

    def _unshare(self, slug: str, read: asyncio.Future[tuple[Room | None, float]]) -> None:
        if self._reading.get(slug) is read:
            del self._reading[slug]
        if not read.cancelled():
            read.exception()  # retrieved here: its waiters may all be gone


async def room_for_join(access: RoomAccess, *, user_id: int, slug: str) -> tuple[Room | None, float]:
    """The room ``user_id`` may join under ``slug`` (None: none they can see), and when that was read."""
    hit = access.get(user_id=user_id, slug=slug, now=time.monotonic())
    if hit is not None:
        return hit
    reading = access.reading(slug)
    if reading is not None:
        # shield: a join that gives up (its client left) must not cancel the read for the others.
        room, read_at = await asyncio.shield(reading)
        if room is not None and not room.private:
            return room, read_at
    read = asyncio.ensure_future(_read(access, user_id=user_id, slug=slug))
    access.share(slug, read)
    return await asyncio.shield(read)


async def _read(access: RoomAccess, *, user_id: int, slug: str) -> tuple[Room | None, float]:
    read_at = time.monotonic()
    # A database that hangs gets the join a clear refusal (unavailable), not a wait as long as the outage.
    room = await db_call(
        selectors.room_get_for_user_id,
        stuck_after=settings.KAIWA_AUTH_DB_TIMEOUT_SECONDS,
        user_id=user_id,
        slug=slug,
    )
    if room is not None:
        access.put(user_id=user_id, room=room, read_at=read_at)
    return room, read_at
