"""Server-to-client frames (protocol.md section 2): the one place their shapes are written.

Every frame is serialised once by ``encode`` and then handed, as text, to
every connection that gets it. The ``message`` frame is ``chat.events.Entry.frame``
because the HTTP history answers with the same shape (and chat never imports wsapp).
"""

from __future__ import annotations

import json
from typing import Any

from chat.events import Entry, format_ts
from wsapp.errors import Refused


def encode(frame: dict[str, Any]) -> tuple[str, int]:
    """A frame serialised once, with its size in bytes (what the queue limit counts)."""
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    return text, len(text.encode("utf-8"))


def user(user_id: int, username: str) -> dict[str, Any]:
    return {"id": user_id, "username": username}


def joined(*, room: str, last_seq: int, presence: list[dict[str, Any]], reset: bool, epoch: str = "") -> dict[str, Any]:
    # epoch: protocol.md 7.1 (also sent, with reset, when the room's epoch changes under a joined member).
    return {"type": "joined", "room": room, "last_seq": last_seq, "presence": presence, "reset": reset, "epoch": epoch}


def left(room: str) -> dict[str, Any]:
    return {"type": "left", "room": room}


def ack(*, room: str, client_id: str | None, seq: int, ts_ms: int) -> dict[str, Any]:
    return {"type": "ack", "room": room, "client_id": client_id, "seq": seq, "ts": format_ts(ts_ms)}


def message(entry: Entry) -> dict[str, Any]:
    return entry.frame()


def presence(*, room: str, event: str, user_id: int, username: str) -> dict[str, Any]:
    return {"type": "presence", "room": room, "event": event, "user": user(user_id, username)}


def typing(*, room: str, user_id: int, username: str) -> dict[str, Any]:
    return {"type": "typing", "room": room, "user": user(user_id, username)}


def pong() -> dict[str, Any]:
    return {"type": "pong"}


def error(refusal: Refused, *, ref: str | None, room: str | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": refusal.code, "message": refusal.message, "ref": ref}
    if room is not None:
        frame["room"] = room
    if refusal.retry_after_ms is not None:
        frame["retry_after_ms"] = refusal.retry_after_ms
    return frame
