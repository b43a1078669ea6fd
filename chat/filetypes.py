"""What a file is, found from its bytes: never from its name or the client's claim.

Only the types Kaiwa can serve safely are recognised; anything else is
``application/octet-stream`` and refused unless an operator lists that in
``KAIWA_UPLOAD_TYPES``. Pure functions, no Django: they also run in the image
worker processes.
"""

from __future__ import annotations

import codecs
import re
from typing import BinaryIO

OCTET_STREAM = "application/octet-stream"
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif"})

# How much of the start of a file sniff() needs.
HEAD_BYTES = 1024

# ISO base media file brands (the `ftyp` box) of HEIF stills. HEVC-coded
# brands are "heic"; the generic image brands may hold any codec.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"})
_HEIF_BRANDS = frozenset({b"mif1", b"msf1", b"mif2"})

_TEXT_CHUNK = 1 << 16
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f]")


def sniff(head: bytes) -> str:
    """The content type of a file whose first bytes (at least ``HEAD_BYTES`` if it has them) are ``head``.

    Text is not decided here: a file that matches no binary signature may be
    text, which :func:`is_utf8_text` decides by reading all of it.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    # PDF readers accept the header anywhere in the first kilobyte.
    if b"%PDF-" in head[:HEAD_BYTES]:
        return "application/pdf"
    return OCTET_STREAM


def _sniff_ftyp(head: bytes) -> str:
    size = int.from_bytes(head[0:4], "big")
    major = head[8:12]
    # Compatible brands follow the major brand and its 4-byte minor version.
    end = min(size, len(head)) if size >= 16 else 16
    brands = {major} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _HEIC_BRANDS:
        return "image/heic"
    if major in _HEIF_BRANDS:
        # AVIF files also list mif1; they are AVIF, not the HEIF phones write.
        if b"avif" in brands or b"avis" in brands:
            return OCTET_STREAM
        return "image/heic" if brands & _HEIC_BRANDS else "image/heif"
    return OCTET_STREAM


def is_utf8_text(fp: BinaryIO) -> bool:
    """Whether the whole file is UTF-8 text (no NUL, no other C0 control but tab, CR, LF, FF).

    Reads the file in chunks from where it is; a byte-order mark is allowed.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    while True:
        chunk = fp.read(_TEXT_CHUNK)
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError:
            return False
        if _CONTROL.search(text):
            return False
        if not chunk:
            return True
