"""Filters for drawing a message's attachments (chat/_attachments.html).

They compute what static/chat/js/attachmentsview.js and uploads.js compute for a
live message, so a server-rendered message and a live one look the same.
"""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()

# The largest box a thumbnail takes in the message list (CSS pixels); attachmentsview.js's
# THUMB_MAX_WIDTH / THUMB_MAX_HEIGHT.
THUMB_MAX_WIDTH = 320
THUMB_MAX_HEIGHT = 320


@register.filter
def is_picture(attachment: dict[str, Any]) -> bool:
    """Whether the attachment is drawn as a thumbnail (it has one, and its size)."""
    keys = ("thumbnail_url", "thumbnail_width", "thumbnail_height", "width", "height")
    return all(attachment.get(key) for key in keys)


def _js_round(value: float) -> int:
    # Math.round rounds halves up; Python's round() rounds them to even.
    return int(value + 0.5)


@register.filter
def thumb_box(attachment: dict[str, Any]) -> tuple[int, int]:
    """The thumbnail's size scaled to fit the message list's box, never enlarged (uploads.js thumbnailBox)."""
    width = int(attachment["thumbnail_width"])
    height = int(attachment["thumbnail_height"])
    scale = min(1.0, THUMB_MAX_WIDTH / width, THUMB_MAX_HEIGHT / height)
    return max(1, _js_round(width * scale)), max(1, _js_round(height * scale))


@register.filter
def human_size(size: int) -> str:
    """A file size for people, as uploads.js formatSize writes it: "912 B", "48 KB", "3.4 MB"."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{_js_round(size / 1024)} KB"
    return f"{size / (1024 * 1024):.1f} MB"
