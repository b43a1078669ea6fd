"""Writes: every change to rooms, memberships, accounts and messages goes through here.

Functions take keyword-only arguments and raise
``django.core.exceptions.ValidationError`` with a message that says how to
fix the problem; async twins carry Django's ``a`` prefix.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat import attachmentstore, messageedits, persistconflicts, selectors, uploads
from chat.clusterlog import message_log
from chat.messagelog import AppendResult, Entry, FloorNeeded, Log, RateLimit, TargetGone, parse_ts
from chat.models import Attachment, Membership, Message, Room, slug_validator
from chat.redisclient import make_async_client
from chat.selectors import amessage_max_seq

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import User

ROOM_NAME_MAX = Room._meta.get_field("name").max_length or 100
SLUG_MAX = Room._meta.get_field("slug").max_length or 64


def _slug_from_name(name: str) -> str:
    slug = slugify(name)[:SLUG_MAX].strip("-")
    # Names without any latin letter or digit (e.g. "会話") slugify to "".
    return slug or "room"


def _free_slug(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``, ... whichever is not taken yet."""
    if not Room.objects.filter(slug=base).exists():
        return base
    taken = set(Room.objects.filter(slug__startswith=f"{base[: SLUG_MAX - 8]}").values_list("slug", flat=True))
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: SLUG_MAX - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
        n += 1


@transaction.atomic
def room_create(
    *,
    name: str,
    slug: str | None = None,
    private: bool = False,
    creator: AbstractBaseUser | None,
    members: Iterable[AbstractBaseUser] = (),
) -> Room:
    """Create a room; the creator of a private room is always one of its members.

    Without ``slug``, one is derived from ``name`` (with ``-2``, ``-3``, ...
    appended when taken). An explicit ``slug`` that is taken is an error.
    """
    name = " ".join((name or "").split())
    if not name:
        raise ValidationError({"name": "Give the room a name."})
    if len(name) > ROOM_NAME_MAX:
        raise ValidationError({"name": f"Room names are at most {ROOM_NAME_MAX} characters; this one has {len(name)}."})
    if slug is None or slug.strip() == "":
        slug = _free_slug(_slug_from_name(name))
    else:
        slug = slug.strip()
        try:
            slug_validator(slug)
        except ValidationError:
            raise ValidationError(
                {
                    "slug": f"{slug!r} is not a valid room address: use 1 to 64 lowercase letters, digits or "
                    "hyphens, not starting or ending with a hyphen (e.g. 'team-chat')."
                }
            ) from None
        if Room.objects.filter(slug=slug).exists():
            raise ValidationError({"slug": f"A room with the address {slug!r} already exists; choose another one."})
    try:
        with transaction.atomic():
            room = Room.objects.create(
                name=name, slug=slug, private=private, created_by_id=creator.pk if creator else None
            )
    except IntegrityError:
        # Someone created the same slug at the same moment.
        raise ValidationError(
            {"slug": f"A room with the address {slug!r} was just created by someone else; choose another one."}
        ) from None
    if private:
        wanted: dict[Any, AbstractBaseUser] = {}
        if creator is not None:
            wanted[creator.pk] = creator
        for user in members:
            wanted.setdefault(user.pk, user)
        Membership.objects.bulk_create([Membership(room=room, user_id=pk) for pk in wanted])
    return room


def room_member_add(*, room: Room, user: AbstractBaseUser) -> Membership:
    """Make ``user`` a member of ``room``; adding an existing member changes nothing."""
    membership, _ = Membership.objects.get_or_create(room=room, user_id=user.pk)
    return membership


def room_member_remove(*, room: Room, user: AbstractBaseUser) -> bool:
    """Remove ``user`` from ``room``; returns whether they were a member.

    The creator of a private room cannot be removed: they manage its members.
    """
    if room.private and room.created_by_id is not None and room.created_by_id == user.pk:
        raise ValidationError(
            "The room's creator manages its members and cannot be removed; delete the room in the admin instead."
        )
    deleted, _ = Membership.objects.filter(room=room, user_id=user.pk).delete()
    return deleted > 0


@transaction.atomic
def user_signup(*, username: str, password: str) -> User:
    """Create an active account, checking the username and Django's password validators.

    With ``settings.DEBUG`` on, the very first account of the site becomes
    staff and superuser, so a developer trying Kaiwa can open /admin/ at once.
    """
    User = get_user_model()
    USERNAME_MAX = User._meta.get_field("username").max_length or 150
    username = User.normalize_username((username or "").strip())
    if not username:
        raise ValidationError({"username": "Choose a username."})
    if len(username) > USERNAME_MAX:
        raise ValidationError({"username": f"Usernames are at most {USERNAME_MAX} characters."})
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise ValidationError({"username": exc.messages}) from None
    if User._default_manager.filter(username__iexact=username).exists():
        raise ValidationError({"username": f"The username {username!r} is taken; choose another one."})
    candidate = User(username=username)
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None
    first_account = settings.DEBUG and not User._default_manager.exists()
    try:
        with transaction.atomic():
            user = User.objects.create_user(
                username=username, password=password, is_staff=first_account, is_superuser=first_account
            )
    except IntegrityError:
        raise ValidationError({"username": f"The username {username!r} is taken; choose another one."}) from None
    return user


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


# Live messages (the real-time path) -------------------------------------------


class MessageBodyEmpty(ValueError):
    """The body is empty or only whitespace."""


class MessageBodyTooLong(ValueError):
    """The body has more characters than ``KAIWA_MAX_BODY_CHARS``."""


class MessageUnavailable(Exception):
    """The message could not be accepted now (Redis unreachable); nothing was stored."""


# Redis errors that mean "the append may not have run": retried with the same
# dedup token, so a retry of an append that did run returns the original seq.
_APPEND_RETRIES = 2
_SERVER_TOKEN_SECONDS = 30


def message_body_validate(*, body: str, attachments: bool = False) -> None:
    """Raise ``MessageBodyEmpty`` / ``MessageBodyTooLong`` for a body the server refuses.

    A message with attachments may have an empty body (protocol.md 7.3).
    """
    if not body.strip() and not attachments:
        raise MessageBodyEmpty("The message is empty: type some text before sending.")
    limit = settings.KAIWA_MAX_BODY_CHARS
    if len(body) > limit:
        raise MessageBodyTooLong(
            f"The message has {len(body)} characters; the limit is {limit}. Split it into several messages."
        )


async def amessage_send(
    *,
    log: Log,
    room_id: int,
    slug: str,
    user_id: int,
    username: str,
    body: str,
    client_id: str | None,
    known_last: int | None = None,
    rate: RateLimit | None = None,
    attachments: Sequence[str] = (),
    reply_to: int | None = None,
) -> AppendResult:
    """Accept one message: append it to the room's Redis log (durable, ordered, published).

    With ``rate`` the user's token bucket is charged in the same step, and
    ``RateLimited`` raised when it is empty (nothing is appended then).

    ``client_id`` (when given) is the dedup token for ``KAIWA_DEDUP_SECONDS``:
    re-sending returns the original seq. Without it a server-made token guards
    this call's own retries. When Redis has no sequence for the room (new
    room, or a Redis that lost its data) the sequence resumes above
    ``max(highest stored seq, known_last)``, ``known_last`` being the highest
    seq this process has delivered. Raises ``MessageUnavailable`` when Redis
    cannot be reached.

    ``attachments`` (upload ids) are claimed for this message first
    (``AttachmentsInvalid`` if one is not the user's unused upload to the
    room); the message carries their ``A`` objects.

    ``reply_to`` must name a message of the room that is not deleted
    (``messageedits.TargetNotFound``); ``@username`` mentions are resolved
    (``messageedits.amentions_resolve``). A plain send costs no query.
    """
    message_body_validate(body=body, attachments=bool(attachments))
    if reply_to is not None:
        await messageedits.atarget_get(log=log, room_id=room_id, seq=reply_to)
    mentions = await messageedits.amentions_resolve(room_id=room_id, body=body) if "@" in body else ()
    token = client_id or uuid.uuid4().hex
    token_seconds = None if client_id else _SERVER_TOKEN_SECONDS
    objects: list[dict[str, Any]] = []
    if attachments:
        try:
            await aattachments_claim(ids=attachments, room_id=room_id, user_id=user_id, token=token)
            objects = await selectors.aattachment_dicts(ids=attachments)
        except DatabaseError as exc:
            raise MessageUnavailable(f"the database is unreachable ({exc})") from exc
    floor: int | None = None
    failures = 0
    while True:
        try:
            return await log.append(
                room_id=room_id,
                slug=slug,
                user_id=user_id,
                username=username,
                body=body,
                client_id=client_id,
                token=token,
                token_seconds=token_seconds,
                floor=floor,
                known_last=known_last or 0,
                rate=rate,
                attachments=objects,
                reply_to=reply_to,
                mentions=mentions,
            )
        except TargetGone as exc:
            raise messageedits.TargetNotFound(exc.seq) from None
        except FloorNeeded:
            if floor is not None:
                # The sequence vanished again between two calls: Redis is being flushed.
                raise MessageUnavailable("Redis lost the room's sequence twice in a row.") from None
            try:
                stored = await amessage_max_seq(room_id=room_id)
            except DatabaseError as exc:
                raise MessageUnavailable(f"the database is unreachable ({exc})") from exc
            floor = max(stored, known_last or 0)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            failures += 1
            if failures > _APPEND_RETRIES:
                raise MessageUnavailable(f"Redis is unreachable ({exc})") from exc


# Edits and deletions (protocol.md 7.4): chat.messageedits does the work ---------------

amessage_edit = messageedits.amessage_edit
amessage_delete = messageedits.amessage_delete
message_purge_deleted = messageedits.message_purge_deleted


def message_delete_as_staff(*, messages: Sequence[Message], user: AbstractBaseUser) -> int:
    """Delete messages as ``user`` (staff) from sync code (the admin): each through its room's log.

    Members see ``deleted`` live and the worker empties the rows, as for a
    user's deletion. The dedup token is the message's, so deleting again (a
    double click, a retry) is harmless. Returns how many were deleted now;
    ``MessageUnavailable`` when Redis is unreachable (those not yet deleted stay).
    """
    targets = [(m.room_id, m.room.slug, m.seq) for m in messages]

    async def run() -> int:
        client = make_async_client()
        log = message_log(client, dedup_seconds=settings.KAIWA_DEDUP_SECONDS, stream_keep=settings.KAIWA_STREAM_KEEP)
        done = 0
        try:
            for room_id, slug, seq in targets:
                try:
                    result = await amessage_delete(
                        log=log,
                        room_id=room_id,
                        slug=slug,
                        user_id=int(user.pk),
                        username=user.get_username(),
                        target=seq,
                        client_id=f"admin-delete-{seq}",
                    )
                except messageedits.TargetNotFound:
                    continue  # deleted meanwhile
                done += not result.duplicate
        except messageedits.Unavailable as exc:
            raise MessageUnavailable(str(exc)) from exc
        finally:
            await client.aclose()
        return done

    return async_to_sync(run)()


# Attachments (protocol.md 7.3) --------------------------------------------------

UploadRefused = uploads.UploadRefused
_ORPHAN_MARK = "orphan"  # a claim no send can take: the sweep is deleting it


def _upload_limits() -> dict[str, Any]:
    return {
        "allowed_types": tuple(settings.KAIWA_UPLOAD_TYPES),
        "max_pixels": settings.KAIWA_MAX_IMAGE_PIXELS,
        "thumbnail_px": settings.KAIWA_THUMBNAIL_PX,
    }


def _attachment_row(
    *, room_id: int, uploader_id: int, prepared: uploads.Prepared, names: tuple[str, str]
) -> Attachment:
    image = prepared.image
    return Attachment(
        room_id=room_id,
        uploader_id=uploader_id,
        name=prepared.name,
        content_type=prepared.content_type,
        size=prepared.size,
        file=names[0],
        width=image.width if image else None,
        height=image.height if image else None,
        thumbnail=names[1],
        thumbnail_content_type=image.thumbnail_type if image else "",
        thumbnail_width=image.thumbnail_width if image else None,
        thumbnail_height=image.thumbnail_height if image else None,
        thumbnail_size=prepared.thumbnail_size,
    )


def _unavailable(what: str) -> UploadRefused:
    message = f"The upload could not be stored ({what}); nothing was kept. Try again shortly."
    return UploadRefused("unavailable", message)


def attachment_create(*, room_id: int, uploader_id: int, path: str, name: str, workdir: str) -> Attachment:
    """Store the uploaded file at ``path`` (a local file) as an attachment of a room.

    The type is found from the content; a picture is stored re-encoded
    without metadata, with a thumbnail (written first into ``workdir``).
    Raises :class:`UploadRefused` (``unsupported_type``, ``bad_image``,
    ``unavailable``); on ``unavailable`` nothing is kept.
    """
    prepared = uploads.prepare_upload(path, workdir, name=name, **_upload_limits())
    row = _attachment_row(room_id=room_id, uploader_id=uploader_id, prepared=prepared, names=("", ""))
    try:
        names = attachmentstore.store(prepared, attachment_id=row.pk)
    except attachmentstore.StorageUnavailable as exc:
        raise _unavailable(str(exc)) from exc
    row.file, row.thumbnail = names
    try:
        row.save(force_insert=True)
    except DatabaseError as exc:
        attachmentstore.delete_files(names)
        raise _unavailable(f"the database failed: {exc}") from exc
    return row


async def aattachment_create(*, room_id: int, uploader_id: int, path: str, name: str, workdir: str) -> Attachment:
    """Async twin of :func:`attachment_create`: the picture work runs in a worker process, storage in a thread."""
    try:
        prepared = await uploads.aprepare_upload(
            path, workdir, name=name, workers=settings.KAIWA_IMAGE_WORKERS, **_upload_limits()
        )
    except uploads.images.ImageWorkersUnavailable as exc:
        raise _unavailable(str(exc)) from exc
    row = _attachment_row(room_id=room_id, uploader_id=uploader_id, prepared=prepared, names=("", ""))
    try:
        names = await sync_to_async(attachmentstore.store, thread_sensitive=False)(prepared, attachment_id=row.pk)
    except attachmentstore.StorageUnavailable as exc:
        raise _unavailable(str(exc)) from exc
    row.file, row.thumbnail = names
    try:
        await row.asave(force_insert=True)
    except DatabaseError as exc:
        await sync_to_async(attachmentstore.delete_files, thread_sensitive=False)(names)
        raise _unavailable(f"the database failed: {exc}") from exc
    return row


class AttachmentsInvalid(ValueError):
    """``send`` named attachments that are not the sender's unused uploads to that room."""


async def aattachments_claim(*, ids: Sequence[str], room_id: int, user_id: int, token: str) -> None:
    """Reserve the uploads ``ids`` for the message a ``send`` with dedup token ``token`` is about to post.

    Each must be the user's own upload to the room, not used or claimed by
    another message; claiming again with the same token (a re-send) is fine.
    Raises :class:`AttachmentsInvalid` otherwise, having changed nothing.
    """
    wanted = set(ids)
    limit = settings.KAIWA_MAX_ATTACHMENTS_PER_MESSAGE
    if not wanted or len(ids) > limit or len(wanted) != len(ids):
        raise AttachmentsInvalid(f"Give 1 to {limit} different attachment ids.")
    # The user's id in the claim: another user's client_id can never match it.
    token = f"{user_id}:{token}"
    free = Q(message_seq__isnull=True, claim="") | Q(claim=token)
    mine = Attachment.objects.filter(pk__in=wanted, room_id=room_id, uploader_id=user_id).filter(free)

    def claim() -> int:
        with transaction.atomic():
            taken = mine.update(claim=token, claimed_at=timezone.now())
            if taken != len(wanted):
                transaction.set_rollback(True)
            return taken

    if await sync_to_async(claim)() != len(wanted):
        raise AttachmentsInvalid(
            "An attachment is not one of your uploads to this room, or another message already uses it; "
            "upload the file again."
        )


def attachments_link(*, room_id: int, seq: int, uploader_id: int, ids: Sequence[str]) -> int:
    """Record that message ``(room_id, seq)`` has the attachments ``ids``; idempotent.

    Called by the worker in the transaction that stores the message: an
    attachment is linked only if the message's author uploaded it, and only
    while unused or already this message's, so a replayed batch changes
    nothing and no upload ends up in two messages.
    """
    if not ids:
        return 0
    unused_or_this = Q(message_seq__isnull=True) | Q(message_seq=seq)
    mine = Attachment.objects.filter(pk__in=list(ids), room_id=room_id, uploader_id=uploader_id)
    return mine.filter(unused_or_this).update(message_seq=seq)


def attachment_delete_orphans(*, now: datetime | None = None, batch: int = 200) -> int:
    """Delete uploads no message used within ``KAIWA_ATTACHMENT_ORPHAN_HOURS``: files first, then rows.

    An upload claimed by a ``send`` is kept that long after the claim too
    (the message may still be on its way to the database). Returns how many
    were deleted; an upload whose files the storage could not delete stays,
    marked so that no send can take it, and is retried next time.
    """
    stale = selectors.attachment_orphans_filter(now=now)
    deleted = 0
    while True:
        ids = list(Attachment.objects.filter(stale).order_by("created_at").values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        Attachment.objects.filter(stale, pk__in=ids).update(claim=_ORPHAN_MARK)
        marked = Attachment.objects.filter(stale, pk__in=ids, claim=_ORPHAN_MARK)
        rows = list(marked.values_list("pk", "file", "thumbnail"))
        gone = [pk for pk, file, thumb in rows if attachmentstore.delete_files([file, thumb])]
        deleted += Attachment.objects.filter(pk__in=gone, message_seq__isnull=True).delete()[0]
        if len(gone) < len(rows) or len(ids) < batch:
            return deleted
