"""The admin's attachments: thumbnails in the message list and detail, storage per room, the upload list."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.template.defaultfilters import filesizeformat
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from chat import services
from chat.attachmentstore import attachment_storage
from chat.models import Attachment, Message, Room
from tests import samplefiles

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    return root


@pytest.fixture
def admin_client(client: Client, make_user: Any) -> Client:
    client.force_login(make_user("boss", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def alice(make_user: Any) -> Any:
    return make_user("alice")


def _upload(tmp_path: Path, room: Room, user: Any, data: bytes, name: str) -> Attachment:
    src = tmp_path / f"src-{name}"
    src.write_bytes(data)
    work = tmp_path / f"work-{name}"
    work.mkdir()
    return services.attachment_create(room_id=room.pk, uploader_id=user.pk, path=str(src), name=name, workdir=str(work))


def _message(room: Room, user: Any, seq: int, attachments: list[Attachment]) -> Message:
    message = Message.objects.create(
        room=room, seq=seq, author=user, author_username=user.username, body=f"m{seq}", created_at=timezone.now()
    )
    services.attachments_link(room_id=room.pk, seq=seq, uploader_id=user.pk, ids=[a.pk for a in attachments])
    return message


def test_message_list_shows_thumbnails_with_one_query_for_the_page(
    admin_client: Client, alice: Any, tmp_path: Path
) -> None:
    """Each message row shows its pictures' thumbnails; the page's attachments come in one query, whatever its size."""
    room = services.room_create(name="Secret", private=True, creator=alice)
    photo = _upload(tmp_path, room, alice, samplefiles.jpeg_with_gps(), "photo.jpg")
    pdf = _upload(tmp_path, room, alice, samplefiles.PDF, "report.pdf")
    _message(room, alice, 1, [photo, pdf])
    _message(room, alice, 2, [])

    with CaptureQueriesContext(connection) as few:
        page = admin_client.get("/admin/chat/message/").content.decode()
    assert f'src="/admin/chat/attachment/{photo.pk}/thumbnail/"' in page
    assert "report.pdf" in page
    for seq in range(3, 23):
        _message(room, alice, seq, [_upload(tmp_path, room, alice, samplefiles.TEXT, f"t{seq}.txt")])
    with CaptureQueriesContext(connection) as many:
        admin_client.get("/admin/chat/message/")
    assert len(many.captured_queries) == len(few.captured_queries)


def test_message_detail_and_thumbnail_view(admin_client: Client, alice: Any, tmp_path: Path) -> None:
    """The message page shows the thumbnail; the admin's thumbnail view serves it to staff, for private rooms too."""
    room = services.room_create(name="Secret", private=True, creator=alice)
    photo = _upload(tmp_path, room, alice, samplefiles.jpeg_with_gps(), "photo.jpg")
    message = _message(room, alice, 1, [photo])
    page = admin_client.get(f"/admin/chat/message/{message.pk}/change/").content.decode()
    assert f'src="/admin/chat/attachment/{photo.pk}/thumbnail/"' in page
    thumb = admin_client.get(f"/admin/chat/attachment/{photo.pk}/thumbnail/")
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as im:
        assert im.size == (photo.thumbnail_width, photo.thumbnail_height)
    assert admin_client.get("/admin/chat/attachment/nope/thumbnail/").status_code == 404


def test_thumbnail_view_is_for_staff_only(client: Client, alice: Any, tmp_path: Path) -> None:
    """A logged-in user who is not staff is sent to the admin login, not given the picture."""
    room = services.room_create(name="Lobby", creator=alice)
    photo = _upload(tmp_path, room, alice, samplefiles.jpeg_with_gps(), "photo.jpg")
    client.force_login(alice)
    response = client.get(f"/admin/chat/attachment/{photo.pk}/thumbnail/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_room_list_and_page_show_storage_per_room(admin_client: Client, alice: Any, tmp_path: Path) -> None:
    """The room list has a sortable storage column (files plus thumbnails); the room page shows it too."""
    room = services.room_create(name="Photos", creator=alice)
    services.room_create(name="Empty", creator=alice)
    a = _upload(tmp_path, room, alice, samplefiles.PDF + b"x" * 3000, "a.pdf")
    b = _upload(tmp_path, room, alice, samplefiles.jpeg_with_gps(), "b.jpg")
    total = a.size + b.size + b.thumbnail_size
    page = admin_client.get("/admin/chat/room/", {"o": "6"}).content.decode()
    assert str(filesizeformat(total)) in page and "0\xa0bytes" in page
    detail = admin_client.get(f"/admin/chat/room/{room.pk}/change/").content.decode()
    assert str(filesizeformat(total)) in detail


def test_attachment_list_and_deleting_a_room_removes_files(
    admin_client: Client, alice: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any
) -> None:
    """The upload list renders; deleting a room deletes its attachments' files from the storage."""
    room = services.room_create(name="Photos", creator=alice)
    photo = _upload(tmp_path, room, alice, samplefiles.jpeg_with_gps(), "photo.jpg")
    page = admin_client.get("/admin/chat/attachment/").content.decode()
    assert "photo.jpg" in page
    storage = attachment_storage()
    assert storage.exists(photo.file) and storage.exists(photo.thumbnail)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/chat/room/{room.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Attachment.objects.exists()
    assert not storage.exists(photo.file) and not storage.exists(photo.thumbnail)
