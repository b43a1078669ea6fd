"""The chat consumer, written the way Channels users write it."""

import json
import re
from datetime import UTC, datetime

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone

from bench.channels_peer.models import ChatMessage

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
# Per-room sequence, held by this (single) server process.
SEQ: dict[str, int] = {}


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.user = self.scope["user"]
        self.rooms = set()
        await self.accept()
        if not self.user.is_authenticated:
            await self.close(code=4401)

    async def disconnect(self, code):
        for room in self.rooms:
            await self.channel_layer.group_discard("room-" + room, self.channel_name)

    async def error(self, code, message, ref, room=None):
        await self.send(
            text_data=json.dumps({"type": "error", "code": code, "message": message, "ref": ref, "room": room})
        )

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = json.loads(text_data or "")
            kind = frame["type"]
        except (ValueError, KeyError, TypeError):
            await self.error("bad_request", "send a JSON object with a type", None)
            return
        if kind == "join":
            room = frame.get("room")
            if not isinstance(room, str) or not SLUG.match(room):
                await self.error("bad_request", "room must be a slug", "join")
                return
            await self.channel_layer.group_add("room-" + room, self.channel_name)
            self.rooms.add(room)
            await self.send(
                text_data=json.dumps(
                    {"type": "joined", "room": room, "last_seq": SEQ.get(room, 0), "presence": [], "reset": False}
                )
            )
        elif kind == "leave":
            room = frame.get("room")
            if room in self.rooms:
                self.rooms.discard(room)
                await self.channel_layer.group_discard("room-" + room, self.channel_name)
            await self.send(text_data=json.dumps({"type": "left", "room": room}))
        elif kind == "send":
            room, body, cid = frame.get("room"), frame.get("body"), frame.get("client_id")
            if room not in self.rooms:
                await self.error("not_joined", "join the room first", cid or "send", room)
                return
            if not isinstance(body, str) or not body.strip():
                await self.error("bad_request", "body must be a non-empty string", cid or "send", room)
                return
            seq = SEQ.get(room, 0) + 1
            SEQ[room] = seq
            now = timezone.now()
            await self.save_message(room, seq, body, cid or "", now)
            event = {
                "type": "chat.message",
                "room": room,
                "seq": seq,
                "ts": _ts(now),
                "user": {"id": self.user.pk, "username": self.user.username},
                "body": body,
                "client_id": cid,
            }
            await self.channel_layer.group_send("room-" + room, event)
            await self.send(
                text_data=json.dumps({"type": "ack", "room": room, "client_id": cid, "seq": seq, "ts": event["ts"]})
            )
        elif kind == "ping":
            await self.send(text_data='{"type": "pong"}')
        else:
            await self.error("bad_request", "unknown type", kind if isinstance(kind, str) else None)

    @database_sync_to_async
    def save_message(self, room, seq, body, cid, now):
        ChatMessage.objects.create(room=room, seq=seq, author=self.user, body=body, client_id=cid, created_at=now)

    async def chat_message(self, event):
        frame = {k: event[k] for k in ("room", "seq", "ts", "user", "body", "client_id")}
        frame["type"] = "message"
        await self.send(text_data=json.dumps(frame))
