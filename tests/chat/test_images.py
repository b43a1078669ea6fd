"""Uploaded files: type from content, pictures served upright and without metadata, bombs refused."""

from __future__ import annotations

import asyncio
import io
import os
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from chat import images
from chat.filetypes import OCTET_STREAM, is_utf8_text, sniff
from chat.uploads import UploadRefused, aprepare_upload, display_name, prepare_upload
from tests import samplefiles

ALL_TYPES = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/heic",
    "image/heif",
    "application/pdf",
    "text/plain",
)


def _prepare(tmp_path: Path, data: bytes, name: str = "upload", *, max_pixels: int = 50_000_000, px: int = 640):
    src = tmp_path / "src"
    src.write_bytes(data)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return prepare_upload(
        str(src), str(work), name=name, allowed_types=ALL_TYPES, max_pixels=max_pixels, thumbnail_px=px
    )


def _assert_no_metadata(data: bytes) -> None:
    for secret in samplefiles.SECRETS:
        assert secret not in data, f"{secret!r} survived in the served bytes"
    with Image.open(io.BytesIO(data)) as im:
        assert not im.getexif(), f"EXIF left: {dict(im.getexif())}"
        assert not {"exif", "xmp", "XML:com.adobe.xmp", "comment", "Comment"} & set(im.info), im.info


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"GIF89a....", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x14ftypmif1\x00\x00\x00\x00mif1", "image/heif"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", OCTET_STREAM),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", OCTET_STREAM),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"\xef\xbb\xbf junk then %PDF-1.4", "application/pdf"),
        (b"PK\x03\x04", OCTET_STREAM),
        (b"<html><script>", OCTET_STREAM),
        (b"", OCTET_STREAM),
    ],
)
def test_sniff_finds_the_type_from_the_bytes(head: bytes, expected: str) -> None:
    """Signatures decide the type: JPEG, PNG, GIF, WebP, HEIC vs HEIF vs AVIF brands, PDF; others are unknown."""
    assert sniff(head) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (samplefiles.TEXT, True),
        (b"\xef\xbb\xbfwith a BOM\r\n", True),
        (b"", True),
        (b"nul \x00 inside", False),
        (b"latin-1 \xe9t\xe9", False),
        (b"bell \x07", False),
        ("x" * 70_000 + "\u4f1a", True),
    ],
)
def test_text_is_utf8_without_control_characters(data: bytes | str, expected: bool) -> None:
    """Text means the whole file decodes as UTF-8 (also across read chunks) with no NUL or other control bytes."""
    raw = data.encode() if isinstance(data, str) else data
    assert is_utf8_text(io.BytesIO(raw)) is expected


def test_jpeg_with_gps_is_served_upright_and_without_any_metadata(tmp_path: Path) -> None:
    """A sideways phone JPEG with GPS EXIF, XMP and a comment: served turned upright, with no metadata at all."""
    original = samplefiles.jpeg_with_gps(size=(300, 200), orientation=6)
    assert all(secret in original for secret in samplefiles.SECRETS)  # the test file really carries them
    prepared = _prepare(tmp_path, original, "IMG_0001.JPG")
    assert prepared.content_type == "image/jpeg"
    assert prepared.name == "IMG_0001.JPG"
    served = Path(prepared.path).read_bytes()
    _assert_no_metadata(served)
    with Image.open(io.BytesIO(served)) as im:
        assert im.size == (200, 300)
        # Orientation 6 turns the picture a quarter clockwise: the red top is now on the right.
        left, right = im.getpixel((20, 150)), im.getpixel((180, 150))
        assert isinstance(left, tuple) and isinstance(right, tuple)
        assert left[2] > 150 and left[0] < 80, left
        assert right[0] > 150 and right[2] < 80, right
    assert prepared.image is not None
    assert (prepared.image.width, prepared.image.height) == (200, 300)
    assert prepared.thumbnail_path is not None
    _assert_no_metadata(Path(prepared.thumbnail_path).read_bytes())


def test_heic_photo_is_served_as_jpeg_upright_without_metadata(tmp_path: Path) -> None:
    """An iPhone-style HEIC with GPS EXIF is served as JPEG (name ending in .jpg), upright, metadata gone."""
    original = samplefiles.heic_with_gps(size=(300, 200), orientation=6)
    assert samplefiles.GPS_SERIAL.encode() in original
    prepared = _prepare(tmp_path, original, "IMG_4242.HEIC")
    assert prepared.content_type == "image/jpeg"
    assert prepared.name == "IMG_4242.jpg"
    served = Path(prepared.path).read_bytes()
    assert served[:3] == b"\xff\xd8\xff"
    _assert_no_metadata(served)
    with Image.open(io.BytesIO(served)) as im:
        assert im.size == (200, 300)


@pytest.mark.parametrize(
    ("maker", "content_type", "thumbnail_type"),
    [
        (samplefiles.png_with_text, "image/png", "image/webp"),
        (samplefiles.webp_with_exif, "image/webp", "image/jpeg"),
    ],
)
def test_png_and_webp_lose_their_metadata(tmp_path: Path, maker, content_type: str, thumbnail_type: str) -> None:
    """PNG text chunks and EXIF, WebP EXIF and XMP are gone; a transparent picture gets a WebP thumbnail."""
    original = maker()
    prepared = _prepare(tmp_path, original)
    assert prepared.content_type == content_type
    _assert_no_metadata(Path(prepared.path).read_bytes())
    assert prepared.image is not None and prepared.image.thumbnail_type == thumbnail_type
    assert prepared.thumbnail_path is not None
    _assert_no_metadata(Path(prepared.thumbnail_path).read_bytes())


def test_animated_gif_keeps_animating_and_gets_a_still_thumbnail(tmp_path: Path) -> None:
    """An animated GIF is served with all its frames (its comment dropped); the thumbnail is one still frame."""
    prepared = _prepare(tmp_path, samplefiles.gif_animated(frames=3))
    served = Path(prepared.path).read_bytes()
    assert samplefiles.COMMENT.encode() not in served
    with Image.open(io.BytesIO(served)) as im:
        assert im.format == "GIF"
        assert getattr(im, "n_frames", 1) == 3
    assert prepared.image is not None and prepared.image.animated
    assert prepared.thumbnail_path is not None
    with Image.open(prepared.thumbnail_path) as thumb:
        assert thumb.format == "JPEG"
        assert getattr(thumb, "n_frames", 1) == 1


def test_thumbnail_fits_the_long_side(tmp_path: Path) -> None:
    """A 2000x1000 picture's thumbnail is 640x320; a picture smaller than the limit keeps its size."""
    big = io.BytesIO()
    samplefiles.two_colour((2000, 1000)).save(big, "PNG")
    prepared = _prepare(tmp_path, big.getvalue(), px=640)
    assert prepared.image is not None
    assert (prepared.image.thumbnail_width, prepared.image.thumbnail_height) == (640, 320)
    assert prepared.thumbnail_path is not None
    with Image.open(prepared.thumbnail_path) as thumb:
        assert thumb.size == (640, 320)
    small = _prepare(tmp_path, samplefiles.jpeg_with_gps(size=(120, 90), orientation=1), px=640)
    assert small.image is not None
    assert (small.image.thumbnail_width, small.image.thumbnail_height) == (120, 90)


def test_pixel_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    """A few-kilobyte PNG of 60 million pixels is refused as bad_image, saying the size and the limit."""
    bomb = samplefiles.png_bomb(10_000, 6_000)
    assert len(bomb) < 100_000
    with pytest.raises(UploadRefused) as info:
        _prepare(tmp_path, bomb, max_pixels=50_000_000)
    assert info.value.code == "bad_image"
    assert "60,000,000 pixels" in info.value.message and "50,000,000" in info.value.message


def test_header_only_bomb_is_refused_before_any_decoding(tmp_path: Path) -> None:
    """A PNG whose header claims 100,000 x 100,000 pixels but holds 8x8 pixels of data is refused for its size.

    Decoding would fail differently (too little data): the size message proves the
    check ran on the header, before any pixel buffer was allocated.
    """
    whole = samplefiles.png_bomb(8, 8)
    ihdr_end = 8 + 8 + 13 + 4  # signature, chunk length + type, IHDR data, CRC
    forged = bytearray(whole)
    forged[16:20] = (100_000).to_bytes(4, "big")
    forged[20:24] = (100_000).to_bytes(4, "big")
    forged[29:33] = zlib.crc32(bytes(forged[12:29])).to_bytes(4, "big")
    assert len(forged) == len(whole) and ihdr_end < len(forged)
    with pytest.raises(UploadRefused) as info:
        _prepare(tmp_path, bytes(forged))
    assert info.value.code == "bad_image"
    assert "10,000,000,000 pixels" in info.value.message


def test_animation_pixels_count_every_frame(tmp_path: Path) -> None:
    """An animation is refused when its frames together pass the pixel limit, even if one frame would not."""
    gif = samplefiles.gif_animated(frames=4, size=(100, 100))
    with pytest.raises(UploadRefused) as info:
        _prepare(tmp_path, gif, max_pixels=30_000)
    assert info.value.code == "bad_image" and "4 frames" in info.value.message


def test_truncated_image_is_bad_image(tmp_path: Path) -> None:
    """A JPEG cut off half-way is refused as bad_image, not served broken."""
    with pytest.raises(UploadRefused) as info:
        _prepare(tmp_path, samplefiles.truncated_jpeg())
    assert info.value.code == "bad_image"
    assert str(tmp_path) not in info.value.message  # no server path in what the user reads


def test_file_named_jpg_that_is_not_an_image_is_unsupported(tmp_path: Path) -> None:
    """The client's name and claim count for nothing: a ZIP called photo.jpg is unsupported_type."""
    with pytest.raises(UploadRefused) as info:
        _prepare(tmp_path, samplefiles.ZIP, "photo.jpg")
    assert info.value.code == "unsupported_type"
    assert "image/jpeg" in info.value.message  # says what is accepted


def test_pdf_and_text_are_stored_as_they_came(tmp_path: Path) -> None:
    """PDF and text are recognised from their bytes and kept unchanged (they are served as downloads)."""
    pdf = _prepare(tmp_path, samplefiles.PDF, "report.pdf")
    assert (pdf.content_type, pdf.size, pdf.image) == ("application/pdf", len(samplefiles.PDF), None)
    text = _prepare(tmp_path, samplefiles.TEXT, "notes")
    assert text.content_type == "text/plain"
    assert Path(text.path).read_bytes() == samplefiles.TEXT


def test_types_outside_the_setting_are_refused(tmp_path: Path) -> None:
    """A type Kaiwa knows but the operator did not list in KAIWA_UPLOAD_TYPES is unsupported_type."""
    src = tmp_path / "doc.pdf"
    src.write_bytes(samplefiles.PDF)
    with pytest.raises(UploadRefused) as info:
        prepare_upload(
            str(src), str(tmp_path), name="doc.pdf", allowed_types=("image/png",), max_pixels=10**6, thumbnail_px=64
        )
    assert info.value.code == "unsupported_type" and "PDF" in info.value.message


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        ("../../etc/passwd", "text/plain", "passwd"),
        ("C:\\Users\\me\\photo.heic", "image/jpeg", "photo.jpg"),
        ("bad\r\nname\x00.pdf", "application/pdf", "badname.pdf"),
        ("", "application/pdf", "file"),
        ("a" * 300 + ".txt", "text/plain", "a" * 251 + ".txt"),
        ("...", "text/plain", "file"),
    ],
)
def test_display_name_is_safe(name: str, content_type: str, expected: str) -> None:
    """Shown names have no directories, no control characters, at most 255 characters."""
    assert display_name(name, content_type) == expected


def test_pictures_are_processed_in_another_process_without_delaying_the_loop(tmp_path: Path) -> None:
    """A phone-size photo is decoded in a worker process; the event loop keeps ticking every few milliseconds."""
    noise = Image.effect_noise((4000, 3000), 40)
    photo = Image.merge(
        "RGB", (noise, noise.rotate(90, expand=False), noise.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    )
    src = tmp_path / "photo.jpg"
    photo.save(src, "JPEG", quality=95)
    assert src.stat().st_size > 3_000_000
    work = tmp_path / "work"
    work.mkdir()

    async def main() -> tuple[float, int, float]:
        worker_pid = await asyncio.wait_for(images.arun_in_workers(os.getpid, workers=1), timeout=60)
        assert worker_pid != os.getpid()
        lags: list[float] = []
        job = asyncio.ensure_future(
            aprepare_upload(
                str(src), str(work), name="photo.jpg", allowed_types=ALL_TYPES, max_pixels=50_000_000,
                thumbnail_px=640, workers=1,
            )
        )  # fmt: skip
        started = time.perf_counter()
        while not job.done():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - before - 0.005)
        took = time.perf_counter() - started
        prepared = await asyncio.wait_for(job, timeout=60)
        assert prepared.image is not None and prepared.image.width == 4000
        return max(lags), len(lags), took

    try:
        worst, ticks, took = asyncio.run(main())
    finally:
        images.shutdown_pool()
    assert took > 0.05, "the photo was too small to tell"
    # A thread would hold the GIL between Pillow's C calls; a process leaves the loop alone.
    assert ticks >= took / 0.05, (ticks, took)
    assert worst < 0.25, f"the loop stalled {worst * 1000:.0f} ms"
