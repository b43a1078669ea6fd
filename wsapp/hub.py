"""The per-process hub: rooms -> local connections, fed by ONE Redis pub/sub connection.

Why it is shaped like this (see docs/protocol.md, design notes):

* One PubSub connection per process, subscribed to a room's channel while
  this process has members in it, read by one supervised task that
  reconnects with backoff and logs. A socket never owns a Redis connection.
* Per room the hub remembers the last seq it delivered. A message with
  ``seq == last + 1`` is serialised once and ``put`` (never awaited) on every
  member's bounded queue; ``seq <= last`` is a duplicate and dropped;
  ``seq > last + 1`` means pub/sub lost something, so the gap is first read
  back from the stream (then the database) before anything newer. After a
  reconnect every room is repaired from the stream the moment its
  subscription is confirmed, because Redis pub/sub drops whatever was
  published while a subscriber was away.
* Invariant: between two awaits, ``room.last`` is the highest seq every live
  member of the room has been given. ``joined.last_seq`` is read from it in
  the same step that registers the connection, so the boundary is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import RedisError

from chat import selectors
from chat.messagelog import CONTROL_CHANNEL, Entry, MessageLog, channel, entry_from_event
from chat.models import Membership, Room
from chat.redisclient import make_async_client
from wsapp import auth
from wsapp.connection import Connection, RoomMembership, encode
from wsapp.errors import Close, unavailable
from wsapp.presence import Presence

logger = logging.getLogger("kaiwa.hub")

SUBSCRIBE_TIMEOUT_SECONDS = 5.0
# A pub/sub connection that carried nothing for this long gets a PING; one that
# stays silent for twice as long is treated as dead and reconnected.
PUBSUB_IDLE_PING_SECONDS = 10.0
# A "user changed" control event is re-checked after this delay, so a password
# change in one browser has stored its new session hash before we look.
RECHECK_DELAY_SECONDS = 0.5
# A re-check that fails (database busy or down) is retried after these delays,
# then left to the periodic re-check.
RECHECK_RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
# A ``since`` backlog is read in chunks (the first of this many messages, the
# next ones sized to about one outgoing queue's worth, at most the max) and fed
# into the connection's queue as the client reads; a client that takes none of
# it for this long is closed with 1013.
BACKLOG_FIRST_CHUNK = 8
BACKLOG_MAX_CHUNK = 256
BACKLOG_PACE_TIMEOUT_SECONDS = 20.0


class RangeIncomplete(Exception):
    """Neither the stream nor the database holds some seq of a range."""


async def db_ready() -> None:
    # The async ORM runs on one long-lived thread where Django never calls
    # close_old_connections(); a dropped database connection would stay broken.
    await sync_to_async(close_old_connections)()


@dataclass(eq=False)
class RoomState:
    room: Room
    channel: str
    last: int | None = None
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # conn -> None when live, or the frames held back while its backlog is fetched
    members: dict[Connection, list[tuple[str, int]] | None] = field(default_factory=dict)
    # user id -> that user's connections here (lists: almost always one, and a
    # one-element set costs four times the memory per idle socket)
    users: dict[int, list[Connection]] = field(default_factory=dict)
    pending_joins: int = 0

    @property
    def room_id(self) -> int:
        return int(self.room.pk)

    @property
    def slug(self) -> str:
        return self.room.slug


class Hub:
    def __init__(self, *, client: aioredis.Redis, log: MessageLog) -> None:
        self.client = client
        self.log = log
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.presence = Presence(client, process_id=self.process_id, ttl_seconds=settings.KAIWA_PRESENCE_TTL_SECONDS)
        self.rooms: dict[int, RoomState] = {}
        self.by_channel: dict[str, RoomState] = {}
        self.connections: set[Connection] = set()
        self.by_user: dict[int, list[Connection]] = {}  # see RoomState.users
        self.accepting = True
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._pubsub_client = make_async_client(blocking_reads=True)
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._shutdown_task: asyncio.Task[None] | None = None
        self._signal_previous: dict[int, Any] = {}
        self.connected = asyncio.Event()
        # When the control channel's subscription was last confirmed, and the
        # last control event per user / per room (monotonic clock): a socket
        # whose session or room access was checked before one of these was
        # registered too late to be re-checked by it, so it is re-checked then.
        self._control_since = float("inf")
        self._user_events: dict[int, float] = {}
        self._room_events: dict[int, float] = {}

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._reader(), name="hub-pubsub-reader"),
            asyncio.create_task(self._presence_loop(), name="hub-presence"),
            asyncio.create_task(self._recheck_loop(), name="hub-session-recheck"),
        ]
        self._install_signal_handlers()

    async def stop(self) -> None:
        """Lifespan exit: graceful shutdown if no signal started it, then stop the tasks."""
        if self._shutdown_task is None:
            await self.shutdown()
        else:
            with contextlib.suppress(Exception):
                await self._shutdown_task
        self._remove_signal_handlers()
        self._stopping = True
        for task in [*self._tasks, *self._background]:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._pubsub_client.aclose()

    async def shutdown(self) -> None:
        """Refuse new sends, let in-flight ones be acked or refused, then close every socket with 1012.

        Bounded by ``KAIWA_SHUTDOWN_GRACE_SECONDS``.
        """
        if not self.accepting:
            return
        self.accepting = False
        grace = settings.KAIWA_SHUTDOWN_GRACE_SECONDS
        deadline = time.monotonic() + grace
        logger.info("graceful shutdown: %d sockets, %d sends in flight", len(self.connections), self.inflight)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        for conn in list(self.connections):
            conn.close(Close.RESTART, flush=True)
        remaining = max(0.1, deadline - time.monotonic())
        waits = [asyncio.ensure_future(conn.closed.wait()) for conn in list(self.connections)]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=remaining)
            for fut in pending:
                fut.cancel()
        logger.info("graceful shutdown: sockets closed with 1012")

    def _install_signal_handlers(self) -> None:
        # uvicorn, on SIGTERM, sends 1012 to every socket itself and only then
        # runs the lifespan shutdown, so in-flight sends could never be acked.
        # We take the signal first, drain, and then hand it to uvicorn.
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if not callable(previous) or previous is signal.default_int_handler:
                continue
            self._signal_previous[sig] = previous
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig, previous in self._signal_previous.items():
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
                signal.signal(sig, previous)
        self._signal_previous.clear()

    def _on_signal(self, sig: int) -> None:
        previous: Callable[[int, Any], None] = self._signal_previous[sig]
        if self._shutdown_task is not None:
            previous(sig, None)  # a second signal: let uvicorn force its way out
            return
        logger.info("signal %s: draining before shutdown", signal.Signals(sig).name)

        async def drain_then_exit() -> None:
            try:
                await self.shutdown()
            finally:
                previous(sig, None)

        self._shutdown_task = asyncio.create_task(drain_then_exit(), name="hub-shutdown")

    # -- sends in flight (graceful shutdown waits for them) ---------------------------

    @contextlib.contextmanager
    def send_slot(self) -> Any:
        if not self.accepting:
            raise unavailable("The server is restarting; re-send with the same client_id after reconnecting.")
        self.inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()

    # -- connections ------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        _group_add(self.by_user, conn.user_id, conn)
        if self._missed_control(conn.checked_at, self._user_events.get(conn.user_id)):
            # A revocation may have been published between its session check and now.
            self._spawn(self._recheck_retrying([conn], delay=0.0))

    def _missed_control(self, checked_at: float, last_event: float | None) -> bool:
        """Whether a check made at ``checked_at`` may predate a control event this process handled or lost."""
        if checked_at < self._control_since:
            return True  # checked while the control channel was not (yet, or no longer) subscribed
        return last_event is not None and last_event >= checked_at

    async def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        _group_discard(self.by_user, conn.user_id, conn)
        for slug in list(conn.rooms):
            await self.leave(conn, slug)

    # -- rooms ------------------------------------------------------------------------

    async def _room_state(self, room: Room) -> RoomState:
        state = self.rooms.get(room.pk)
        if state is None:
            pubsub = self._pubsub
            if pubsub is None or not self.connected.is_set():
                raise unavailable("The server lost its connection to Redis; join again shortly.")
            state = RoomState(room=room, channel=channel(room.pk))
            self.rooms[room.pk] = state
            self.by_channel[state.channel] = state
            state.pending_joins += 1
            try:
                await pubsub.subscribe(state.channel)
            except BaseException:
                state.pending_joins -= 1
                self._discard_if_empty(state)
                raise
        else:
            state.pending_joins += 1
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_SECONDS):
                await asyncio.shield(state.ready)
        except BaseException:
            state.pending_joins -= 1
            self._discard_if_empty(state)
            raise
        state.pending_joins -= 1
        return state

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
        pubsub = self._pubsub
        if pubsub is not None and state.channel not in self.by_channel:
            self._spawn(self._unsubscribe(pubsub, state.channel))

    async def _unsubscribe(self, pubsub: Any, name: str) -> None:
        if name in self.by_channel:
            return  # joined again meanwhile
        try:
            await pubsub.unsubscribe(name)
        except (RedisError, OSError) as exc:
            logger.debug("unsubscribe %s failed (%r); the reconnect will drop it", name, exc)

    async def join(self, conn: Connection, room: Room, since: int | None, *, checked_at: float | None = None) -> None:
        """Register ``conn`` in ``room`` and queue ``joined`` (+ the backlog with ``since``).

        ``checked_at``: when the caller checked the user's access to the room
        (monotonic); if access may have changed since, it is re-checked.
        """
        if room.slug in conn.rooms:
            # Joining again restarts the room on this connection (a fresh boundary).
            self._unregister(conn, room.slug)
        state = await self._room_state(room)
        state.pending_joins += 1
        try:
            if not state.users.get(conn.user_id):
                await self.presence.join(room_id=state.room_id, user_id=conn.user_id, username=conn.username)
            present = await self.presence.members(room_id=state.room_id)
        except BaseException:
            state.pending_joins -= 1
            self._discard_if_empty(state)
            raise
        state.pending_joins -= 1
        if not conn.open:
            self._discard_if_empty(state)
            return
        assert state.last is not None
        last = state.last
        conn.rooms[room.slug] = RoomMembership(room_id=state.room_id, slug=room.slug)
        _group_add(state.users, conn.user_id, conn)
        if checked_at is not None and self._missed_control(checked_at, self._room_events.get(state.room_id)):
            self._spawn(self._recheck_access_of(user_id=conn.user_id, room_id=state.room_id, conns=[conn]))
        joined: dict[str, Any] = {
            "type": "joined",
            "room": room.slug,
            "last_seq": last,
            "presence": present,
            "reset": False,
        }
        backlog_size = 0 if since is None else last - since
        if since is not None and (since > last or backlog_size > settings.KAIWA_BACKLOG_LIMIT):
            joined["reset"] = True
        if since is None or joined["reset"] or backlog_size == 0:
            state.members[conn] = None
            conn.put_frame(joined)
            return
        assert since is not None
        held: list[tuple[str, int]] = []
        state.members[conn] = held
        try:
            await self._replay(conn, state, held, joined, since=since, last=last)
        except BaseException:
            if state.members.get(conn) is held:
                self._unregister(conn, room.slug)
            raise

    async def _replay(
        self,
        conn: Connection,
        state: RoomState,
        held: list[tuple[str, int]],
        joined: dict[str, Any],
        *,
        since: int,
        last: int,
    ) -> None:
        """Queue ``joined``, the backlog ``since < seq <= last`` and the held live frames, in that order.

        Runs in the joining connection's own task, never in the fan-out. The
        backlog is read in chunks and fed into the queue only as the writer
        drains it, so a backlog larger than the queue's limits (e.g. 80
        messages of 1 MB) reaches a client that reads; live frames of the room
        stay held meanwhile and count against the same limits (Connection.held_*).
        """
        after = since
        first = True
        chunk_size = BACKLOG_FIRST_CHUNK
        while after < last:
            upto = min(last, after + chunk_size)
            try:
                chunk = await self.fetch_range(state, after=after, upto=upto)
            except RangeIncomplete as exc:
                if first:
                    # Part of the backlog exists nowhere any more: the client must reload.
                    logger.error("%s; answering join with reset", exc)
                    joined["reset"] = True
                    chunk, upto = [], last
                else:
                    logger.error("%s; closing connection %s with 1011 so the client resyncs", exc, conn.id)
                    conn.close(Close.SERVER_ERROR)
                    return
            if state.members.get(conn) is not held:
                return  # left (or disconnected) while the backlog was read
            if first:
                first = False
                if not conn.put_frame(joined):
                    return
            chunk_bytes = 0
            for entry in chunk:
                text, nbytes = encode(entry.frame())
                chunk_bytes += nbytes
                if not await conn.wait_room(nbytes, BACKLOG_PACE_TIMEOUT_SECONDS):
                    if conn.open:
                        logger.warning(
                            "connection %s (user %s) read none of its backlog for %.0f s; closing with 1013",
                            conn.id,
                            conn.user_id,
                            BACKLOG_PACE_TIMEOUT_SECONDS,
                        )
                        conn.close(Close.TRY_AGAIN)
                    return
                if state.members.get(conn) is not held:
                    return
                if not conn.put(text, nbytes):
                    return
            after = upto
            if chunk:
                # About one queue's worth per read: few round trips for small
                # messages, bounded memory for large ones.
                average = max(1, chunk_bytes // len(chunk))
                chunk_size = max(1, min(BACKLOG_MAX_CHUNK, conn.max_messages, conn.max_bytes // average))
        if first and not conn.put_frame(joined):
            return
        # Hand the held live frames over: no await from here on, so nothing new is held meanwhile.
        state.members[conn] = None
        frames = list(held)
        self._release_held(conn, held)
        for text, nbytes in frames:
            if not conn.put(text, nbytes):
                break

    async def leave(self, conn: Connection, slug: str) -> None:
        state = self._unregister(conn, slug)
        if state is None:
            return
        if not state.users.get(conn.user_id):
            try:
                await self.presence.leave(room_id=state.room_id, user_id=conn.user_id, username=conn.username)
            except (RedisError, OSError) as exc:
                logger.warning("presence leave for user %s failed (%r); it expires by itself", conn.user_id, exc)

    def _unregister(self, conn: Connection, slug: str) -> RoomState | None:
        membership = conn.rooms.pop(slug, None)
        if membership is None:
            return None
        state = self.rooms.get(membership.room_id)
        if state is None:
            return None
        self._release_held(conn, state.members.pop(conn, None))
        _group_discard(state.users, conn.user_id, conn)
        self._discard_if_empty(state)
        return state

    @staticmethod
    def _release_held(conn: Connection, held: list[tuple[str, int]] | None) -> None:
        """Stop counting ``held`` frames against ``conn``'s limits (they are dropped or were handed over)."""
        if held:
            conn.held_messages -= len(held)
            conn.held_bytes -= sum(n for _, n in held)
            held.clear()
        if conn.held_messages <= 0:
            conn.held_messages = conn.held_bytes = 0

    def known_last(self, room_id: int) -> int | None:
        state = self.rooms.get(room_id)
        return None if state is None else state.last

    # -- reading ranges ---------------------------------------------------------------

    async def fetch_range(self, state: RoomState, *, after: int, upto: int) -> list[Entry]:
        """Messages ``after < seq <= upto``: from the stream, the trimmed prefix from the database."""
        if upto <= after:
            return []
        entries = await self.log.read_range(room_id=state.room_id, slug=state.slug, after=after, upto=upto)
        first = entries[0].seq if entries else upto + 1
        if first > after + 1:
            await db_ready()
            older = await selectors.amessage_range(room=state.room, after=after, upto=first - 1)
            entries = older + entries
        if [e.seq for e in entries] != list(range(after + 1, upto + 1)):
            have = {e.seq for e in entries}
            missing = [s for s in range(after + 1, upto + 1) if s not in have]
            raise RangeIncomplete(f"room {state.room_id}: seqs {missing[:5]}... are neither in Redis nor stored")
        return entries

    # -- delivery ---------------------------------------------------------------------

    def _deliver(self, state: RoomState, text: str, nbytes: int, *, skip_user: int | None = None) -> None:
        for conn, held in list(state.members.items()):
            if skip_user is not None and conn.user_id == skip_user:
                continue
            if held is None:
                conn.put(text, nbytes)
            elif conn.held_messages >= conn.max_messages or conn.held_bytes + nbytes > conn.max_bytes:
                # Held frames alone past the queue's bounds: the client cannot keep up.
                # (The backlog replay yields to them: it waits for room below the bounds,
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
        text, nbytes = encode(entry.frame())
        state.last = entry.seq
        self._deliver(state, text, nbytes)

    async def _on_message(self, state: RoomState, entry: Entry) -> None:
        if state.last is None or entry.seq <= state.last:
            return  # before this room's start point, or a duplicate
        if entry.seq > state.last + 1:
            logger.info("room %s: seq jumped %s -> %s; repairing from the stream", state.slug, state.last, entry.seq)
            await self._repair(state, upto=entry.seq - 1)
        if entry.seq == state.last + 1:
            self._deliver_entry(state, entry)

    async def _repair(self, state: RoomState, *, upto: int | None) -> None:
        """Deliver what the room missed, up to ``upto`` (None: whatever Redis has)."""
        assert state.last is not None
        if upto is None:
            current = await self.log.last_seq(state.room_id)
            if current is None:
                return  # Redis lost the sequence: the next append resumes above our last
            upto = current
        if upto <= state.last:
            return
        try:
            entries = await self.fetch_range(state, after=state.last, upto=upto)
        except RangeIncomplete as exc:
            # Lost for good (a Redis without persistence restarted before the
            # worker stored them). Members must reload: close them with 1011.
            logger.error("%s; closing the room's sockets with 1011 so clients resync", exc)
            for conn in list(state.members):
                conn.close(Close.SERVER_ERROR)
            state.last = upto
            return
        for entry in entries:
            if entry.seq == state.last + 1:
                self._deliver_entry(state, entry)

    # -- the pub/sub reader -------------------------------------------------------------

    async def _reader(self) -> None:
        backoff = 0.1
        while not self._stopping:
            pubsub = self._pubsub_client.pubsub(ignore_subscribe_messages=False)
            try:
                await pubsub.subscribe(CONTROL_CHANNEL, *list(self.by_channel))
                self._pubsub = pubsub
                self.connected.set()
                if backoff > 0.1:
                    logger.info("pub/sub reconnected; repairing %d rooms from the stream", len(self.rooms))
                backoff = 0.1
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("pub/sub connection lost (%r); reconnecting in %.1f s", exc, backoff)
            except Exception:
                logger.exception("pub/sub reader failed; reconnecting in %.1f s", backoff)
            finally:
                self.connected.clear()
                self._pubsub = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _read(self, pubsub: Any) -> None:
        quiet_since = time.monotonic()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=PUBSUB_IDLE_PING_SECONDS)
            if message is None:
                idle = time.monotonic() - quiet_since
                if idle >= 2 * PUBSUB_IDLE_PING_SECONDS and pinged:
                    raise TimeoutError("pub/sub connection silent; assuming it is dead")
                if not pinged:
                    await pubsub.ping()
                    pinged = True
                continue
            quiet_since = time.monotonic()
            pinged = False
            await self._dispatch(message)

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else name
        if kind == "subscribe":
            if name == CONTROL_CHANNEL:
                self._on_control_subscribed()
                return
            state = self.by_channel.get(name)
            if state is not None:
                await self._on_subscribed(state)
            return
        if kind == "unsubscribe":
            if name in self.by_channel and self._pubsub is not None:
                # A leave's UNSUBSCRIBE overtook a new join's SUBSCRIBE: subscribe again
                # (its confirmation repairs whatever was published meanwhile).
                self._spawn(self._pubsub.subscribe(name))
            return
        if kind != "message":
            return
        data = message["data"]
        if name == CONTROL_CHANNEL:
            self._on_control(data)
            return
        state = self.by_channel.get(name)
        if state is None:
            return
        event = json.loads(data)
        k = event.get("k")
        if k == "m":
            await self._on_message(state, entry_from_event(event))
        elif k == "p" and state.last is not None:
            user = {"id": int(event["uid"]), "username": str(event["un"])}
            frame = {"type": "presence", "room": state.slug, "event": event["event"], "user": user}
            self._deliver(state, *encode(frame))
        elif k == "t" and state.last is not None:
            uid = int(event["uid"])
            user = {"id": uid, "username": str(event["un"])}
            self._deliver(state, *encode({"type": "typing", "room": state.slug, "user": user}), skip_user=uid)

    async def _on_subscribed(self, state: RoomState) -> None:
        """A room's subscription is confirmed: set its start point, or repair what was missed."""
        if state.last is None:
            try:
                last = await self.log.last_seq(state.room_id)
                if last is None:
                    await db_ready()
                    last = await selectors.amessage_max_seq(room_id=state.room_id)
            except Exception as exc:
                if not state.ready.done():
                    state.ready.set_exception(exc)
                if isinstance(exc, RedisError | OSError):
                    raise  # the reader reconnects
                return
            state.last = last
            if not state.ready.done():
                state.ready.set_result(None)
            return
        await self._repair(state, upto=None)

    # -- typing -----------------------------------------------------------------------

    async def typing(self, conn: Connection, slug: str) -> None:
        membership = conn.rooms[slug]
        now = time.monotonic()
        if (now - membership.last_typing) * 1000 < settings.KAIWA_TYPING_INTERVAL_MS:
            return  # coalesced: the others already know this user is typing
        membership.last_typing = now
        event = {"k": "t", "uid": conn.user_id, "un": conn.username}
        await self.client.publish(channel(membership.room_id), json.dumps(event, ensure_ascii=False))

    # -- sessions -----------------------------------------------------------------------

    def _on_control(self, data: bytes | str) -> None:
        try:
            event = json.loads(data)
            kind = event.get("kind")
            now = time.monotonic()
            if kind == "access":
                # A membership ended: re-check that user's sockets in that room.
                room_id = int(event["room_id"])
                self._note(self._room_events, room_id, now)
                self._spawn(self._recheck_access_of(user_id=int(event["user_id"]), room_id=room_id))
                return
            if kind == "room":
                # A room was made private or deleted: re-check every socket joined to it.
                room_id = int(event["room_id"])
                self._note(self._room_events, room_id, now)
                self._spawn(self._recheck_access_of(user_id=None, room_id=room_id))
                return
            user_id = int(event["user_id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("ignoring malformed control event %r", data)
            return
        if kind not in ("user", "session"):
            return
        self._note(self._user_events, user_id, now)
        session_key = event.get("session_key")
        if session_key:
            for conn in list(self.by_user.get(user_id, ())):
                if conn.session_key == session_key:
                    logger.info("session of user %s ended; closing connection %s with 4401", user_id, conn.id)
                    conn.close(Close.UNAUTHENTICATED)
        self._spawn(self._recheck_user(user_id, delay=RECHECK_DELAY_SECONDS))

    @staticmethod
    def _note(events: dict[int, float], key: int, now: float) -> None:
        events[key] = now
        if len(events) > 10_000:  # only recent events matter (a check-to-register window)
            for k in [k for k, t in events.items() if now - t > 120]:
                del events[k]

    def _on_control_subscribed(self) -> None:
        """The control channel is (re)subscribed: events published while it was not are lost, so re-check."""
        self._control_since = time.monotonic()
        conns = list(self.connections)
        if conns:
            logger.info("control channel subscribed; re-checking %d sockets' sessions and rooms", len(conns))
            self._spawn(self._recheck_retrying(conns, delay=0.0))

    async def _recheck_user(self, user_id: int, *, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._recheck_retrying(list(self.by_user.get(user_id, ())), delay=0.0)

    async def _recheck_retrying(self, conns: list[Connection], *, delay: float) -> None:
        """Re-check sessions and room access of ``conns``; a failure (database busy or down) is retried."""
        await asyncio.sleep(delay)
        for retry in RECHECK_RETRY_SECONDS:
            try:
                if await self._recheck(conns):
                    await self._recheck_access(
                        [(conn, m.room_id) for conn in conns if conn.open for m in list(conn.rooms.values())]
                    )
                    return
            except Exception as exc:
                logger.warning("re-check failed (%r); retrying in %.1f s", exc, retry)
            await asyncio.sleep(retry)
        logger.warning("re-check of %d sockets kept failing; the periodic re-check will catch up", len(conns))

    async def _recheck(self, conns: list[Connection]) -> bool:
        """Close the sockets whose session is no longer valid; False if the check could not be made."""
        by_session: dict[str, list[Connection]] = {}
        for conn in conns:
            if conn.open:
                by_session.setdefault(conn.session_key, []).append(conn)
        if not by_session:
            return True
        await db_ready()
        for session_key, group in by_session.items():
            try:
                user = await auth.session_user(session_key)
            except Exception as exc:
                # Database or cache down: keep the sockets; the caller retries.
                logger.warning("session re-check failed (%r); will retry", exc)
                return False
            for conn in group:
                if user is None or user.pk != conn.user_id:
                    logger.info("session of user %s is no longer valid; closing %s with 4401", conn.user_id, conn.id)
                    conn.close(Close.UNAUTHENTICATED)
        return True

    async def _recheck_loop(self) -> None:
        interval = settings.KAIWA_SESSION_RECHECK_SECONDS
        while True:
            await asyncio.sleep(interval)
            try:
                await self._recheck(list(self.connections))
            except Exception:
                logger.exception("periodic session re-check failed")
            try:
                await self._recheck_access(
                    [(conn, m.room_id) for conn in list(self.connections) for m in list(conn.rooms.values())]
                )
            except Exception:
                logger.exception("periodic room access re-check failed")

    # -- room access ------------------------------------------------------------------------

    async def _recheck_access_of(
        self, *, user_id: int | None, room_id: int, conns: list[Connection] | None = None
    ) -> None:
        for retry in RECHECK_RETRY_SECONDS:
            state = self.rooms.get(room_id)
            if state is None:
                return
            if conns is None:
                conns = list(state.members) if user_id is None else list(state.users.get(user_id, ()))
            try:
                await self._recheck_access([(conn, room_id) for conn in conns])
                return
            except Exception as exc:
                logger.warning("room access re-check of room %s failed (%r); retrying in %.1f s", room_id, exc, retry)
            await asyncio.sleep(retry)

    async def _recheck_access(self, pairs: list[tuple[Connection, int]]) -> None:
        """End the memberships of sockets whose user may no longer see the room (removed, private, deleted)."""
        by_room: dict[int, list[Connection]] = {}
        for conn, room_id in pairs:
            if conn.open:
                by_room.setdefault(room_id, []).append(conn)
        if not by_room:
            return
        await db_ready()
        for room_id, conns in by_room.items():
            private = await Room.objects.filter(pk=room_id).values_list("private", flat=True).afirst()
            if private is None:
                allowed: set[int] = set()  # deleted
            elif not private:
                continue
            else:
                uids = {conn.user_id for conn in conns}
                allowed = {
                    uid
                    async for uid in Membership.objects.filter(room_id=room_id, user_id__in=uids).values_list(
                        "user_id", flat=True
                    )
                }
            for conn in conns:
                if conn.user_id in allowed:
                    continue
                for slug, membership in list(conn.rooms.items()):
                    if membership.room_id == room_id and conn.open:
                        logger.info(
                            "user %s may no longer see room %s; ending connection %s's membership",
                            conn.user_id,
                            slug,
                            conn.id,
                        )
                        await self.leave(conn, slug)
                        conn.put_frame({"type": "left", "room": slug})

    # -- presence ---------------------------------------------------------------------------

    async def _presence_loop(self) -> None:
        interval = settings.KAIWA_PRESENCE_TTL_SECONDS / 3
        while True:
            await asyncio.sleep(interval)
            try:
                entries = [
                    (state.room_id, uid, next(iter(conns)).username)
                    for state in list(self.rooms.values())
                    for uid, conns in list(state.users.items())
                    if conns
                ]
                missing = await self.presence.refresh(entries)
                for room_id, uid, username in missing:
                    state = self.rooms.get(room_id)
                    if state is not None and state.users.get(uid):
                        await self.presence.join(room_id=room_id, user_id=uid, username=username)
                await self.presence.sweep(list(self.rooms))
            except (RedisError, OSError) as exc:
                logger.warning("presence refresh failed (%r); retrying in %.1f s", exc, interval)
            except Exception:
                logger.exception("presence refresh failed")

    # -- helpers ------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _group_add(groups: dict[int, list[Connection]], key: int, conn: Connection) -> None:
    group = groups.setdefault(key, [])
    if conn not in group:
        group.append(conn)


def _group_discard(groups: dict[int, list[Connection]], key: int, conn: Connection) -> None:
    group = groups.get(key)
    if group is not None and conn in group:
        group.remove(conn)
        if not group:
            del groups[key]
