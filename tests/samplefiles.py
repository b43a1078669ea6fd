"""Real files made in the tests: photos with GPS EXIF, animations, a pixel bomb, a PDF, text."""

from __future__ import annotations

import io

from PIL import Image

GPS_MAKE = "KaiwaTestCam"
GPS_SERIAL = "SERIAL-0042-SECRET"
COMMENT = "taken at home, secret comment"
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="35,41.3N"/></rdf:RDF></x:xmpmeta>'
)
# Strings that must never appear in a served copy.
SECRETS = (GPS_MAKE.encode(), GPS_SERIAL.encode(), COMMENT.encode(), b"GPSLatitude", b"Exif\x00\x00")

RED = (220, 20, 20)
BLUE = (20, 20, 220)


def gps_exif(orientation: int = 1) -> Image.Exif:
    """EXIF with a GPS position, a camera make and a serial number, and ``orientation``."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = GPS_MAKE
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (35.0, 41.0, 22.0)
    gps[3] = "E"
    gps[4] = (139.0, 41.0, 30.0)
    exif.get_ifd(0x8769)[0xA431] = GPS_SERIAL
    return exif


def two_colour(size: tuple[int, int] = (300, 200)) -> Image.Image:
    """Top half red, bottom half blue: shows which way the picture was turned."""
    w, h = size
    im = Image.new("RGB", size, BLUE)
    im.paste(Image.new("RGB", (w, h // 2), RED), (0, 0))
    return im


def jpeg_with_gps(size: tuple[int, int] = (300, 200), orientation: int = 6) -> bytes:
    """A JPEG carrying GPS EXIF, XMP and a comment, stored sideways (EXIF orientation 6 by default)."""
    out = io.BytesIO()
    two_colour(size).save(out, "JPEG", quality=90, exif=gps_exif(orientation).tobytes(), comment=COMMENT, xmp=XMP)
    return out.getvalue()


def png_with_text(size: tuple[int, int] = (120, 80)) -> bytes:
    """A transparent PNG carrying EXIF and a text chunk."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", COMMENT)
    out = io.BytesIO()
    Image.new("RGBA", size, (0, 128, 0, 100)).save(out, "PNG", pnginfo=info, exif=gps_exif().tobytes())
    return out.getvalue()


def webp_with_exif(size: tuple[int, int] = (200, 100)) -> bytes:
    out = io.BytesIO()
    two_colour(size).save(out, "WEBP", quality=80, exif=gps_exif().tobytes(), xmp=XMP)
    return out.getvalue()


def gif_animated(frames: int = 3, size: tuple[int, int] = (64, 48)) -> bytes:
    """An animated GIF with a comment."""
    colours = [RED, BLUE, (20, 200, 20), (200, 200, 20)]
    ims = [Image.new("RGB", size, colours[i % len(colours)]).convert("P") for i in range(frames)]
    out = io.BytesIO()
    ims[0].save(out, "GIF", save_all=True, append_images=ims[1:], duration=120, loop=0, comment=COMMENT)
    return out.getvalue()


def heic_with_gps(size: tuple[int, int] = (300, 200), orientation: int = 6) -> bytes:
    """A HEIC photo (what iPhones send) carrying GPS EXIF and an orientation."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    two_colour(size).save(out, "HEIF", quality=60, exif=gps_exif(orientation).tobytes())
    return out.getvalue()


def png_bomb(width: int = 10_000, height: int = 6_000) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` pixels that is only a few kilobytes."""
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG", optimize=True)
    return out.getvalue()


def truncated_jpeg() -> bytes:
    """A JPEG cut off half-way through its picture data."""
    data = jpeg_with_gps(size=(400, 300), orientation=1)
    return data[: len(data) // 2]


PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
TEXT = "Meeting notes\n\tHello, \u4f1a\u8a71!\n".encode()
ZIP = b"PK\x03\x04" + b"\x00" * 60
