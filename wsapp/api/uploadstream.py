"""Reading one file out of a multipart/form-data body as it arrives, straight to a file on disk.

Starlette's ``request.form()`` reads the whole body before the route sees it
and has no limit on a file's size; this reader writes the ``file`` part to
disk in pieces of at most a few hundred kilobytes and stops reading the
moment the file passes its limit, so a 2 GB body costs the server at most the
limit in disk and a chunk in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
from fastapi import Request
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from wsapp.api.errors import BAD_REQUEST, ApiError

TOO_LARGE = "too_large"
# What a form may carry besides the file: part headers, boundaries, a few small fields.
FORM_SLACK_BYTES = 64 * 1024
_FLUSH_BYTES = 256 * 1024


@dataclass
class ReceivedFile:
    path: str
    name: str
    size: int


@dataclass
class _Form:
    """The multipart parser's callbacks: which part is the file, and its bytes not yet on disk."""

    field_name: bytes
    limit: int
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    in_file: bool = False
    files: int = 0
    name: str = ""
    size: int = 0
    pending: bytearray = field(default_factory=bytearray)
    ended: bool = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value_data,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
            "on_end": self.end,
        }

    def part_begin(self) -> None:
        self.headers = {}
        self.in_file = False

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_data(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[bytes(self.header_name).strip().lower()] = bytes(self.header_value).strip()
        self.header_name.clear()
        self.header_value.clear()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if options.get(b"name") == self.field_name:
            self.files += 1
            self.in_file = True
            self.name = options.get(b"filename", b"").decode("utf-8", errors="replace")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file and self.files == 1 and self.size <= self.limit:
            self.pending += data[start:end]
            self.size += end - start

    def part_end(self) -> None:
        self.in_file = False

    def end(self) -> None:
        self.ended = True


def too_large(limit: int) -> ApiError:
    mib = limit / (1024 * 1024)
    return ApiError(
        413,
        TOO_LARGE,
        f"The file is larger than the server's limit of {mib:.4g} MiB ({limit:,} bytes). "
        "Send a smaller file (a photo can be shared at a lower resolution).",
    )


def _boundary(request: Request) -> bytes:
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary", b"")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(
            400,
            BAD_REQUEST,
            "Send the file as multipart/form-data with one field named 'file' "
            "(a browser's FormData does this: form.append('file', blob, name)).",
        )
    return boundary


async def receive_file(request: Request, dest: str, *, limit: int, field_name: str = "file") -> ReceivedFile:
    """Write the body's one ``field_name`` part to ``dest``; refuse with 400 or 413 (``too_large``)."""
    boundary = _boundary(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_SLACK_BYTES:
        raise too_large(limit)
    form = _Form(field_name=field_name.encode(), limit=limit)
    parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
    total = 0
    try:
        async with await anyio.open_file(dest, "wb") as out:
            async for chunk in request.stream():
                total += len(chunk)
                if total > limit + FORM_SLACK_BYTES:
                    raise too_large(limit)
                parser.write(chunk)
                if form.size > limit:
                    raise too_large(limit)
                if form.files > 1:
                    raise ApiError(400, BAD_REQUEST, f"Send one file per upload: the form has several '{field_name}'.")
                if len(form.pending) >= _FLUSH_BYTES:
                    await out.write(bytes(form.pending))
                    form.pending.clear()
            parser.finalize()
            await out.write(bytes(form.pending))
            form.pending.clear()
    except MultipartParseError as exc:
        raise ApiError(
            400, BAD_REQUEST, f"The multipart body is malformed ({exc}); send it as a browser's FormData."
        ) from None
    except ClientDisconnect:
        raise ApiError(400, BAD_REQUEST, "The upload was interrupted before the end of the body.") from None
    if not form.ended:
        raise ApiError(400, BAD_REQUEST, "The multipart body ended before its closing boundary: the upload is cut off.")
    if form.files == 0:
        raise ApiError(
            400, BAD_REQUEST, f"The form has no field named '{field_name}': put the file in a '{field_name}' field."
        )
    if form.size == 0:
        raise ApiError(400, BAD_REQUEST, "The file is empty: choose a file with some content.")
    return ReceivedFile(path=dest, name=form.name, size=form.size)
