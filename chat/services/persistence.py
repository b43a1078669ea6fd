"""Storing the messages the worker read from Redis, exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from chat import messageedits, persistconflicts
from chat.messagelog import Entry, parse_ts
from chat.models import Message, Room
from chat.services.attachments import attachments_link

if TYPE_CHECKING:
    pass


# Messages ---------------------------------------------------------------------

_ID_CHUNK = 500  # stays under every backend's limit on query parameters
_USERNAME_MAX = Message._meta.get_field("author_username").max_length or 150
_CLIENT_ID_MAX = Message._meta.get_field("client_id").max_length or 64


def _existing_ids(model: Any, ids: set[int]) -> set[int]:
    found: set[int] = set()
    ordered = sorted(ids)
    for start in range(0, len(ordered), _ID_CHUNK):
        chunk = ordered[start : start + _ID_CHUNK]
        found.update(model._default_manager.filter(pk__in=chunk).values_list("pk", flat=True))
    return found


@transaction.atomic
def message_bulk_persist(*, entries: Sequence[Entry], statement_timeout_ms: int | None = None) -> int:
    """Store messages from the Redis log in one transaction; returns how many are now stored.

    Idempotent on ``(room, seq)``: an entry already in the database (written
    by a worker that crashed before it could acknowledge it to Redis) is left
    as it is, so replaying a batch never duplicates a row. The author becomes
    ``None`` when the account no longer exists (``author_username`` keeps the
    name); entries of rooms deleted since are skipped, as the room's messages
    would have been deleted with it. ``created_at`` is the time Redis accepted
    the message, not the time of this write.

    ``statement_timeout_ms`` bounds each statement on PostgreSQL (a lock wait
    included), so a long-lived worker cannot hang on one batch; SQLite's busy
    timeout does the same there.
    """
    if not entries:
        return 0
    if statement_timeout_ms and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{statement_timeout_ms}ms"])
    rooms = _existing_ids(Room, {e.room_id for e in entries})
    users = _existing_ids(get_user_model(), {e.user_id for e in entries})
    rows = [
        (
            e.room_id,
            e.seq,
            e.user_id if e.user_id in users else None,
            e.username[:_USERNAME_MAX],
            # PostgreSQL text cannot hold NUL; one such message must not block the queue.
            e.body.replace("\x00", "\ufffd"),
            (e.client_id or "")[:_CLIENT_ID_MAX],
            parse_ts(e.ts_ms),
        )
        for e in entries
        if e.room_id in rooms
    ]
    if rows and _message_insert_ignoring_stored(rows) < len(rows):
        # Some rows were already there: a replayed batch, or a conflict that must not vanish.
        persistconflicts.conflicts_record([e for e in entries if e.room_id in rooms])
    for e in entries:
        if e.attachments and e.room_id in rooms:
            attachments_link(room_id=e.room_id, seq=e.seq, uploader_id=e.user_id, ids=[a["id"] for a in e.attachments])
    if rows:
        # Edits, deletions, replies and mentions (protocol.md 7.4): their columns, then the targets' new state.
        messageedits.rows_complete(entries=entries, rooms=rooms)
        messageedits.events_apply(entries=entries, rooms=rooms, users=users)
    return len(rows)


_MESSAGE_COLUMNS = ("room_id", "seq", "author_id", "author_username", "body", "client_id", "created_at", "persisted_at")


def _message_insert_ignoring_stored(rows: list[tuple[Any, ...]]) -> int:
    """INSERT ... ON CONFLICT DO NOTHING, as few statements as the backend allows; returns the rows inserted.

    Any unique constraint skips a row: ``(room, seq)`` or the sender's
    ``(room, author, client_id)``. The caller checks the skipped ones
    (``chat.persistconflicts``): the same message again is harmless, anything else is kept as a conflict.

    Hand-written because the worker's throughput is this statement:
    ``bulk_create`` spent most of its time building model instances and
    per-field values (figures in docs/architecture.md, "Measured reasons").
    """
    now = timezone.now()
    table = connection.ops.quote_name(Message._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in _MESSAGE_COLUMNS)
    conflict = "ON CONFLICT DO NOTHING"
    inserted = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Eight array parameters whatever the batch size: one statement, cheap to bind.
            arrays = [list(column) for column in zip(*rows, strict=True)]
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT r, s, a, u, b, c, t, %s FROM unnest("
                "%s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::timestamptz[]"
                f") AS x(r, s, a, u, b, c, t) {conflict}",
                [now, *arrays],
            )
            inserted = cursor.rowcount
        elif connection.vendor == "sqlite":
            adapt = connection.ops.adapt_datetimefield_value
            stamp = adapt(now)
            values = [(*row[:6], adapt(row[6]), stamp) for row in rows]
            per_statement = max(1, (connection.features.max_query_params or 999) // len(_MESSAGE_COLUMNS))
            one = "(" + ", ".join(["%s"] * len(_MESSAGE_COLUMNS)) + ")"
            for start in range(0, len(values), per_statement):
                chunk = values[start : start + per_statement]
                cursor.execute(
                    f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * len(chunk))} {conflict}",
                    [value for row in chunk for value in row],
                )
                inserted += cursor.rowcount
        else:
            Message.objects.bulk_create(
                [
                    Message(room_id=r, seq=s, author_id=a, author_username=u, body=b, client_id=c, created_at=t)
                    for r, s, a, u, b, c, t in rows
                ],
                ignore_conflicts=True,
            )
            # No count from this backend: the caller compares every row.
    return inserted
