"""Client frames: parse and validate one text frame into a typed request.

``parse`` never raises anything but ``BadFrame``, which carries the ``ref``
and ``room`` the error frame must echo (protocol.md section 2: the request's
``client_id`` if it carried a valid one, else its ``type`` if that was a
string, else ``null``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from chat.models import SLUG_PATTERN

_SLUG = re.compile(SLUG_PATTERN)
CLIENT_ID_MAX = 64


class BadFrame(Exception):
    def __init__(self, message: str, *, ref: str | None = None, room: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref
        self.room = room


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: int | None
    ref: str
    epoch: str | None = None  # protocol.md 7.1: the room's epoch the client last saw, with since
    presence: bool = True  # protocol.md 7.5: false for a background room (unread counts, not "here")


@dataclass(frozen=True, slots=True)
class Leave:
    room: str
    ref: str


@dataclass(frozen=True, slots=True)
class Send:
    room: str
    body: str
    client_id: str | None
    ref: str
    attachments: tuple[str, ...] = ()  # upload ids (protocol.md 7.3)
    reply_to: int | None = None  # the seq of the message it answers (protocol.md 7.4)


@dataclass(frozen=True, slots=True)
class Edit:
    room: str
    target: int
    body: str
    client_id: str | None
    ref: str


@dataclass(frozen=True, slots=True)
class Delete:
    room: str
    target: int
    client_id: str | None
    ref: str


@dataclass(frozen=True, slots=True)
class Typing:
    room: str
    ref: str


@dataclass(frozen=True, slots=True)
class Ping:
    ref: str


Request = Join | Leave | Send | Edit | Delete | Typing | Ping
_KINDS = "join, leave, send, edit, delete, typing or ping"


def _encodable(value: str) -> bool:
    # JSON "\ud800" escapes decode to lone surrogates, which cannot be stored
    # or sent on as UTF-8.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _valid_client_id(value: Any) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= CLIENT_ID_MAX and _encodable(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder: json.loads with an argument builds a new JSONDecoder per call.
_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def parse(text: str) -> Request:
    try:
        data = _decoder.decode(text)
    except (ValueError, RecursionError):
        raise BadFrame("The frame is not valid JSON: send one JSON object per text frame.") from None
    if not isinstance(data, dict):
        raise BadFrame('The frame must be a JSON object like {"type": "ping"}.')
    kind = data.get("type")
    client_id = data.get("client_id")
    ref: str | None = None
    if _valid_client_id(client_id):
        ref = client_id
    elif isinstance(kind, str) and _encodable(kind):
        ref = kind
    raw_room = data.get("room")
    room = raw_room if isinstance(raw_room, str) and _SLUG.match(raw_room) else None

    def bad(message: str) -> BadFrame:
        return BadFrame(message, ref=ref, room=room)

    if not isinstance(kind, str):
        raise bad(f'The frame needs a string field "type": {_KINDS}.')
    if kind == "ping":
        return Ping(ref=kind if ref is None else ref)
    if kind not in ("join", "leave", "send", "edit", "delete", "typing"):
        raise bad(f"Unknown frame type {kind!r}: use {_KINDS}.")
    assert ref is not None
    if not isinstance(raw_room, str):
        raise bad(f'"{kind}" needs a string field "room" (the room\'s slug).')
    if room is None:
        raise bad("The room is not a valid slug: 1 to 64 lowercase letters, digits or hyphens.")
    if kind == "join":
        since = data.get("since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, int)):
            raise bad('"since" must be an integer: the last seq you received in this room.')
        if since is not None and since < 0:
            raise bad('"since" must be 0 or more.')
        epoch = data.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or not 0 < len(epoch) <= 64):
            raise bad('"epoch" must be the string of at most 64 characters that "joined" gave for this room.')
        presence = data.get("presence", True)
        if not isinstance(presence, bool):
            raise bad('"presence" must be true or false (false: listen without being shown as present).')
        return Join(room=room, since=since, ref=ref, epoch=epoch, presence=presence)
    if kind == "leave":
        return Leave(room=room, ref=ref)
    if kind == "typing":
        return Typing(room=room, ref=ref)
    # send, edit, delete
    if client_id is not None and not _valid_client_id(client_id):
        raise bad('"client_id" must be a string of 1 to 64 characters.')
    if kind == "delete":
        return Delete(room=room, target=_seq(data, "target", bad), client_id=client_id, ref=ref)
    if kind == "edit":
        target = _seq(data, "target", bad)
        body = data.get("body")
        if not isinstance(body, str):
            raise bad('"edit" needs a string field "body": the new text of the message.')
        if not _encodable(body):
            raise bad('"body" contains an unpaired surrogate (invalid Unicode); send valid UTF-8 text.')
        return Edit(room=room, target=target, body=body, client_id=client_id, ref=ref)
    reply_to = _seq(data, "reply_to", bad) if data.get("reply_to") is not None else None
    attachments = _attachment_ids(data.get("attachments"), bad)
    body = data.get("body", "" if attachments else None)
    if not isinstance(body, str):
        raise bad('"send" needs a string field "body".')
    if not _encodable(body):
        raise bad('"body" contains an unpaired surrogate (invalid Unicode); send valid UTF-8 text.')
    return Send(room=room, body=body, client_id=client_id, ref=ref, attachments=attachments, reply_to=reply_to)


def _seq(data: dict[str, Any], name: str, bad: Callable[[str], BadFrame]) -> int:
    """A message's seq named by ``name`` (``target``, ``reply_to``): an integer of 1 or more."""
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad(f'"{name}" must be the seq (an integer of 1 or more) of a message in the room.')
    return value


def _attachment_ids(raw: Any, bad: Callable[[str], BadFrame]) -> tuple[str, ...]:
    """``attachments`` of a ``send``: absent, or a list of 1 to 10 upload ids (strings)."""
    if raw is None:
        return ()
    limit = settings.KAIWA_MAX_ATTACHMENTS_PER_MESSAGE
    if not isinstance(raw, list) or not 1 <= len(raw) <= limit:
        raise bad(f'"attachments" must be a list of 1 to {limit} attachment ids (the "id" of each upload).')
    if not all(isinstance(i, str) and 0 < len(i) <= 64 and _encodable(i) for i in raw):
        raise bad('Each of "attachments" must be the string "id" an upload answered with.')
    return tuple(raw)
