"""Acked messages the worker's insert did not store: identical re-inserts, or conflicts to keep (protocol.md 7.1).

The worker's insert skips a row that meets a unique constraint (``(room,
seq)``, or the sender's ``(room, author, client_id)``). Skipping is right
for a replayed batch (the same message is already there) and wrong for
anything else: an acked message would vanish. So when an insert stored fewer
rows than it was given, the entries are compared with what the database
holds; each one that is not already stored is logged as an ERROR with its
room and seq, counted, and kept in ``UnstoredMessage`` (in the insert's
transaction, so it is recorded exactly when the batch commits). Only then is
the batch acknowledged to Redis.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from chat.epochmodels import UnstoredMessage
from chat.events import Entry, message_event, parse_ts
from chat.models import Message, MessageKind

logger = logging.getLogger("kaiwa.worker")

_USERNAME_MAX = Message._meta.get_field("author_username").max_length or 150
_CLIENT_ID_MAX = Message._meta.get_field("client_id").max_length or 64

_count_lock = threading.Lock()
_recorded = 0


def recorded_count() -> int:
    """Conflicts this process recorded since it started (the worker's metric)."""
    return _recorded


def _chunks(values: list[Any], size: int = 500) -> Iterator[list[Any]]:
    # Under every backend's limit on query parameters.
    for start in range(0, len(values), size):
        yield values[start : start + size]


_issued_lock = threading.Lock()
_issued: set[tuple[int, str]] = set()  # (room, epoch) pairs this database issued: never un-issued, so cached


def keep_foreign_epochs(entries: Sequence[Entry]) -> list[Entry]:
    """The entries to store; those of an epoch this database never issued are kept in ``UnstoredMessage``.

    Such an entry was accepted by a Redis state that belongs to another
    database (``DATABASE_URL`` switched, or the database restored from a
    backup, under a running Redis): storing it here could give one of this
    history's seqs to a message it never had. Entries without an epoch (from
    before epochs) and of rooms deleted since are passed on as they are.
    One query per batch only while a batch holds an epoch not seen before.
    """
    global _recorded
    wanted = {(e.room_id, e.epoch) for e in entries if e.epoch} - _issued
    if not wanted:
        return list(entries)
    from chat.epochmodels import RoomEpoch
    from chat.models import Room

    found = set(
        RoomEpoch.objects.filter(room_id__in={r for r, _ in wanted}, epoch__in={ep for _, ep in wanted}).values_list(
            "room_id", "epoch"
        )
    )
    with _issued_lock:
        _issued.update(found)
    foreign = wanted - found
    if foreign:
        rooms = set(Room.objects.filter(pk__in={r for r, _ in foreign}).values_list("pk", flat=True))
        foreign = {(r, ep) for r, ep in foreign if r in rooms}
    if not foreign:
        return list(entries)
    kept = [e for e in entries if (e.room_id, e.epoch) in foreign]
    unstored = []
    for e in kept:
        reason = f"its epoch {e.epoch} was not issued by this database (the Redis state belongs to another one)"
        unstored.append(_unstored(e, reason))
    before = UnstoredMessage.objects.count()
    UnstoredMessage.objects.bulk_create(unstored, ignore_conflicts=True)
    with _count_lock:
        _recorded += UnstoredMessage.objects.count() - before
    return [e for e in entries if (e.room_id, e.epoch) not in foreign]


def stored_form(entry: Entry) -> tuple[str, str, str, datetime]:
    """What the insert writes of an entry, for comparing it with a stored row."""
    return (
        entry.username[:_USERNAME_MAX],
        entry.body.replace("\x00", "\ufffd"),
        (entry.client_id or "")[:_CLIENT_ID_MAX],
        parse_ts(entry.ts_ms),
    )


def _unstored(entry: Entry, reason: str) -> UnstoredMessage:
    """Log why ``entry`` cannot be stored, and its ``UnstoredMessage`` row (as the insert would have written it)."""
    logger.error(
        "room %s seq %s: an acked message cannot be stored: %s; kept in UnstoredMessage "
        "(manage.py chatworker --status lists it)",
        entry.room_id,
        entry.seq,
        reason,
    )
    username, body, client_id, created_at = stored_form(entry)
    return UnstoredMessage(
        room_id=entry.room_id,
        seq=entry.seq,
        epoch=entry.epoch,
        author_id=entry.user_id,
        author_username=username,
        body=body,
        client_id=client_id,
        created_at=created_at,
        reason=reason,
        event=message_event(entry),
    )


def conflicts_record(entries: Sequence[Entry]) -> int:
    """Record every entry the database does not hold as it is; returns how many were new conflicts.

    Runs inside the insert's transaction, after an insert that stored fewer
    rows than ``entries``: it reads back the rows at the entries' ``(room,
    seq)`` and their senders' ``client_id``s.
    """
    global _recorded
    if not entries:
        return 0
    fields = (
        "room_id",
        "seq",
        "author_id",
        "author_username",
        "body",
        "client_id",
        "created_at",
        "version_seq",
        "kind",
    )
    seqs: dict[int, set[int]] = defaultdict(set)
    client_ids: dict[int, set[str]] = defaultdict(set)
    for e in entries:
        seqs[e.room_id].add(e.seq)
        if e.client_id:
            client_ids[e.room_id].add(e.client_id[:_CLIENT_ID_MAX])
    stored: dict[tuple[int, int], dict[str, Any]] = {}
    holders: dict[tuple[int, int | None, str], int] = {}
    for room_id, wanted in seqs.items():
        for chunk in _chunks(sorted(wanted)):
            for row in Message.objects.filter(room_id=room_id, seq__in=chunk).values(*fields):
                stored[(row["room_id"], row["seq"])] = row
    for room_id, cids in client_ids.items():
        for chunk in _chunks(sorted(cids)):
            for row in Message.objects.filter(room_id=room_id, client_id__in=chunk).values(*fields):
                holders[(row["room_id"], row["author_id"], row["client_id"])] = row["seq"]
    unstored: list[UnstoredMessage] = []
    for e in entries:
        row = stored.get((e.room_id, e.seq))
        mine = stored_form(e)
        if row is not None:
            theirs = (row["author_username"], row["body"], row["client_id"], row["created_at"])
            changed = row["version_seq"] is not None or row["kind"] == MessageKind.EDIT
            if changed and (theirs[0], *theirs[2:]) == (mine[0], *mine[2:]):
                continue  # the same message; its body was since edited or deleted (protocol.md 7.4)
            if theirs == mine:
                continue  # the same message, stored by an earlier (replayed) batch
            reason = (
                f"seq {e.seq} already holds another message (by {row['author_username']!r}, "
                f"accepted {row['created_at'].isoformat()})"
            )
        else:
            holder = holders.get((e.room_id, e.user_id, mine[2]))
            if holder is None:
                continue  # stored by this very insert
            reason = f"the sender's client_id {mine[2]!r} is already stored as seq {holder}"
        unstored.append(_unstored(e, reason))
    if not unstored:
        return 0
    before = UnstoredMessage.objects.count()
    UnstoredMessage.objects.bulk_create(unstored, ignore_conflicts=True)
    new = UnstoredMessage.objects.count() - before
    with _count_lock:
        _recorded += new
    return new
