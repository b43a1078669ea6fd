"""Edits, deletions, replies and mentions (protocol.md 7.4): the checks before an append, and the persistence.

Every edit and deletion is an entry of the room's log with its own ``seq``
(``Entry.op`` ``"e"`` or ``"d"``, ``Entry.target`` the message's seq),
appended by the same script as messages: ack, dedup by ``client_id``, order
and exactly-once storage are the messages' own. This module holds:

* the checks made before such an append (and before a ``send`` with
  ``reply_to``): the target must be a message of the room, not deleted
  (``TargetNotFound``), and the user must have the right (``Forbidden``).
  An ordinary ``send`` costs no query here; a body naming ``@someone``
  costs one (``amentions_resolve``);
* what the persistence worker does with the event rows it stores
  (``events_apply``): the target row takes its new state, the body it had is
  kept as a ``MessageVersion`` for the admin, and a deletion blanks the body
  everywhere users read it;
* the purge of deleted messages past ``KAIWA_DELETED_RETENTION_DAYS``.

The target's author comes from the room's stream (or the database once the
stream is trimmed). Whether it is deleted is decided atomically by the append
script (the room's "gone" set, ``chat.logkeys.gone_key``) and, for deletions
that Redis no longer remembers, by the stored row.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection
from django.db.models import Exists, Q
from django.utils import timezone
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat import selectors
from chat.events import DELETE_OP, EDIT_OP, Entry, parse_ts, ts_ms_of
from chat.messagelog import AppendResult, FloorNeeded, Log, RateLimit, TargetGone
from chat.models import Attachment, Message, MessageKind, MessageVersion, Room


class TargetNotFound(LookupError):
    """The target is not a message of the room that users can see (unknown, an event, or deleted)."""


class Forbidden(PermissionError):
    """The user may not edit or delete that message."""


# "@name" where name is a Django username (letters, digits and @ . + - _),
# not preceded by a word character (an e-mail address is not a mention).
_MENTION = re.compile(r"(?<![\w@])@([\w.@+-]{1,150})")
MAX_MENTIONS = 50  # names looked up per message; a body naming more mentions the first ones


def mention_names(body: str) -> list[str]:
    """The usernames a body names as ``@username``, in order, without repeats.

    A name's trailing punctuation (``@bob.`` at the end of a sentence) is
    also tried without it.
    """
    names: list[str] = []
    for match in _MENTION.finditer(body):
        name = match.group(1)
        for candidate in (name, name.rstrip(".+-@")):
            if candidate and candidate not in names:
                names.append(candidate)
        if len(names) >= MAX_MENTIONS:
            break
    return names


async def amentions_resolve(*, room_id: int, body: str) -> tuple[int, ...]:
    """The ids of the active users named in ``body`` who can see the room, ascending.

    A name of a user who cannot see the room (not a member of a private room),
    an inactive user or nobody is not a mention: it stays plain text and
    nobody is notified, so a mention never tells the sender who exists
    outside the room. A body without ``@`` costs no query.
    """
    names = mention_names(body)
    if not names:
        return ()
    public = Room.objects.filter(pk=room_id, private=False)
    visible = Q(chat_memberships__room_id=room_id) | Exists(public)
    users = get_user_model().objects.filter(visible, username__in=names, is_active=True)
    ids = {int(pk) async for pk in users.values_list("pk", flat=True)}
    return tuple(sorted(ids))


@dataclass(frozen=True, slots=True)
class Target:
    seq: int
    author_id: int | None
    ts_ms: int


async def atarget_get(*, log: Log, room_id: int, seq: int) -> Target:
    """The message ``seq`` of the room, from its stream or the database; ``TargetNotFound`` otherwise.

    A deleted message is not found (the append script refuses it atomically
    while Redis remembers the deletion; the stored row says so after that).
    """
    if seq < 1:
        raise TargetNotFound(seq)
    found = await log.read_range(room_id=room_id, slug=None, after=seq - 1, upto=seq)
    if found:
        entry = found[0]
        if entry.op or entry.deleted:
            raise TargetNotFound(seq)
        return Target(seq=seq, author_id=entry.user_id, ts_ms=entry.ts_ms)
    row = (
        await Message.objects.filter(room_id=room_id, seq=seq, kind=MessageKind.MESSAGE, deleted_at__isnull=True)
        .values("author_id", "created_at")
        .afirst()
    )
    if row is None:
        raise TargetNotFound(seq)
    return Target(seq=seq, author_id=row["author_id"], ts_ms=ts_ms_of(row["created_at"]))


def edit_check(*, target: Target, user_id: int) -> None:
    """Only the author edits, within ``KAIWA_EDIT_WINDOW_SECONDS`` of sending (0: any time)."""
    if target.author_id != user_id:
        raise Forbidden("Only the author of a message can edit it.")
    window = settings.KAIWA_EDIT_WINDOW_SECONDS
    if window and ts_ms_of(timezone.now()) - target.ts_ms > window * 1000:
        raise Forbidden(f"Messages can be edited for {window} seconds after sending; this one no longer can.")


async def adelete_check(*, target: Target, user_id: int, room_id: int) -> None:
    """The author deletes (no query); others only as the room's moderators (``selectors.room_rights``).

    The page offers Delete by that same rule, so what it offers and what the
    server allows cannot drift apart.
    """
    if target.author_id == user_id:
        return
    user = await get_user_model().objects.filter(pk=user_id, is_active=True).afirst()
    room = await Room.objects.filter(pk=room_id).afirst()
    if user is not None and room is not None and selectors.room_rights(room=room, user=user)["moderator"]:
        return
    raise Forbidden("Only the author, staff and the room's owner can delete a message.")


# The appends -------------------------------------------------------------------

_APPEND_RETRIES = 2
_SERVER_TOKEN_SECONDS = 30


class Unavailable(Exception):
    """Redis (or the database, for a room's floor) is unreachable; nothing was appended."""


async def aappend(*, log: Log, known_last: int | None = None, **fields: Any) -> AppendResult:
    """``log.append(**fields)``, resuming the room's sequence above the stored one when Redis lost it.

    Redis connection errors are retried with the same dedup token (an append
    that did run answers with its seq); ``Unavailable`` past the retries.
    ``TargetNotFound`` when the append script finds the guarded message deleted.
    """
    floor: int | None = None
    failures = 0
    while True:
        try:
            return await log.append(floor=floor, known_last=known_last or 0, **fields)
        except FloorNeeded:
            if floor is not None:
                raise Unavailable("Redis lost the room's sequence twice in a row.") from None
            try:
                stored = await selectors.amessage_max_seq(room_id=fields["room_id"])
            except DatabaseError as exc:
                raise Unavailable(f"the database is unreachable ({exc})") from exc
            floor = max(stored, known_last or 0)
        except TargetGone as exc:
            raise TargetNotFound(exc.seq) from None
        except (RedisConnectionError, RedisTimeoutError) as exc:
            failures += 1
            if failures > _APPEND_RETRIES:
                raise Unavailable(f"Redis is unreachable ({exc})") from exc


async def amessage_edit(
    *,
    log: Log,
    room_id: int,
    slug: str,
    user_id: int,
    username: str,
    target: int,
    body: str,
    client_id: str | None,
    known_last: int | None = None,
    rate: RateLimit | None = None,
) -> AppendResult:
    """Append an edit of the message ``target`` (its author only); ack-able like a message.

    ``TargetNotFound`` (unknown, an event, or deleted), ``Forbidden`` (not the
    author, or past ``KAIWA_EDIT_WINDOW_SECONDS``), and the body errors of a
    send. A re-send with the same ``client_id`` acks the original edit.
    """
    found = await atarget_get(log=log, room_id=room_id, seq=target)
    edit_check(target=found, user_id=user_id)
    mentions = await amentions_resolve(room_id=room_id, body=body)
    return await aappend(
        log=log,
        known_last=known_last,
        room_id=room_id,
        slug=slug,
        user_id=user_id,
        username=username,
        body=body,
        client_id=client_id,
        token=client_id or uuid.uuid4().hex,
        token_seconds=None if client_id else _SERVER_TOKEN_SECONDS,
        rate=rate,
        op=EDIT_OP,
        target=target,
        mentions=mentions,
    )


async def amessage_delete(
    *,
    log: Log,
    room_id: int,
    slug: str,
    user_id: int,
    username: str,
    target: int,
    client_id: str | None,
    known_last: int | None = None,
    rate: RateLimit | None = None,
) -> AppendResult:
    """Append the deletion of the message ``target`` (author, staff, room owner); see ``amessage_edit``.

    Deleting a deleted message is ``TargetNotFound`` (two racing deletions:
    the append script lets exactly one through).
    """
    found = await atarget_get(log=log, room_id=room_id, seq=target)
    await adelete_check(target=found, user_id=user_id, room_id=room_id)
    return await aappend(
        log=log,
        known_last=known_last,
        room_id=room_id,
        slug=slug,
        user_id=user_id,
        username=username,
        body="",
        client_id=client_id,
        token=client_id or uuid.uuid4().hex,
        token_seconds=None if client_id else _SERVER_TOKEN_SECONDS,
        rate=rate,
        op=DELETE_OP,
        target=target,
    )


# Persistence (runs inside the worker's batch transaction) -------------------------


def rows_complete(*, entries: Sequence[Entry], rooms: set[int]) -> None:
    """Set the 7.4 columns of the batch's rows that have any (events, replies, mentions).

    The bulk insert writes the columns every message has; these few rows get
    theirs here, in the same transaction. Matching ``created_at`` too leaves
    alone a row the insert did not write (another entry's, under the same seq).
    """
    for e in entries:
        if e.room_id not in rooms or not (e.op or e.reply_to is not None or e.mentions):
            continue
        kind = {EDIT_OP: MessageKind.EDIT, DELETE_OP: MessageKind.DELETE}.get(e.op, MessageKind.MESSAGE)
        Message.objects.filter(room_id=e.room_id, seq=e.seq, created_at=parse_ts(e.ts_ms)).update(
            kind=kind, target_seq=e.target, reply_to=e.reply_to, mentions=list(e.mentions)
        )


def events_apply(*, entries: Sequence[Entry], rooms: set[int], users: set[int]) -> None:
    """Apply the batch's edit and delete events to their target rows (the event rows are already inserted).

    Idempotent: a row remembers the seq of the last event applied to it
    (``version_seq``), so a replayed batch changes nothing. An event whose
    target is not stored yet (its entry was claimed from a crashed worker
    and lands in a later batch) is applied when the target is inserted:
    events stored earlier for the batch's messages are looked up and applied
    in seq order with the batch's own.
    """
    events = {(e.room_id, e.seq): e for e in entries if e.op and e.room_id in rooms}
    targets = {(e.room_id, e.seq) for e in entries if not e.op and e.room_id in rooms}
    earlier = _event_rows_targeting(targets)
    if earlier:
        for row in Message.objects.filter(pk__in=earlier):
            if (row.room_id, row.seq) not in events:
                events[(row.room_id, row.seq)] = _entry_of_event_row(row)
    for key in sorted(events):
        _apply(events[key], users)


_ROOMS_PER_LOOKUP = 300  # three parameters a room: under SQLite's 999


def _event_rows_targeting(targets: set[tuple[int, int]]) -> list[int]:
    """The ids of stored event rows whose target is one of ``(room_id, seq)``.

    Runs on every batch the worker stores, and almost always finds nothing,
    so it is one hand-written statement: a seq range per room, read from the
    partial index ``chat_message_event_idx`` (its ``kind > 0`` is written as
    the same literal so every backend's planner can use it), the exact pairs
    picked in Python. The ORM's OR of ``Q(room_id=..., target_seq__in=...)``
    cost more than the batch's insert (docs/architecture.md, "Measured reasons").
    """
    if not targets:
        return []
    ranges: dict[int, tuple[int, int]] = {}
    for room_id, seq in targets:
        low, high = ranges.get(room_id, (seq, seq))
        ranges[room_id] = (min(low, seq), max(high, seq))
    quote = connection.ops.quote_name
    table, room, target = quote(Message._meta.db_table), quote("room_id"), quote("target_seq")
    found: list[int] = []
    rooms = sorted(ranges)
    with connection.cursor() as cursor:
        for start in range(0, len(rooms), _ROOMS_PER_LOOKUP):
            chunk = rooms[start : start + _ROOMS_PER_LOOKUP]
            where = " OR ".join([f"({room} = %s AND {target} BETWEEN %s AND %s)"] * len(chunk))
            cursor.execute(
                f"SELECT {quote('id')}, {room}, {target} FROM {table} "
                f"WHERE {quote('kind')} > {int(MessageKind.MESSAGE)} AND ({where})",
                [value for room_id in chunk for value in (room_id, *ranges[room_id])],
            )
            found.extend(pk for pk, room_id, seq in cursor.fetchall() if (room_id, seq) in targets)
    return found


def _entry_of_event_row(row: Message) -> Entry:
    return Entry(
        room_id=row.room_id,
        seq=row.seq,
        ts_ms=ts_ms_of(row.created_at),
        user_id=row.author_id or 0,
        username=row.author_username,
        body=row.body,
        client_id=row.client_id or None,
        op=EDIT_OP if row.kind == MessageKind.EDIT else DELETE_OP,
        target=row.target_seq,
        mentions=tuple(row.mentions or ()),
    )


def _apply(event: Entry, users: set[int]) -> None:
    assert event.target is not None, "an edit or delete event names its target"
    target = (
        Message.objects.select_for_update()
        .filter(room_id=event.room_id, seq=event.target, kind=MessageKind.MESSAGE)
        .first()
    )
    if target is None or (target.version_seq or 0) >= event.seq or target.deleted_at is not None:
        # Not stored yet, already applied, or deleted (an edit that raced the deletion changes nothing).
        return
    when = parse_ts(event.ts_ms)
    by = event.user_id if event.user_id in users else None
    deletion = event.op != EDIT_OP
    MessageVersion.objects.create(
        message=target, body=target.body, replaced_at=when, replaced_by_id=by, event_seq=event.seq, deletion=deletion
    )
    target.version_seq = event.seq
    if deletion:
        target.body = ""
        target.deleted_at = when
        target.deleted_by_id = by
        # The edit events' rows carry earlier bodies to resuming clients: blank them too.
        Message.objects.filter(room_id=event.room_id, kind=MessageKind.EDIT, target_seq=event.target).update(body="")
        target.save(update_fields=["body", "deleted_at", "deleted_by", "version_seq"])
    else:
        target.body = event.body.replace("\x00", "\ufffd")
        target.mentions = list(event.mentions)
        target.edited_at = when
        target.save(update_fields=["body", "mentions", "edited_at", "version_seq"])


def message_purge_deleted(*, now: datetime | None = None, batch: int = 200) -> int:
    """Remove what the admin kept of messages deleted more than ``KAIWA_DELETED_RETENTION_DAYS`` ago.

    Their previous versions (bodies) and attachments (files included) go; the
    row stays, empty, so the room's history keeps its seqs and who deleted it
    when. Returns how many messages were purged.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.KAIWA_DELETED_RETENTION_DAYS)
    purged = 0
    while True:
        due = list(
            MessageVersion.objects.filter(deletion=True, replaced_at__lt=cutoff)
            .order_by("replaced_at")
            .values_list("message_id", flat=True)[:batch]
        )
        if not due:
            return purged
        for message in Message.objects.filter(pk__in=due):
            for attachment in Attachment.objects.filter(room_id=message.room_id, message_seq=message.seq):
                attachment.delete()  # its files go with it (chat.models)
        MessageVersion.objects.filter(message_id__in=due).delete()
        purged += len(due)
