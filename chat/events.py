"""Relay events: the one codec for what Kaiwa writes to Redis about a room.

Three kinds of event travel on a room's pub/sub channel (``chat.messagelog.channel``),
each a JSON object whose short key ``k`` says which:

* ``m``, a message: published by the append script in the same atomic step
  that stores it in the room's stream. The stream entry holds the same
  fields (its id is ``0-<seq>``);
* ``p``, presence: a user's first connection joined the room, or their last
  one left (the presence scripts publish it);
* ``t``, typing: ephemeral, published by the hub;
* ``e``, an epoch change (protocol.md 7.1): the seed script set a new epoch
  and the room's sequence resumes above ``seq``; published before any message
  of that epoch. Messages carry their epoch as ``ep`` (written by the append
  script, not one of the message's own fields).

The Lua scripts do not know the field names of a message: this module hands
them the ``(name, value)`` pairs to store and publish (``message_fields``), and
reads them back (``entry_from_stream``, ``entry_from_event``). Adding a field
to messages means: a field on ``Entry``, a line in ``_MESSAGE_FIELDS``, and
the frame in ``Entry.frame`` (see docs/architecture.md, "Adding a field").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

# The kind key and its values.
KIND = "k"
MESSAGE = "m"
PRESENCE = "p"
TYPING = "t"
EPOCH_CHANGE = "e"

# Fields every event of a room carries besides a message's own fields.
ROOM_ID = "rid"
ROOM = "room"
SEQ = "seq"
TS = "ts"
EPOCH = "ep"
USER_ID = "uid"
USERNAME = "un"
# Presence: "join" or "leave".
PRESENCE_EVENT = "event"
# A log entry's ``op`` (protocol.md 7.4): "" a message, or an event about the message ``target``.
EDIT_OP = "e"
DELETE_OP = "d"


def _optional_int(raw: str) -> int | None:
    return int(raw) if raw else None


def _ids(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in raw.split(",")) if raw else ()


# A message's own fields as stored and published: (Entry attribute, short key,
# parse from the stored string). The append script stores them after ``ts``
# and publishes them beside ``k``, ``rid``, ``room``, ``seq`` and ``ts``.
_MESSAGE_FIELDS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("user_id", USER_ID, int),
    ("username", USERNAME, str),
    ("body", "body", str),
    ("client_id", "cid", lambda raw: raw or None),
    # The attachment objects ("A" of protocol.md 7.3) as a JSON list; "" when none.
    ("attachments", "att", lambda raw: tuple(json.loads(raw)) if raw else ()),
    # Edits, deletions, replies, mentions (protocol.md 7.4); left out of a plain message when empty.
    ("op", "op", str),
    ("target", "tg", _optional_int),
    ("reply_to", "re", _optional_int),
    ("mentions", "mn", _ids),
)
_OMITTED_WHEN_EMPTY = frozenset({"op", "target", "reply_to", "mentions"})


def parse_ts(ts_ms: int) -> datetime:
    """The moment of a log timestamp (milliseconds since the epoch, UTC)."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def ts_ms_of(moment: datetime) -> int:
    """The inverse of :func:`parse_ts`, truncated to whole milliseconds."""
    moment = moment.astimezone(UTC)
    return int(moment.replace(microsecond=0).timestamp()) * 1000 + moment.microsecond // 1000


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text up to the dot


def format_ts(ts_ms: int) -> str:
    """ISO-8601 UTC with milliseconds, as the wire contract prescribes."""
    global _second
    # Every message and ack is stamped: strftime once per second, not per frame.
    second, ms = divmod(ts_ms, 1000)
    cached = _second
    if cached[0] != second:
        cached = _second = (second, parse_ts(second * 1000).strftime("%Y-%m-%dT%H:%M:%S."))
    return f"{cached[1]}{ms:03d}Z"


@dataclass(frozen=True, slots=True)
class Entry:
    """One message as the log (and the database) holds it.

    ``room`` is the room's slug where the reader knows it (the hub, the
    history); None where nobody needs it (the persistence worker writes by
    ``room_id``). Only an entry with a slug can become a frame.
    """

    room_id: int
    seq: int
    ts_ms: int
    user_id: int
    username: str
    body: str
    client_id: str | None
    room: str | None = None
    epoch: str = ""  # the room's epoch when the message was accepted ("" before epochs existed)
    attachments: tuple[dict[str, Any], ...] = ()
    # "" a message; EDIT_OP / DELETE_OP an edit or deletion of the message ``target`` (by ``user_id``).
    op: str = ""
    target: int | None = None
    reply_to: int | None = None
    mentions: tuple[int, ...] = ()
    # Read back after its deletion (its body and attachments are gone), or after an edit (database reads).
    deleted: bool = False
    edited_ts_ms: int | None = None

    @property
    def ts(self) -> str:
        return format_ts(self.ts_ms)

    def frame(self) -> dict[str, Any]:
        """The ``message`` frame of the wire contract (the WebSocket and the history API share it)."""
        assert self.room is not None, "an Entry read without its room's slug cannot become a frame"
        user = {"id": self.user_id, "username": self.username}
        if self.op == EDIT_OP:
            return {
                "type": "edited",
                "room": self.room,
                "seq": self.seq,
                "ts": self.ts,
                "target": self.target,
                "body": self.body,
                "mentions": list(self.mentions),
                "user": user,
            }
        if self.op == DELETE_OP:
            return {
                "type": "deleted",
                "room": self.room,
                "seq": self.seq,
                "ts": self.ts,
                "target": self.target,
                "user": user,
            }
        frame = {
            "type": "message",
            "room": self.room,
            "seq": self.seq,
            "ts": self.ts,
            "user": {"id": self.user_id, "username": self.username},
            "body": self.body,
            "client_id": self.client_id,
            "attachments": list(self.attachments),
            "reply_to": self.reply_to,
            "mentions": list(self.mentions),
        }
        # Only a message read back in its current state carries these (the history always does).
        if self.deleted:
            frame["deleted"] = True
        if self.edited_ts_ms is not None:
            frame["edited_ts"] = format_ts(self.edited_ts_ms)
        return frame


def message_fields(
    *,
    user_id: int,
    username: str,
    body: str,
    client_id: str | None,
    attachments: Sequence[Mapping[str, Any]] = (),
    op: str = "",
    target: int | None = None,
    reply_to: int | None = None,
    mentions: Sequence[int] = (),
) -> list[str]:
    """A new message's own fields as flat ``name, value`` pairs for the append script (see ``_MESSAGE_FIELDS``)."""
    values = {
        "user_id": str(user_id),
        "username": username,
        "body": body,
        "client_id": client_id or "",
        "attachments": json.dumps(list(attachments), ensure_ascii=False, separators=(",", ":")) if attachments else "",
        "op": op,
        "target": "" if target is None else str(target),
        "reply_to": "" if reply_to is None else str(reply_to),
        "mentions": ",".join(str(i) for i in mentions),
    }
    out: list[str] = []
    for attr, key, _ in _MESSAGE_FIELDS:
        if values[attr] or attr not in _OMITTED_WHEN_EMPTY:
            out += (key, values[attr])
    return out


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def entry_from_stream(room_id: int, slug: str | None, entry_id: bytes | str, fields: dict[Any, Any]) -> Entry:
    """A stream entry (id ``0-<seq>``) as an Entry."""
    f = {_decode(k): _decode(v) for k, v in fields.items()}
    # .get: an entry written before a field existed (e.g. "att") reads as its empty value.
    values = {attr: parse(f.get(key, "")) for attr, key, parse in _MESSAGE_FIELDS}
    return Entry(room_id=room_id, room=slug, seq=seq_of(entry_id), ts_ms=int(f[TS]), epoch=f.get(EPOCH, ""), **values)


def entry_from_event(event: dict[str, Any]) -> Entry:
    """A published message event (``k == "m"``) as an Entry."""
    values = {attr: parse(str(event.get(key, ""))) for attr, key, parse in _MESSAGE_FIELDS}
    return Entry(
        room_id=int(event[ROOM_ID]),
        room=str(event[ROOM]),
        seq=int(event[SEQ]),
        ts_ms=int(event[TS]),
        epoch=str(event.get(EPOCH, "")),
        **values,
    )


def seq_of(entry_id: bytes | str) -> int:
    """The seq of a stream entry id ``0-<seq>``."""
    return int(_decode(entry_id).split("-", 1)[1])


# -- presence and typing ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserSignal:
    """A presence change (``event`` is ``"join"`` or ``"leave"``) or a typing notice (``event`` None)."""

    user_id: int
    username: str
    event: str | None = None


def presence_event(kind: str, *, user_id: int, username: str) -> str:
    return json.dumps({KIND: PRESENCE, PRESENCE_EVENT: kind, USER_ID: user_id, USERNAME: username}, ensure_ascii=False)


def typing_event(*, user_id: int, username: str) -> str:
    return json.dumps({KIND: TYPING, USER_ID: user_id, USERNAME: username}, ensure_ascii=False)


# The presence sweep script builds a "leave" itself (it finds who left): these
# ARGV tell it the key names, so the names stay defined here only.
PRESENCE_LEAVE_ARGS = (KIND, PRESENCE, PRESENCE_EVENT, "leave", USER_ID, USERNAME)


@dataclass(frozen=True, slots=True)
class EpochChange:
    """The room's state was re-seeded: epoch ``epoch``, its sequence resumes above ``base``."""

    epoch: str
    base: int


def epoch_event(*, room_id: int, slug: str, epoch: str, base: int) -> str:
    """The event the seed script publishes, as Python writes it (the in-memory log's twin)."""
    return json.dumps({KIND: EPOCH_CHANGE, ROOM_ID: room_id, ROOM: slug, EPOCH: epoch, SEQ: base}, ensure_ascii=False)


def decode(data: bytes | str) -> Entry | UserSignal | EpochChange | None:
    """A room event: an Entry (message), a UserSignal (presence with ``event``, typing without),
    an EpochChange, or None (unknown)."""
    event = json.loads(data)
    kind = event.get(KIND)
    if kind == MESSAGE:
        return entry_from_event(event)
    if kind == PRESENCE:
        return UserSignal(int(event[USER_ID]), str(event[USERNAME]), str(event[PRESENCE_EVENT]))
    if kind == TYPING:
        return UserSignal(int(event[USER_ID]), str(event[USERNAME]))
    if kind == EPOCH_CHANGE:
        return EpochChange(str(event[EPOCH]), int(event[SEQ]))
    return None


def message_event(entry: Entry) -> str:
    """The event the append script publishes for ``entry``, as Python writes it (the in-memory log's twin).

    tests/chat/test_memorylog.py checks that it decodes like what the append script publishes.
    """
    event: dict[str, Any] = {KIND: MESSAGE, ROOM_ID: entry.room_id, ROOM: entry.room, SEQ: entry.seq, TS: entry.ts_ms}
    if entry.epoch:
        event[EPOCH] = entry.epoch
    pairs = message_fields(
        user_id=entry.user_id,
        username=entry.username,
        body=entry.body,
        client_id=entry.client_id,
        attachments=entry.attachments,
        op=entry.op,
        target=entry.target,
        reply_to=entry.reply_to,
        mentions=entry.mentions,
    )
    event.update(zip(pairs[::2], pairs[1::2], strict=True))
    return json.dumps(event, ensure_ascii=False)
