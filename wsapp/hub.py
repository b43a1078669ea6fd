"""The per-process hub: chat rooms -> local connections, fed by the relay.

Why it is shaped like this (docs/architecture.md, docs/protocol.md):

* The hub subscribes the relay (``wsapp.relay``) to a room's channel while
  this process has members in it. Per room it remembers the last seq it
  delivered. A message with ``seq == last + 1`` is serialised once and
  ``put`` (never awaited) on every member's bounded queue; ``seq <= last`` is a
  duplicate and dropped; ``seq > last + 1`` means the relay lost something, so
  the gap is first read back from the log (then the database) before anything
  newer. Every (re)subscription of a room repairs it from the log, because
  pub/sub drops whatever was published while a subscriber was away.
* Invariant: between two awaits, ``room.last`` is the highest seq every live
  member of the room has been given. ``joined.last_seq`` is read from it in
  the same step that registers the connection, so the boundary is exact. A
  member replaying a ``since`` backlog (``wsapp.backlog``) has its live frames
  held until the backlog is queued.

The hub owns no Redis connection: the log, the relay and presence are the
protocols of ``chat.messagelog``, ``wsapp.relay`` and ``wsapp.presence``, so
tests build it with their in-memory twins. Revocation, presence refresh and
process lifecycle live beside it (``wsapp.revocation``, ``wsapp.presencerefresh``,
``wsapp.lifecycle``); a room's own state is ``wsapp.roomstate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from django.conf import settings
from redis.exceptions import RedisError

from chat import events, metrics
from chat.logkeys import CONTROL_CHANNEL, channel
from chat.messagelog import Entry, Log
from chat.models import Room
from wsapp import backlog, epochsync, frames
from wsapp.admission import Admission
from wsapp.connection import Connection, Subscription
from wsapp.errors import Close, unavailable
from wsapp.lifecycle import Lifecycle
from wsapp.presence import Presence
from wsapp.presencerefresh import presence_refresh_loop
from wsapp.relay import Relay
from wsapp.revocation import Revocation
from wsapp.roomstate import RoomState, group_add, group_discard

logger = logging.getLogger("kaiwa.hub")

# A room's first join waits for Redis to confirm the room's subscription. While
# the relay stays connected, a confirmation later than SUBSCRIBE_CHECK_SECONDS
# means a busy event loop (a connect storm), not a broken Redis: the joins keep
# waiting, up to SUBSCRIBE_MAX_SECONDS. Refusing them instead dropped the room's
# state and its subscription with them, so under a 10,000-client storm rooms
# were subscribed again and again and never became ready.
SUBSCRIBE_CHECK_SECONDS = 5.0
SUBSCRIBE_MAX_SECONDS = 60.0


class Hub:
    def __init__(self, *, log: Log, relay: Relay, presence: Presence) -> None:
        self.log = log
        self.relay = relay
        self.presence = presence
        self.rooms: dict[int, RoomState] = {}
        self.by_channel: dict[str, RoomState] = {}
        self.connections: set[Connection] = set()
        self.by_user: dict[int, list[Connection]] = {}  # see RoomState.users
        self.revocation = Revocation(self)
        self.lifecycle = Lifecycle(self)
        self.admission = Admission(settings.KAIWA_ADMISSION_CONCURRENCY)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def accepting(self) -> bool:
        return self.lifecycle.accepting

    def send_slot(self) -> contextlib.AbstractContextManager[None]:
        return self.lifecycle.send_slot()

    async def start(self) -> None:
        await self.relay.start(self)
        self._tasks = [
            asyncio.create_task(presence_refresh_loop(self), name="hub-presence"),
            asyncio.create_task(self.revocation.periodic_recheck(), name="hub-session-recheck"),
        ]
        self.lifecycle.install_signal_handlers()

    async def stop(self) -> None:
        """Lifespan exit: graceful shutdown (unless a signal already ran it), then stop the tasks."""
        await self.lifecycle.finish_shutdown()
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.relay.stop()

    # -- connections ------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        metrics.connection_opened()
        group_add(self.by_user, conn.user_id, conn)
        self.revocation.on_registered(conn)

    async def remove(self, conn: Connection) -> None:
        if conn in self.connections:
            metrics.connection_closed(conn.close_code)
        self.connections.discard(conn)
        group_discard(self.by_user, conn.user_id, conn)
        for slug in list(conn.subscriptions):
            await self.leave(conn, slug)

    # -- rooms ------------------------------------------------------------------------

    async def _room_state(self, room: Room) -> RoomState:
        state = self.rooms.get(room.pk)
        if state is None:
            if not self.relay.connected:
                raise unavailable("The server lost its connection to Redis; join again shortly.")
            state = RoomState(room=room, channel=channel(room.pk))
            self.rooms[room.pk] = state
            self.by_channel[state.channel] = state
            state.pending_joins += 1
            try:
                await self.relay.subscribe(state.channel)
            except BaseException:
                state.pending_joins -= 1
                self._discard_if_empty(state)
                raise
        else:
            state.pending_joins += 1
        try:
            await self._subscribed(state)
        except BaseException:
            state.pending_joins -= 1
            self._discard_if_empty(state)
            raise
        state.pending_joins -= 1
        return state

    async def _subscribed(self, state: RoomState) -> None:
        started = time.monotonic()
        while True:
            try:
                async with asyncio.timeout(SUBSCRIBE_CHECK_SECONDS):
                    await asyncio.shield(state.ready)
                return
            except TimeoutError:
                if not self.relay.connected or time.monotonic() - started >= SUBSCRIBE_MAX_SECONDS:
                    raise

    def _discard_if_empty(self, state: RoomState) -> None:
        if state.members or state.pending_joins > 0:
            return
        if self.rooms.get(state.room_id) is state:
            del self.rooms[state.room_id]
            self.by_channel.pop(state.channel, None)
        if not state.ready.done():
            state.ready.cancel()
        elif not state.ready.cancelled():
            state.ready.exception()  # retrieved: no "never retrieved" warning
        if state.channel not in self.by_channel:
            self.relay.unsubscribe(state.channel)

    async def join(
        self,
        conn: Connection,
        room: Room,
        since: int | None,
        *,
        checked_at: float | None = None,
        epoch: str | None = None,
        presence: bool = True,
    ) -> None:
        """Register ``conn`` in ``room`` and queue ``joined`` (+ the backlog with ``since``).

        ``checked_at``: when the caller checked the user's access to the room
        (monotonic); if access may have changed since, it is re-checked.
        ``epoch``: the room's epoch the client last saw; another one means its
        ``since`` counts in a history the room no longer continues: ``reset``.
        ``presence``: False receives everything without making the user present.
        """
        # Up to the registration in one admission slot (wsapp.admission); the
        # backlog replay runs at the client's reading pace, outside it.
        async with self.admission.slot():
            entered = await self._enter(conn, room, since, checked_at=checked_at, epoch=epoch, presence=presence)
        if entered is None:
            return
        state, held, joined, last = entered
        assert since is not None
        try:
            await backlog.replay(self, conn, state, held, joined, since=since, last=last)
        except BaseException:
            if state.members.get(conn) is held:
                self._unregister(conn, room.slug)
            raise

    async def _enter(
        self,
        conn: Connection,
        room: Room,
        since: int | None,
        *,
        checked_at: float | None,
        epoch: str | None,
        presence: bool,
    ) -> tuple[RoomState, list[tuple[str, int]], dict[str, Any], int] | None:
        """Register ``conn`` in ``room``; queue ``joined``, or return what the backlog replay needs."""
        previous = conn.subscriptions.get(room.slug)
        if previous is not None:
            # Joining again restarts the room on this connection (a fresh boundary).
            was = self._unregister(conn, room.slug)
            if was is not None and previous.present and not presence:
                await self._absent_if_last(was, conn)
        state = await self._room_state(room)
        state.pending_joins += 1
        try:
            if presence and not state.present.get(conn.user_id):
                await self.presence.join(room_id=state.room_id, user_id=conn.user_id, username=conn.username)
            present = await self.presence.members(room_id=state.room_id)
        except BaseException:
            state.pending_joins -= 1
            self._discard_if_empty(state)
            raise
        state.pending_joins -= 1
        if not conn.open:
            self._discard_if_empty(state)
            return None
        assert state.last is not None
        last = state.last
        conn.subscriptions[room.slug] = Subscription(room_id=state.room_id, slug=room.slug, present=presence)
        group_add(state.users, conn.user_id, conn)
        if presence:
            group_add(state.present, conn.user_id, conn)
        if checked_at is not None:
            self.revocation.on_joined(conn, room_id=state.room_id, checked_at=checked_at)
        backlog_size = 0 if since is None else last - since
        reset = since is not None and (since > last or backlog_size > settings.KAIWA_BACKLOG_LIMIT)
        if since is not None and epoch is not None and epoch != state.epoch:
            reset = True
        metrics.joined(since=since, reset=reset)
        joined = frames.joined(room=room.slug, last_seq=last, presence=present, reset=reset, epoch=state.epoch)
        if since is None or reset or backlog_size == 0:
            state.members[conn] = None
            conn.put_frame(joined)
            return None
        held: list[tuple[str, int]] = []
        state.members[conn] = held
        return state, held, joined, last

    async def leave(self, conn: Connection, slug: str, *, tell: bool = False) -> None:
        """End ``conn``'s membership of ``slug``; with ``tell``, put its ``left`` frame.

        The ``left`` goes on the queue in the same step as the subscription
        ends, before the presence update awaits Redis: another task that finds
        the membership gone (a ``room_removed`` for the same room) puts its
        frame after ``left``, as protocol.md 7.5 orders them.
        """
        subscription = conn.subscriptions.get(slug)
        state = self._unregister(conn, slug)
        if tell:
            conn.put_frame(frames.left(slug))
        if state is not None and subscription is not None and subscription.present:
            await self._absent_if_last(state, conn)

    async def _absent_if_last(self, state: RoomState, conn: Connection) -> None:
        """``conn`` no longer makes its user present: announce them gone if no other connection here does."""
        if not state.present.get(conn.user_id):
            try:
                await self.presence.leave(room_id=state.room_id, user_id=conn.user_id, username=conn.username)
            except (RedisError, OSError) as exc:
                logger.warning("presence leave for user %s failed (%r); it expires by itself", conn.user_id, exc)

    def _unregister(self, conn: Connection, slug: str) -> RoomState | None:
        subscription = conn.subscriptions.pop(slug, None)
        if subscription is None:
            return None
        state = self.rooms.get(subscription.room_id)
        if state is None:
            return None
        backlog.release_held(conn, state.members.pop(conn, None))
        group_discard(state.users, conn.user_id, conn)
        group_discard(state.present, conn.user_id, conn)
        self._discard_if_empty(state)
        return state

    def known_last(self, room_id: int) -> int | None:
        state = self.rooms.get(room_id)
        return None if state is None else state.last

    # -- delivery ---------------------------------------------------------------------

    def deliver(self, state: RoomState, text: str, nbytes: int, *, skip_user: int | None = None) -> None:
        for conn, held in list(state.members.items()):
            if skip_user is not None and conn.user_id == skip_user:
                continue
            if held is None:
                conn.put(text, nbytes)
            elif conn.held_messages >= conn.max_messages or conn.held_bytes + nbytes > conn.max_bytes:
                # Held frames alone past the queue's bounds: the client cannot keep up.
                # (The backlog replay yields to them: it waits for space below the bounds,
                # queued and held frames together.)
                logger.warning(
                    "connection %s (user %s): frames held during its backlog overflow; closing with 1013",
                    conn.id,
                    conn.user_id,
                )
                conn.close(Close.TRY_AGAIN)
            elif conn.open:
                held.append((text, nbytes))
                conn.held_messages += 1
                conn.held_bytes += nbytes

    def _deliver_entry(self, state: RoomState, entry: Entry) -> None:
        text, nbytes = frames.encode(frames.message(entry))
        state.last = entry.seq
        metrics.fanout(len(state.members))
        self.deliver(state, text, nbytes)

    async def _on_message(self, state: RoomState, entry: Entry) -> None:
        if state.last is None:
            return  # before this room's start point
        if entry.epoch and entry.epoch != state.epoch:
            # A message of another epoch: its epoch event was missed (settle now), or it is stale.
            await self._repair(state, upto=None)
            if entry.epoch != state.epoch:
                return
        if entry.seq <= state.last:
            return  # a duplicate
        if entry.seq > state.last + 1:
            logger.info("room %s: seq jumped %s -> %s; repairing from the stream", state.slug, state.last, entry.seq)
            await self._repair(state, upto=entry.seq - 1)
        if entry.seq == state.last + 1:
            self._deliver_entry(state, entry)

    async def _repair(self, state: RoomState, *, upto: int | None) -> None:
        """Deliver what the room missed, up to ``upto`` (None: whatever the log has)."""
        assert state.last is not None
        if upto is None:
            epoch, current = await self.log.room_state(state.room_id)
            if epoch != state.epoch or current is None or current < state.last:
                # Redis lost, restored or re-seeded the room's state: settle a new epoch above what we delivered.
                await epochsync.settle(self, state)
                return
            upto = current
        if upto <= state.last:
            return
        try:
            entries = await backlog.fetch_range(self.log, state, after=state.last, upto=upto)
        except backlog.RangeIncomplete as exc:
            # Lost for good (a Redis without persistence restarted before the
            # worker stored them). Members must reload: close them with 1011.
            logger.error("%s; closing the room's sockets with 1011 so clients resync", exc)
            metrics.gap_lost()
            for conn in list(state.members):
                conn.close(Close.SERVER_ERROR)
            state.last = upto
            return
        metrics.gap_repaired(len(entries))
        for entry in entries:
            if entry.seq == state.last + 1:
                self._deliver_entry(state, entry)

    # -- the relay's listener ---------------------------------------------------------

    async def on_event(self, name: str, data: bytes | str) -> None:
        if name == CONTROL_CHANNEL:
            self.revocation.on_control(data)
            return
        state = self.by_channel.get(name)
        if state is None:
            return
        event = events.decode(data)
        if isinstance(event, Entry):
            await self._on_message(state, event)
        elif isinstance(event, events.EpochChange):
            await epochsync.on_epoch_change(self, state, event)
        elif event is None or state.last is None:
            return
        elif event.event is not None:
            frame = frames.presence(room=state.slug, event=event.event, user_id=event.user_id, username=event.username)
            self.deliver(state, *frames.encode(frame))
        else:
            frame = frames.typing(room=state.slug, user_id=event.user_id, username=event.username)
            self.deliver(state, *frames.encode(frame), skip_user=event.user_id)

    async def on_subscribed(self, name: str) -> None:
        """A subscription is confirmed: set a room's start point, or repair what it missed."""
        if name == CONTROL_CHANNEL:
            self.revocation.on_control_subscribed()
            return
        state = self.by_channel.get(name)
        if state is None:
            return
        if state.last is not None:
            await self._repair(state, upto=None)
            return
        try:
            # Once per room and process: is Redis's state the database's history? (chat.epochs)
            settled = await self.log.settle(room_id=state.room_id, slug=state.slug, floor=0)
        except Exception as exc:
            if not state.ready.done():
                state.ready.set_exception(exc)
            if isinstance(exc, RedisError | OSError):
                raise  # the relay reconnects
            return
        state.last = settled.last
        state.epoch = settled.epoch
        if not state.ready.done():
            state.ready.set_result(None)

    # -- typing -----------------------------------------------------------------------

    async def typing(self, conn: Connection, slug: str) -> None:
        subscription = conn.subscriptions[slug]
        now = time.monotonic()
        if (now - subscription.last_typing) * 1000 < settings.KAIWA_TYPING_INTERVAL_MS:
            return  # coalesced: the others already know this user is typing
        subscription.last_typing = now
        event = events.typing_event(user_id=conn.user_id, username=conn.username)
        await self.relay.publish(channel(subscription.room_id), event)

    # -- helpers ----------------------------------------------------------------------

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
