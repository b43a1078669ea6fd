"""Uploaded pictures: checked, turned upright, re-encoded without metadata, thumbnailed.

Nothing of the uploaded file is served as it came: every served copy is
re-encoded from its pixels, so no EXIF (GPS position, camera serial, time),
XMP, IPTC or comment survives. The ICC colour profile is kept: it describes
the colours (without it a phone's wide-gamut photo looks dull), not the photo
or its owner. The EXIF orientation is applied to the pixels first, since the
tag that carried it is dropped. HEIC/HEIF (iPhone photos) is served as JPEG,
which every browser shows.

Decompression bombs: the pixel count is read from the header and checked
against the limit before anything is decoded. An animation's pixels are
counted over all its frames (a 1000x1000 GIF of 60 frames is 60 million).

Animated GIF and WebP keep animating in the full-size copy; their thumbnail
is a still of the first frame (a chat list of moving thumbnails costs every
member CPU and battery; the viewer shows the animation).

Decoding and encoding are CPU-heavy, so they run in a pool of worker
processes (:func:`arun_in_workers`), never on a server's event loop: a thread
would hold the GIL between Pillow's C calls and delay the loop (the measured
figures, and why Pillow rather than libvips, are in README, "Attachment
storage"). This module imports no Django: the workers only load it and Pillow.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image, ImageOps, ImageSequence

# The Pillow format that may decode each sniffed type: Pillow never gets to
# guess a decoder of its own for an uploaded file.
_FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/heic": "HEIF",
    "image/heif": "HEIF",
}
# What a served copy needs from the decoder's info; everything else goes.
_KEEP_INFO = ("transparency", "duration", "loop", "background")
JPEG_QUALITY = 90
THUMBNAIL_JPEG_QUALITY = 85
THUMBNAIL_WEBP_QUALITY = 80


class BadImage(ValueError):
    """The file says it is an image but cannot be decoded, or has too many pixels."""


@dataclass(frozen=True, slots=True)
class ImageResult:
    """What :func:`process_image` wrote."""

    content_type: str  # of the served copy
    extension: str  # of the served copy, with the dot
    width: int
    height: int
    thumbnail_type: str
    thumbnail_extension: str
    thumbnail_width: int
    thumbnail_height: int
    animated: bool


def served_type(content_type: str) -> str:
    """The type an image of ``content_type`` is served as."""
    return "image/jpeg" if content_type in ("image/heic", "image/heif") else content_type


def process_image(
    src: str, served: str, thumbnail: str, *, content_type: str, max_pixels: int, thumbnail_px: int
) -> ImageResult:
    """Write the served copy of image ``src`` to ``served`` and its thumbnail to ``thumbnail``.

    Raises :class:`BadImage` when the file cannot be decoded as
    ``content_type`` or has more than ``max_pixels`` pixels.
    """
    fmt = _FORMATS.get(content_type)
    if fmt is None:
        raise ValueError(f"{content_type} is not an image type Kaiwa decodes")
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    # Our own limit, checked from the header before decoding, replaces
    # Pillow's (a warning above about 89 million pixels, an error above twice that).
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(src, formats=[fmt]) as im:
            return _process(im, served, thumbnail, content_type=content_type, max_pixels=max_pixels, px=thumbnail_px)
    except BadImage:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        reason = str(exc).replace(f"'{src}'", "").replace(src, "").strip() or type(exc).__name__
        raise BadImage(
            f"The file is not a readable {fmt} image ({reason}); send it again, or another picture."
        ) from None


def _process(
    im: Image.Image, served: str, thumbnail: str, *, content_type: str, max_pixels: int, px: int
) -> ImageResult:
    width, height = im.size
    if width < 1 or height < 1:
        raise BadImage("The image has no pixels.")
    frames = getattr(im, "n_frames", 1) if fmt_can_animate(im) else 1
    pixels = width * height * frames
    if pixels > max_pixels:
        what = f"{width}x{height}" + (f" x {frames} frames" if frames > 1 else "")
        raise BadImage(
            f"The image is {what} = {pixels:,} pixels; the limit is {max_pixels:,}. "
            "Send a smaller picture (phone photos are 12 to 48 million pixels)."
        )
    icc = im.info.get("icc_profile")
    out_type = served_type(content_type)
    if frames > 1:
        first = _save_animation(im, served, fmt=im.format or "GIF")
    else:
        im.load()
        first = _upright(im)
        _clean_info(first)
        _save_still(first, served, content_type=out_type, icc=icc)
    thumb = first.copy()
    thumb.thumbnail((px, px), Image.Resampling.LANCZOS, reducing_gap=3.0)
    thumb_type = _save_thumbnail(thumb, thumbnail, icc=icc)
    return ImageResult(
        content_type=out_type,
        extension=_EXTENSIONS[out_type],
        width=first.width,
        height=first.height,
        thumbnail_type=thumb_type,
        thumbnail_extension=_EXTENSIONS[thumb_type],
        thumbnail_width=thumb.width,
        thumbnail_height=thumb.height,
        animated=frames > 1,
    )


_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp"}


def fmt_can_animate(im: Image.Image) -> bool:
    return im.format in ("GIF", "WEBP", "PNG") and bool(getattr(im, "is_animated", False))


def _upright(im: Image.Image) -> Image.Image:
    """``im`` with its EXIF orientation applied to the pixels (libheif already did it for HEIF)."""
    upright = ImageOps.exif_transpose(im)
    return upright if upright is not None else im


def _clean_info(im: Image.Image) -> None:
    # Pillow's writers take a comment, XMP or EXIF from im.info when it is
    # there: a served copy starts from an info with nothing but the essentials.
    im.info = {k: v for k, v in im.info.items() if k in _KEEP_INFO}


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)


def _save_still(im: Image.Image, path: str, *, content_type: str, icc: Any) -> None:
    extra: dict[str, Any] = {"icc_profile": icc} if icc else {}
    if content_type == "image/jpeg":
        rgb = im if im.mode in ("RGB", "L") else im.convert("RGB")
        rgb.save(path, "JPEG", quality=JPEG_QUALITY, **extra)
    elif content_type == "image/png":
        if im.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
            im = im.convert("RGBA")
        im.save(path, "PNG", **extra)
    elif content_type == "image/gif":
        im.save(path, "GIF")
    elif content_type == "image/webp":
        if im.mode not in ("RGB", "RGBA"):
            im = im.convert("RGBA" if _has_alpha(im) else "RGB")
        im.save(path, "WEBP", quality=JPEG_QUALITY, **extra)
    else:  # pragma: no cover - process_image() only passes the types above
        raise ValueError(content_type)


def _save_animation(im: Image.Image, path: str, *, fmt: str) -> Image.Image:
    """Re-encode every frame of an animation (without metadata); returns the first frame, upright."""
    frames: list[Image.Image] = []
    durations: list[int] = []
    for frame in ImageSequence.Iterator(im):
        copy = frame.copy()
        durations.append(int(frame.info.get("duration", 100) or 100))
        _clean_info(copy)
        frames.append(copy)
    loop = int(im.info.get("loop", 0) or 0)
    out_fmt = "PNG" if fmt == "PNG" else fmt
    frames[0].save(path, out_fmt, save_all=True, append_images=frames[1:], duration=durations, loop=loop)
    return frames[0]


def _save_thumbnail(im: Image.Image, path: str, *, icc: Any) -> str:
    """Save ``im`` as JPEG, or WebP when it has transparency; returns the type written."""
    extra: dict[str, Any] = {"icc_profile": icc} if icc else {}
    _clean_info(im)
    if _has_alpha(im):
        im.convert("RGBA").save(path, "WEBP", quality=THUMBNAIL_WEBP_QUALITY, **extra)
        return "image/webp"
    rgb = im if im.mode in ("RGB", "L") else im.convert("RGB")
    rgb.save(path, "JPEG", quality=THUMBNAIL_JPEG_QUALITY, **extra)
    return "image/jpeg"


# The worker processes -------------------------------------------------------------

T = TypeVar("T")

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
# A worker process is replaced after this many images, so one huge photo's
# memory does not stay with the process for good.
_TASKS_PER_WORKER = 100
_PARENT_CHECK_SECONDS = 1.0
_WORKER_NICENESS = 10


class ImageWorkersUnavailable(RuntimeError):
    """The image worker process died (out of memory?) while handling this image."""


def _worker_init(parent: int) -> None:
    """In a worker: give way to the server, and exit when the server process is gone.

    A lower CPU priority: on a busy machine the chat (the server process)
    gets the CPU first, the picture waits. An orphaned worker (the server was
    killed without shutting the pool down) would otherwise live on, holding
    the server's stdout and stderr open.
    """
    with contextlib.suppress(OSError):
        os.nice(_WORKER_NICENESS)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="kaiwa-image-parent-watch", daemon=True).start()


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # "spawn": a server process has threads and an event loop, which fork would copy half-way.
            _pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=_TASKS_PER_WORKER,
                initializer=_worker_init,
                initargs=(os.getpid(),),
            )
        return _pool


def shutdown_pool() -> None:
    """Stop the worker processes (a server's shutdown; they start again on the next image)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


async def arun_in_workers(call: Callable[[], T], *, workers: int) -> T:
    """Run ``call`` (picklable: a module-level function or a partial of one) in a worker process."""
    pool = _get_pool(workers)
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, call)
    except BrokenProcessPool:
        global _pool
        with _pool_lock:
            if _pool is pool:
                _pool = None
        raise ImageWorkersUnavailable(
            "The image worker stopped while processing this picture; try again, or send a smaller picture."
        ) from None
