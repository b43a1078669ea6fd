"""Attachments (contract 7.3): uploads, claims by a send, links to stored messages, orphans."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from chat import attachmentstore, selectors, uploads
from chat.models import Attachment

if TYPE_CHECKING:
    pass


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
