"""The "attachments" storage (``settings.STORAGES``): saving, opening and deleting files.

Any Django storage works: the filesystem under ``MEDIA_ROOT`` by default, an
S3-compatible bucket through django-storages (README, "Attachment storage").
Files are stored under names made from the attachment's id, never from the
uploader's file name. Every error of the storage's own (a full disk, an
unreachable bucket) becomes :class:`StorageUnavailable`, after removing what
was already written: nothing half-stored is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import Storage, storages

from chat.uploads import Prepared

logger = logging.getLogger("kaiwa.attachments")

STORAGE_ALIAS = "attachments"


class StorageUnavailable(Exception):
    """The attachments storage could not be reached or written; nothing was kept."""


def attachment_storage() -> Storage:
    return storages[STORAGE_ALIAS]


def _extension(content_type: str) -> str:
    known = {
        "image/jpeg": ".jpg",
        "image/png": ".png",
        "image/gif": ".gif",
        "image/webp": ".webp",
        "application/pdf": ".pdf",
        "text/plain": ".txt",
    }
    return known.get(content_type, ".bin")


def store(prepared: Prepared, *, attachment_id: str) -> tuple[str, str]:
    """Save the served file and the thumbnail (if any); returns their names in the storage."""
    storage = attachment_storage()
    base = f"{attachment_id[:2]}/{attachment_id}"
    saved: list[str] = []
    try:
        with open(prepared.path, "rb") as fp:
            saved.append(storage.save(base + _extension(prepared.content_type), File(fp)))
        if prepared.image is not None and prepared.thumbnail_path is not None:
            with open(prepared.thumbnail_path, "rb") as fp:
                saved.append(storage.save(f"{base}-thumb{prepared.image.thumbnail_extension}", File(fp)))
    except Exception as exc:
        # Which exceptions a storage raises is its own business (OSError,
        # botocore's errors, ...): whatever it was, remove what was written.
        delete_files(saved)
        raise StorageUnavailable(f"the attachments storage failed ({type(exc).__name__}: {exc})") from exc
    return saved[0], saved[1] if len(saved) > 1 else ""


def delete_files(names: Iterable[str]) -> bool:
    """Delete stored files (missing ones are fine); False when the storage failed (logged)."""
    storage = attachment_storage()
    ok = True
    for name in names:
        if not name:
            continue
        try:
            storage.delete(name)
        except Exception as exc:
            ok = False
            logger.warning("could not delete %s from the attachments storage: %s", name, exc)
    return ok


def open_file(name: str) -> IO[Any]:
    """Open a stored file for reading.

    Raises ``FileNotFoundError`` when the storage does not have it, and
    :class:`StorageUnavailable` when the storage fails.
    """
    try:
        return attachment_storage().open(name, "rb")
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise StorageUnavailable(f"the attachments storage failed ({type(exc).__name__}: {exc})") from exc
