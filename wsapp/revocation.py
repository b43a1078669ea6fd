"""Revocation: sockets whose session ended, or whose user may no longer see a room.

Sockets authenticate once at the handshake. Django signals (``chat.signals``)
publish on the control channel when a session ends, a user's password or
``is_active`` changes, a private room loses a member, or a room turns private
or is deleted; every process then closes the affected sockets with 4401, or
ends their room subscription with an unsolicited ``left``. Events published
while the control channel was not subscribed are lost, so a (re)subscription
re-checks every socket, and a socket checked before an event it may have
missed is re-checked when it registers. A periodic re-check
(``KAIWA_SESSION_RECHECK_SECONDS``) catches whatever the events could not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from django.conf import settings

from chat import selectors
from wsapp import auth, userevents
from wsapp.connection import Connection
from wsapp.dbthread import db_ready
from wsapp.errors import Close
from wsapp.roomaccess import RoomAccess

if TYPE_CHECKING:
    from wsapp.hub import Hub

logger = logging.getLogger("kaiwa.hub")

# A "user changed" control event is re-checked after this delay, so a password
# change in one browser has stored its new session hash before we look; room
# access events are re-checked at once and again after it (see _access_changed).
RECHECK_DELAY_SECONDS = 0.5
# A re-check that fails (database busy or down) is retried after these delays,
# then left to the periodic re-check.
RECHECK_RETRY_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)


class Revocation:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        # When the control channel's subscription was last confirmed, and the
        # last control event per user / per room (monotonic clock): a socket
        # whose session or room access was checked before one of these was
        # registered too late to be re-checked by it, so it is re-checked then.
        self._control_since = float("inf")
        self._user_events: dict[int, float] = {}
        self._room_events: dict[int, float] = {}
        # The joins' remembered room access: every event below that can take
        # access away drops what it concerns (wsapp/roomaccess.py).
        self.access = RoomAccess()

    def on_registered(self, conn: Connection) -> None:
        """A socket joined the hub: re-check it if a revocation may have been published since its session check."""
        if self._missed_control(conn.checked_at, self._user_events.get(conn.user_id)):
            self.hub.spawn(self._recheck_retrying([conn], delay=0.0))

    def on_joined(self, conn: Connection, *, room_id: int, checked_at: float) -> None:
        """``conn`` joined ``room_id`` after an access check at ``checked_at``: re-check it if that may be stale."""
        if self._missed_control(checked_at, self._room_events.get(room_id)):
            self.hub.spawn(self._recheck_access_of(user_id=conn.user_id, room_id=room_id, conns=[conn]))

    def _missed_control(self, checked_at: float, last_event: float | None) -> bool:
        """Whether a check made at ``checked_at`` may predate a control event this process handled or lost."""
        if checked_at < self._control_since:
            return True  # checked while the control channel was not (yet, or no longer) subscribed
        return last_event is not None and last_event >= checked_at

    def on_control(self, data: bytes | str) -> None:
        try:
            event = json.loads(data)
            kind = event.get("kind")
            now = time.monotonic()
            if kind in userevents.KINDS:
                # Not a revocation: a room the user can newly see, no longer see, or that was renamed.
                self.access.forget_room(int(event["room_id"]), now=now)
                userevents.on_control(self.hub, event)
                return
            if kind == "access":
                # A membership ended: re-check that user's sockets in that room.
                room_id = int(event["room_id"])
                self._note(self._room_events, room_id, now)
                self.access.forget_room(room_id, now=now)
                self._access_changed(user_id=int(event["user_id"]), room_id=room_id)
                return
            if kind == "room":
                # A room was made private or deleted: re-check every socket joined to it.
                room_id = int(event["room_id"])
                self._note(self._room_events, room_id, now)
                self.access.forget_room(room_id, now=now)
                self._access_changed(user_id=None, room_id=room_id)
                return
            user_id = int(event["user_id"])
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("ignoring malformed control event %r", data)
            return
        if kind not in ("user", "session"):
            return
        self._note(self._user_events, user_id, now)
        if kind == "user":
            self.access.forget_user(user_id, now=now)
        session_key = event.get("session_key")
        if session_key:
            for conn in list(self.hub.by_user.get(user_id, ())):
                if conn.session_key == session_key:
                    logger.info("session of user %s ended; closing connection %s with 4401", user_id, conn.id)
                    conn.close(Close.UNAUTHENTICATED)
        self.hub.spawn(self._recheck_user(user_id, delay=RECHECK_DELAY_SECONDS))

    @staticmethod
    def _note(events: dict[int, float], key: int, now: float) -> None:
        events[key] = now
        if len(events) > 10_000:  # only recent events matter (a check-to-register window)
            for k in [k for k, t in events.items() if now - t > 120]:
                del events[k]

    def _access_changed(self, *, user_id: int | None, room_id: int) -> None:
        """Re-check now, and again after RECHECK_DELAY_SECONDS.

        The signals publish from inside the transaction that changes the rows
        (a room's deletion deletes its memberships first), so the first check
        can still see them; the second one sees the committed state.
        """
        self.hub.spawn(self._recheck_access_of(user_id=user_id, room_id=room_id))
        self.hub.spawn(self._recheck_access_of(user_id=user_id, room_id=room_id, delay=RECHECK_DELAY_SECONDS))

    def on_control_subscribed(self) -> None:
        """The control channel is (re)subscribed: events published while it was not are lost, so re-check."""
        self._control_since = time.monotonic()
        self.access.reset(now=self._control_since)
        conns = list(self.hub.connections)
        if conns:
            logger.info("control channel subscribed; re-checking %d sockets' sessions and rooms", len(conns))
            self.hub.spawn(self._recheck_retrying(conns, delay=0.0))

    async def _recheck_user(self, user_id: int, *, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._recheck_retrying(list(self.hub.by_user.get(user_id, ())), delay=0.0)

    async def _recheck_retrying(self, conns: list[Connection], *, delay: float) -> None:
        """Re-check sessions and room access of ``conns``; a failure (database busy or down) is retried."""
        await asyncio.sleep(delay)
        for retry in RECHECK_RETRY_SECONDS:
            try:
                if await self._recheck(conns):
                    await self._recheck_access(
                        [(conn, m.room_id) for conn in conns if conn.open for m in list(conn.subscriptions.values())]
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

    async def periodic_recheck(self) -> None:
        interval = settings.KAIWA_SESSION_RECHECK_SECONDS
        while True:
            await asyncio.sleep(interval)
            try:
                await self._recheck(list(self.hub.connections))
            except Exception:
                logger.exception("periodic session re-check failed")
            try:
                await self._recheck_access(
                    [
                        (conn, m.room_id)
                        for conn in list(self.hub.connections)
                        for m in list(conn.subscriptions.values())
                    ]
                )
            except Exception:
                logger.exception("periodic room access re-check failed")

    async def _recheck_access_of(
        self, *, user_id: int | None, room_id: int, conns: list[Connection] | None = None, delay: float = 0.0
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        for retry in RECHECK_RETRY_SECONDS:
            state = self.hub.rooms.get(room_id)
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
            private = await selectors.aroom_privacy(room_id=room_id)
            if private is None:
                self.access.forget_room(room_id)
                allowed: set[int] = set()  # deleted
            elif not private:
                continue
            else:
                allowed = await selectors.aroom_member_ids(room_id=room_id, user_ids={c.user_id for c in conns})
            for conn in conns:
                if conn.user_id in allowed:
                    continue
                self.access.forget_member(room_id=room_id, user_id=conn.user_id)
                for slug, subscription in list(conn.subscriptions.items()):
                    if subscription.room_id == room_id and conn.open:
                        logger.info(
                            "user %s may no longer see room %s; ending connection %s's membership",
                            conn.user_id,
                            slug,
                            conn.id,
                        )
                        await self.hub.leave(conn, slug, tell=True)
