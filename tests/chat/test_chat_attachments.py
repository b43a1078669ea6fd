"""The template filters that draw a stored message's attachments as the live client does (chat_attachments)."""

from __future__ import annotations

from django.template.loader import render_to_string

from chat.templatetags.chat_attachments import human_size, is_picture, thumb_box

PHOTO = {
    "id": "a1",
    "name": "IMG_0001.jpg",
    "content_type": "image/jpeg",
    "size": 2871233,
    "url": "/api/attachments/a1",
    "width": 3024,
    "height": 4032,
    "thumbnail_url": "/api/attachments/a1/thumbnail",
    "thumbnail_width": 480,
    "thumbnail_height": 640,
}
PDF = {
    "id": "b2",
    "name": "minutes <1>.pdf",
    "content_type": "application/pdf",
    "size": 48000,
    "url": "/api/attachments/b2",
}


def test_sizes_are_written_as_uploads_js_formatSize_writes_them() -> None:
    """Bytes, whole KB (halves rounded up like Math.round) and MB with one decimal: the same text live and stored."""
    assert [human_size(n) for n in (912, 1024, 48000, 1536, 2871233)] == ["912 B", "1 KB", "47 KB", "2 KB", "2.7 MB"]


def test_the_thumbnail_box_is_thumbnailBox_of_uploads_js() -> None:
    """The thumbnail scaled into 320x320, never enlarged, at least 1 px (tests/js/test-attachmentsview.mjs: 240x320)."""
    assert thumb_box(PHOTO) == (240, 320)
    assert thumb_box({"thumbnail_width": 100, "thumbnail_height": 50}) == (100, 50)
    assert thumb_box({"thumbnail_width": 4000, "thumbnail_height": 1}) == (320, 1)


def test_only_images_with_a_thumbnail_and_size_are_pictures() -> None:
    """A PDF, or an image the server made no thumbnail for, is drawn as a file row."""
    assert is_picture(PHOTO)
    assert not is_picture(PDF)
    assert not is_picture({**PHOTO, "thumbnail_url": None})


def test_the_template_escapes_names_and_draws_both_kinds() -> None:
    """A name with markup is text in the page; a picture is a sized thumbnail link, a file a download link."""
    html = render_to_string("chat/_attachments.html", {"attachments": [PHOTO, PDF]})
    assert 'width="240" height="320"' in html
    assert 'class="att att--image" href="/api/attachments/a1"' in html
    assert "minutes &lt;1&gt;.pdf" in html and "<1>" not in html
    assert '<span class="att__size">47 KB</span>' in html
