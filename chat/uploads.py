"""From an uploaded file on local disk to what Kaiwa will store and serve.

:func:`prepare_upload` finds the type from the content, refuses what the
server does not take, and for pictures writes the served copy and the
thumbnail (chat/images.py). It imports no Django so that it runs in the image
worker processes (:func:`aprepare_upload`); storing the result and the
database row are chat.services's.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass

from chat import images
from chat.filetypes import HEAD_BYTES, IMAGE_TYPES, OCTET_STREAM, is_utf8_text, sniff

NAME_MAX = 255
_TYPE_NAMES = {
    "image/jpeg": "a JPEG picture",
    "image/png": "a PNG picture",
    "image/gif": "a GIF picture",
    "image/webp": "a WebP picture",
    "image/heic": "a HEIC photo",
    "image/heif": "a HEIF photo",
    "application/pdf": "a PDF document",
    "text/plain": "a text file",
}


class UploadRefused(Exception):
    """The upload is refused; ``code`` is the API's error code (protocol.md 7.3)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)  # picklable: it crosses from a worker process
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Prepared:
    """An accepted upload: the file to store (``path``) and what to record about it."""

    name: str
    content_type: str
    path: str
    size: int
    image: images.ImageResult | None = None
    thumbnail_path: str | None = None
    thumbnail_size: int = 0


def display_name(name: str, content_type: str) -> str:
    """A file name safe to show and to put in a header: no path, no control characters, at most 255 chars.

    An image served in another format than it came in gets that format's
    extension (``IMG_0001.HEIC`` -> ``IMG_0001.jpg``).
    """
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip().strip(".")
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    if content_type == "image/jpeg" and ext.lower() not in ("jpg", "jpeg"):
        ext = "jpg"
    stem = stem or "file"
    ext = ext[:16]
    room = NAME_MAX - (len(ext) + 1 if ext else 0)
    return f"{stem[:room]}.{ext}" if ext else stem[:NAME_MAX]


def prepare_upload(
    src: str,
    workdir: str,
    *,
    name: str,
    allowed_types: Collection[str],
    max_pixels: int,
    thumbnail_px: int,
) -> Prepared:
    """Check the uploaded file ``src``; for a picture, write its served copy and thumbnail into ``workdir``.

    Raises :class:`UploadRefused` with ``unsupported_type`` or ``bad_image``.
    """
    with open(src, "rb") as fp:
        content_type = sniff(fp.read(HEAD_BYTES))
        if content_type == OCTET_STREAM and "text/plain" in allowed_types:
            fp.seek(0)
            if is_utf8_text(fp):
                content_type = "text/plain"
    if content_type not in allowed_types:
        found = _TYPE_NAMES.get(content_type, "of a type Kaiwa does not recognise")
        accepted = ", ".join(sorted(allowed_types))
        raise UploadRefused("unsupported_type", f"This file is {found}; the server accepts {accepted}.")
    if content_type not in IMAGE_TYPES:
        return Prepared(
            name=display_name(name, content_type), content_type=content_type, path=src, size=os.path.getsize(src)
        )
    served = os.path.join(workdir, "served")
    thumbnail = os.path.join(workdir, "thumbnail")
    try:
        result = images.process_image(
            src, served, thumbnail, content_type=content_type, max_pixels=max_pixels, thumbnail_px=thumbnail_px
        )
    except images.BadImage as exc:
        raise UploadRefused("bad_image", str(exc)) from None
    return Prepared(
        name=display_name(name, result.content_type),
        content_type=result.content_type,
        path=served,
        size=os.path.getsize(served),
        image=result,
        thumbnail_path=thumbnail,
        thumbnail_size=os.path.getsize(thumbnail),
    )


async def aprepare_upload(
    src: str,
    workdir: str,
    *,
    name: str,
    allowed_types: Collection[str],
    max_pixels: int,
    thumbnail_px: int,
    workers: int,
) -> Prepared:
    """:func:`prepare_upload` in an image worker process, off the event loop."""
    call = functools.partial(
        prepare_upload,
        src,
        workdir,
        name=name,
        allowed_types=tuple(allowed_types),
        max_pixels=max_pixels,
        thumbnail_px=thumbnail_px,
    )
    return await images.arun_in_workers(call, workers=workers)
