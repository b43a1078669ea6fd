"""Uploading pictures and files, and downloading them (protocol.md 7.3).

``POST /api/rooms/<slug>/attachments`` streams the ``file`` field to a
temporary file (wsapp/api/uploadstream.py), then chat's services find its
type, turn pictures into clean copies and thumbnails in worker processes and
store the result in the attachments storage. Downloads check the room on
every request and stream from the storage, with byte ranges.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import IO, Annotated, Any
from urllib.parse import quote

import anyio
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from chat import attachmentstore, metrics, selectors, services, uploadrate
from chat.models import Attachment
from wsapp.api.deps import CurrentUser
from wsapp.api.errors import NOT_FOUND, PRIVATE_HEADERS, ApiError, error_responses
from wsapp.api.uploadstream import receive_file

router = APIRouter(tags=["attachments"])

RATE_LIMITED = "rate_limited"
_STATUS_OF = {"unsupported_type": 415, "bad_image": 422, "unavailable": 503}
_CHUNK = 256 * 1024
# Downloads may be kept by the user's own browser (the id never changes content), never by a shared cache.
_DOWNLOAD_CACHE = "private, max-age=3600"


class AttachmentOut(BaseModel):
    """``A`` of protocol.md 7.3: the image fields only for pictures."""

    id: str
    name: str
    content_type: str = Field(description="Found from the content; HEIC/HEIF photos are served as image/jpeg.")
    size: int = Field(description="Bytes of the file as served.")
    url: str
    width: int | None = None
    height: int | None = None
    thumbnail_url: str | None = None
    thumbnail_width: int | None = None
    thumbnail_height: int | None = None


class AttachmentCreated(BaseModel):
    attachment: AttachmentOut


def _no_room(slug: str) -> ApiError:
    return ApiError(
        404, NOT_FOUND, f"No room {slug!r} that you can see. Check the address; private rooms need an invitation."
    )


@router.post(
    "/rooms/{slug}/attachments",
    status_code=201,
    response_model=AttachmentCreated,
    response_model_exclude_none=True,
    responses=error_responses(400, 404, 413, 415, 422, 429, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def attachment_upload(slug: str, request: Request, user: CurrentUser) -> AttachmentCreated:
    """Upload one picture or file to a room; send its ``id`` in a ``send`` frame's ``attachments`` to post it.

    The type is found from the content. Pictures are served upright, without
    metadata (no GPS position), HEIC/HEIF as JPEG, with a thumbnail.
    """
    try:
        attachment = await _store_upload(slug, request, user)
    except ApiError as exc:
        metrics.upload_refused(exc.code)  # an operator sees refusals rise before users complain
        raise
    metrics.upload_stored(attachment.size)
    return AttachmentCreated(attachment=AttachmentOut.model_validate(selectors.attachment_dict(attachment)))


async def _store_upload(slug: str, request: Request, user: AbstractBaseUser) -> Attachment:
    """The upload's checks and storage, raising ``ApiError`` with the refusal of protocol.md 7.3."""
    room = await selectors.aroom_get_for_user(user=user, slug=slug)
    if room is None:
        raise _no_room(slug)
    wait = await uploadrate.acharge_upload(user_id=user.pk)
    if wait is not None:
        raise ApiError(
            429,
            RATE_LIMITED,
            f"You are uploading faster than the server allows; wait {wait} s and try again.",
            headers={"Retry-After": str(wait)},
        )
    workdir = await anyio.to_thread.run_sync(
        lambda: tempfile.mkdtemp(prefix="kaiwa-upload-", dir=settings.FILE_UPLOAD_TEMP_DIR)
    )
    try:
        received = await receive_file(request, f"{workdir}/upload", limit=settings.KAIWA_MAX_UPLOAD_BYTES)
        try:
            attachment = await services.aattachment_create(
                room_id=room.pk, uploader_id=user.pk, path=received.path, name=received.name, workdir=workdir
            )
        except services.UploadRefused as exc:
            raise ApiError(_STATUS_OF.get(exc.code, 400), exc.code, exc.message) from None
    finally:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(workdir, ignore_errors=True))
    return attachment


def _content_disposition(kind: str, name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one range ``bytes=a-b`` / ``a-`` / ``-n`` asked for, as (first, last); None: the whole file.

    Several ranges, or a header that is not a byte range, get the whole file
    (RFC 9110 lets a server ignore Range); a range past the end is 416.
    """
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_s, sep, last_s = (part.strip() for part in header[6:].partition("-"))
    if not sep:
        return None
    if not first_s:
        if not last_s.isdigit():
            return None
        length = int(last_s)
        if length == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    if not first_s.isdigit() or (last_s and not last_s.isdigit()):
        return None
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if first >= size:
        raise _unsatisfiable(size)
    if first > last:
        return None
    return first, min(last, size - 1)


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"The file has {size} bytes; ask for a range inside it.",
        headers={"Content-Range": f"bytes */{size}"},
    )


async def _stream(fp: IO[Any], first: int, length: int) -> AsyncIterator[bytes]:
    try:
        await anyio.to_thread.run_sync(fp.seek, first)
        remaining = length
        while remaining > 0:
            data = await anyio.to_thread.run_sync(fp.read, min(_CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)
            yield data
    finally:
        await anyio.to_thread.run_sync(fp.close)


async def _visible(attachment_id: str, user: Any) -> Attachment:
    attachment = await selectors.aattachment_get_for_user_id(user_id=user.pk, attachment_id=attachment_id)
    if attachment is None:
        raise ApiError(404, NOT_FOUND, "No such attachment that you can see; it may have been deleted.")
    return attachment


async def _download(
    request: Request, *, name: str, stored: str, content_type: str, etag: str, range_header: str | None
) -> Response:
    try:
        fp = await anyio.to_thread.run_sync(attachmentstore.open_file, stored)
    except FileNotFoundError:
        raise ApiError(
            404, NOT_FOUND, "The attachment's file is gone from the storage; it may have been deleted."
        ) from None
    except attachmentstore.StorageUnavailable:
        raise ApiError(503, "unavailable", "The file storage is unreachable; try again shortly.") from None
    size: int = await anyio.to_thread.run_sync(lambda: fp.seek(0, 2))
    headers = {
        **PRIVATE_HEADERS,
        "Cache-Control": _DOWNLOAD_CACHE,
        "ETag": etag,
        "Accept-Ranges": "bytes",
        # A file shown in the browser cannot run script or load anything.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        "Content-Disposition": _content_disposition(
            "inline" if content_type.startswith("image/") else "attachment", name
        ),
    }
    if request.headers.get("if-none-match") == etag:
        await anyio.to_thread.run_sync(fp.close)
        return Response(status_code=304, headers=headers)
    wanted = None
    if request.headers.get("if-range", etag) == etag:
        try:
            wanted = _byte_range(range_header, size)
        except ApiError:
            await anyio.to_thread.run_sync(fp.close)
            raise
    media_type = "text/plain; charset=utf-8" if content_type == "text/plain" else content_type
    first, last = wanted if wanted is not None else (0, size - 1)
    length = max(0, last - first + 1)
    headers["Content-Length"] = str(length)
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    return StreamingResponse(_stream(fp, first, length), status_code=status, media_type=media_type, headers=headers)


_DOWNLOAD_RESPONSES = error_responses(404, 416, 503)


@router.get("/attachments/{attachment_id}", response_class=StreamingResponse, responses=_DOWNLOAD_RESPONSES)
async def attachment_file(
    attachment_id: str, request: Request, user: CurrentUser, range: Annotated[str | None, Header()] = None
) -> Response:
    """The file (for pictures, the clean copy), to users who may see its room; ``Range`` is honoured."""
    attachment = await _visible(attachment_id, user)
    return await _download(
        request,
        name=attachment.name,
        stored=attachment.file,
        content_type=attachment.content_type,
        etag=f'"{attachment.pk}"',
        range_header=range,
    )


@router.get("/attachments/{attachment_id}/thumbnail", response_class=StreamingResponse, responses=_DOWNLOAD_RESPONSES)
async def attachment_thumbnail(
    attachment_id: str, request: Request, user: CurrentUser, range: Annotated[str | None, Header()] = None
) -> Response:
    """A picture's thumbnail (at most ``KAIWA_THUMBNAIL_PX`` on the long side); 404 for other files."""
    attachment = await _visible(attachment_id, user)
    if not attachment.thumbnail:
        raise ApiError(404, NOT_FOUND, "This attachment is not a picture and has no thumbnail; download its url.")
    stem = attachment.name.rsplit(".", 1)[0]
    extension = {"image/webp": "webp"}.get(attachment.thumbnail_content_type, "jpg")
    return await _download(
        request,
        name=f"{stem}-thumbnail.{extension}",
        stored=attachment.thumbnail,
        content_type=attachment.thumbnail_content_type,
        etag=f'"{attachment.pk}-thumbnail"',
        range_header=range,
    )
