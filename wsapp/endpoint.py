"""``/ws``: the handshake (Origin, session) and the one reader loop of each connection.

A raw ASGI endpoint rather than Starlette's ``WebSocket`` wrapper: the reader
and the writer task share the socket, and a close may have to be sent while
the writer is blocked on a client that stopped reading.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from django.conf import settings
from starlette.types import Receive, Scope, Send

from chat import metrics, services
from chat.messagelog import RateLimit
from wsapp import auth, frames, roomaccess, schemas
from wsapp.connection import Connection, Phase
from wsapp.dbthread import db_ready
from wsapp.errors import (
    BAD_REQUEST,
    LIMIT,
    NOT_FOUND,
    NOT_JOINED,
    Close,
    Refused,
    handshake_close_for,
    refusal_for,
    too_big_reason,
)
from wsapp.framebudget import FrameBudget
from wsapp.hub import Hub

logger = logging.getLogger("kaiwa.ws")


class Endpoint:
    """The ASGI app mounted at ``/ws``; finds the hub on the FastAPI app's state."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        try:
            accepted = await self._handshake(scope, receive, send)
        except OSError as exc:
            # The client went away mid-handshake (uvicorn's ClientDisconnected is an OSError).
            logger.debug("connection ended by %r", exc)
            return
        metrics.handshake(started, accepted is not None)
        if accepted is None:
            return
        hub, conn = accepted
        # The read loop runs in this frame, not one more level down: every
        # frame of this task lives as long as the socket (idle memory).
        conn.reader = asyncio.current_task()
        hub.add(conn)
        budget = FrameBudget()
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = self._accept_frame(conn, budget, message)
                if text is not None:
                    await self._handle(hub, conn, budget, text)
        except asyncio.CancelledError:
            if conn.phase is not Phase.ABANDONED:
                raise
        except OSError as exc:
            logger.debug("connection ended by %r", exc)
        finally:
            try:
                await hub.remove(conn)
            finally:
                await conn.finish()

    async def _handshake(self, scope: Scope, receive: Receive, send: Send) -> tuple[Hub, Connection] | None:
        """Accept an allowed, authenticated socket; refuse the others (None)."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return None
        if not auth.origin_allowed(scope):
            logger.info("refused a WebSocket from foreign origin %r", auth.header(scope, b"origin"))
            # A close before accept is an HTTP 403 at the handshake.
            await send({"type": "websocket.close", "code": Close.POLICY})
            return None
        runtime = getattr(self.app.state, "runtime", None)
        hub: Hub | None = getattr(runtime, "hub", None)
        if hub is None:
            await self._not_ready(send, Close.SERVER_ERROR)
            return None
        async with hub.admission.slot():
            return await self._admit(hub, scope, send)

    async def _not_ready(self, send: Send, code: int) -> None:
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": code, "reason": "server not ready"})

    async def _admit(self, hub: Hub, scope: Scope, send: Send) -> tuple[Hub, Connection] | None:
        """The session check and the accept, in one of the hub's admission slots (wsapp.admission)."""
        if not hub.accepting:  # checked once admitted: a shutdown may have begun while it waited
            await self._not_ready(send, Close.RESTART)
            return None
        session_key = auth.cookies(scope).get(settings.SESSION_COOKIE_NAME)
        checked_at = time.monotonic()
        try:
            # No db_ready() hop: a cached session needs no database, and the
            # check of an uncached one runs on sessioncheck's own threads.
            user = await auth.session_user(session_key)
        except Exception as exc:
            close = handshake_close_for(exc)
            if close is None:
                logger.exception("session check failed at the handshake")
                close = (Close.SERVER_ERROR, "server error")
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": close[0], "reason": close[1]})
            return None
        await send({"type": "websocket.accept"})
        if user is None or session_key is None:
            await send({"type": "websocket.close", "code": Close.UNAUTHENTICATED, "reason": "unauthenticated"})
            return None
        conn = Connection(
            send=send,
            user_id=int(user.pk),
            username=user.get_username(),
            session_key=session_key,
            checked_at=checked_at,
        )
        return hub, conn

    def _accept_frame(self, conn: Connection, budget: FrameBudget, message: Any) -> str | None:
        """The text of an incoming frame to handle, or None (ignored, refused, or the socket closed)."""
        if message["type"] != "websocket.receive" or not conn.open:
            return None
        if not budget.take_frame():
            logger.warning("connection %s (user %s) floods frames; closing with 1008", conn.id, conn.user_id)
            conn.close(Close.POLICY, "too many frames per second")
            return None
        limit = settings.KAIWA_MAX_FRAME_BYTES
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            if len(data) > limit:
                conn.close(Close.TOO_BIG, too_big_reason(len(data), limit))
                return None
            self._refuse_bad(conn, budget, "Binary frames are not accepted: send JSON in a text frame.", None, None)
            return None
        if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
            conn.close(Close.TOO_BIG, too_big_reason(len(text.encode("utf-8", "surrogatepass")), limit))
            return None
        return str(text)

    def _refuse_bad(
        self, conn: Connection, budget: FrameBudget, message: str, ref: str | None, room: str | None
    ) -> None:
        if not budget.bad_frame():
            logger.warning("connection %s (user %s) sends too many bad frames; closing 1008", conn.id, conn.user_id)
            conn.close(Close.POLICY, "too many bad frames")
            return
        metrics.refused(BAD_REQUEST, "invalid")
        conn.put_frame(frames.error(Refused(BAD_REQUEST, message), ref=ref, room=room))

    async def _handle(self, hub: Hub, conn: Connection, budget: FrameBudget, text: str) -> None:
        try:
            request = schemas.parse(text)
        except schemas.BadFrame as bad:
            self._refuse_bad(conn, budget, bad.message, bad.ref, bad.room)
            return
        room = getattr(request, "room", None)
        try:
            if isinstance(request, schemas.Ping):
                conn.put_frame(frames.pong())
            elif isinstance(request, schemas.Join):
                await self._join(hub, conn, request)
            elif isinstance(request, schemas.Leave):
                await hub.leave(conn, request.room, tell=True)
            elif isinstance(request, schemas.Send):
                await self._send(hub, conn, request)
            elif isinstance(request, schemas.Edit | schemas.Delete):
                await self._change(hub, conn, request)
            elif isinstance(request, schemas.Typing):
                if request.room not in conn.subscriptions:
                    raise Refused(NOT_JOINED, f"Join the room {request.room!r} before sending typing notices.")
                await hub.typing(conn, request.room)
        except Exception as exc:
            refusal = refusal_for(exc)
            if refusal is None:
                logger.exception("unexpected error handling %s from user %s", type(request).__name__, conn.user_id)
                conn.close(Close.SERVER_ERROR)
                return
            if refusal.code == BAD_REQUEST and not budget.bad_frame():
                conn.close(Close.POLICY, "too many bad frames")
                return
            metrics.refused(refusal.code, type(request).__name__.lower())
            conn.put_frame(frames.error(refusal, ref=request.ref, room=room))

    async def _join(self, hub: Hub, conn: Connection, request: schemas.Join) -> None:
        limit = settings.KAIWA_MAX_ROOMS_PER_CONNECTION
        if request.room not in conn.subscriptions and len(conn.subscriptions) >= limit:
            raise Refused(LIMIT, f"A connection may join at most {limit} rooms; leave one first.")
        # Remembered per process after the first lookup (no thread hop); the
        # answer's read time is the access check's time for the revocation.
        access = hub.revocation.access
        room, checked_at = await roomaccess.room_for_join(access, user_id=conn.user_id, slug=request.room)
        if room is None:
            raise Refused(NOT_FOUND, f"There is no room {request.room!r} you can join.")
        await hub.join(conn, room, request.since, checked_at=checked_at, epoch=request.epoch, presence=request.presence)

    async def _send(self, hub: Hub, conn: Connection, request: schemas.Send) -> None:
        started = time.perf_counter()
        subscription = conn.subscriptions.get(request.room)
        if subscription is None:
            raise Refused(NOT_JOINED, f"Join the room {request.room!r} before sending to it.")
        with hub.send_slot():
            result = await services.amessage_send(
                log=hub.log,
                room_id=subscription.room_id,
                slug=subscription.slug,
                user_id=conn.user_id,
                username=conn.username,
                body=request.body,
                client_id=request.client_id,
                known_last=hub.known_last(subscription.room_id),
                rate=RateLimit(burst=settings.KAIWA_RATE_BURST, per_second=settings.KAIWA_RATE_PER_SECOND),
                attachments=request.attachments,
                reply_to=request.reply_to,
            )
            conn.put_frame(
                frames.ack(room=subscription.slug, client_id=request.client_id, seq=result.seq, ts_ms=result.ts_ms)
            )
            metrics.acked(started)

    async def _change(self, hub: Hub, conn: Connection, request: schemas.Edit | schemas.Delete) -> None:
        """``edit`` / ``delete`` (protocol.md 7.4): an event with its own seq, acked like a message."""
        subscription = conn.subscriptions.get(request.room)
        if subscription is None:
            raise Refused(NOT_JOINED, f"Join the room {request.room!r} before editing or deleting its messages.")
        if isinstance(request, schemas.Edit):
            services.message_body_validate(body=request.body)
        await db_ready()
        with hub.send_slot():
            common: dict[str, Any] = {
                "log": hub.log,
                "room_id": subscription.room_id,
                "slug": subscription.slug,
                "user_id": conn.user_id,
                "username": conn.username,
                "target": request.target,
                "client_id": request.client_id,
                "known_last": hub.known_last(subscription.room_id),
                "rate": RateLimit(burst=settings.KAIWA_RATE_BURST, per_second=settings.KAIWA_RATE_PER_SECOND),
            }
            if isinstance(request, schemas.Edit):
                result = await services.amessage_edit(body=request.body, **common)
            else:
                result = await services.amessage_delete(**common)
            conn.put_frame(
                frames.ack(room=subscription.slug, client_id=request.client_id, seq=result.seq, ts_ms=result.ts_ms)
            )
