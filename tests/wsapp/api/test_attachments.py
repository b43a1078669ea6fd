"""POST /api/rooms/<slug>/attachments and the downloads, through project.asgi.application (protocol.md 7.3).

Every refusal of the contract's table is asked for with a real file made
here; downloads are checked for their headers, their ranges and for carrying
no metadata of the uploaded photo.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from PIL import Image

from chat import images, metrics, services
from chat.attachmentstore import attachment_storage
from chat.models import Attachment, Room
from project.asgi import application
from tests import samplefiles
from tests.wsapp.api.conftest import TIMEOUT, Api, login
from tests.wsapp.api.test_deps import new_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module", autouse=True)
def _image_workers() -> Iterator[None]:
    """The image worker processes are started by the first upload and stopped after this module."""
    yield
    images.shutdown_pool()


@pytest.fixture(autouse=True)
def media(settings: Any, tmp_path: Path) -> Path:
    """The attachments storage in a fresh directory, and generous upload budgets unless a test lowers them."""
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    settings.KAIWA_UPLOAD_RATE_BURST = 1000
    return root


@pytest.fixture
def room(alice: Any) -> Room:
    return services.room_create(name="Photos", creator=alice)


@pytest.fixture
def api(api_alice: Api) -> Api:
    """alice's client with a csrftoken cookie; ``api.csrf`` is the header value."""
    secret, masked = new_token()
    api_alice.cookies[settings.CSRF_COOKIE_NAME] = secret
    api_alice.csrf = masked  # type: ignore[attr-defined]
    return api_alice


def upload(client: Api, slug: str, data: bytes, name: str = "file", content_type: str = "application/octet-stream"):
    """POST one file the way a browser's FormData does."""
    return client.post(
        f"/api/rooms/{slug}/attachments",
        files={"file": (name, data, content_type)},
        headers={"X-CSRFToken": getattr(client, "csrf", "")},
    )


def refused(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


def assert_clean(data: bytes) -> None:
    for secret in samplefiles.SECRETS:
        assert secret not in data, f"{secret!r} was served"
    with Image.open(io.BytesIO(data)) as im:
        assert not im.getexif()


def test_photo_upload_answers_A_and_serves_a_clean_upright_copy(api: Api, room: Room) -> None:
    """A sideways JPEG with GPS EXIF: 201 with the A object; url and thumbnail_url serve upright bytes with no EXIF."""
    response = upload(api, room.slug, samplefiles.jpeg_with_gps(), "IMG_0001.jpg", "image/jpeg")
    assert response.status_code == 201, response.text
    a = response.json()["attachment"]
    assert a == {
        "id": a["id"],
        "name": "IMG_0001.jpg",
        "content_type": "image/jpeg",
        "size": a["size"],
        "url": f"/api/attachments/{a['id']}",
        "width": 200,
        "height": 300,
        "thumbnail_url": f"/api/attachments/{a['id']}/thumbnail",
        "thumbnail_width": 200,
        "thumbnail_height": 300,
    }
    full = api.get(a["url"])
    assert full.status_code == 200
    assert len(full.content) == a["size"] == int(full.headers["content-length"])
    assert full.headers["content-type"] == "image/jpeg"
    assert full.headers["cache-control"].startswith("private")
    assert full.headers["x-content-type-options"] == "nosniff"
    assert full.headers["content-disposition"].startswith("inline;")
    assert_clean(full.content)
    with Image.open(io.BytesIO(full.content)) as im:
        assert im.size == (200, 300)
    thumb = api.get(a["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.headers["cache-control"].startswith("private")
    assert_clean(thumb.content)


@pytest.mark.parametrize(
    ("maker", "name", "served_type", "served_name"),
    [
        (samplefiles.heic_with_gps, "IMG_0002.HEIC", "image/jpeg", "IMG_0002.jpg"),
        (samplefiles.png_with_text, "chart.png", "image/png", "chart.png"),
        (samplefiles.webp_with_exif, "sticker.webp", "image/webp", "sticker.webp"),
        (samplefiles.gif_animated, "party.gif", "image/gif", "party.gif"),
    ],
)
def test_every_picture_type_is_accepted_and_served_clean(
    api: Api, room: Room, maker: Any, name: str, served_type: str, served_name: str
) -> None:
    """HEIC (served as JPEG), PNG, WebP and animated GIF uploads: 201, served without metadata, with a thumbnail."""
    response = upload(api, room.slug, maker(), name, "application/octet-stream")
    assert response.status_code == 201, response.text
    a = response.json()["attachment"]
    assert (a["content_type"], a["name"]) == (served_type, served_name)
    full = api.get(a["url"])
    assert full.headers["content-type"] == served_type
    assert_clean(full.content)
    thumb = api.get(a["thumbnail_url"])
    assert thumb.status_code == 200
    assert max(a["thumbnail_width"], a["thumbnail_height"]) <= settings.KAIWA_THUMBNAIL_PX


@pytest.mark.parametrize(
    ("data", "name", "served_type"),
    [(samplefiles.PDF, "report.pdf", "application/pdf"), (samplefiles.TEXT, "notes.txt", "text/plain; charset=utf-8")],
)
def test_files_are_served_as_downloads(api: Api, room: Room, data: bytes, name: str, served_type: str) -> None:
    """A PDF or text file: A without image fields; served unchanged as an attachment, never rendered inline."""
    response = upload(api, room.slug, data, name, "text/html")
    assert response.status_code == 201, response.text
    a = response.json()["attachment"]
    assert set(a) == {"id", "name", "content_type", "size", "url"}
    assert a["size"] == len(data)
    got = api.get(a["url"])
    assert got.content == data
    assert got.headers["content-type"] == served_type
    assert got.headers["content-disposition"].startswith("attachment;")
    assert name in got.headers["content-disposition"]
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    refused(api.get(f"/api/attachments/{a['id']}/thumbnail"), 404, "not_found")


def test_range_requests(api: Api, room: Room) -> None:
    """Range: first-last, first-, -suffix give 206 with Content-Range; past the end 416; several ranges 200."""
    data = bytes(range(256)) * 40  # not text, not a known type...
    data = samplefiles.PDF + data  # ...so a PDF
    a = upload(api, room.slug, data, "big.pdf").json()["attachment"]
    size = len(data)

    def get(value: str) -> httpx.Response:
        return api.get(a["url"], headers={"Range": value})

    part = get("bytes=0-9")
    assert part.status_code == 206 and part.content == data[:10]
    assert part.headers["content-range"] == f"bytes 0-9/{size}"
    assert get("bytes=100-").content == data[100:]
    tail = get("bytes=-5")
    assert tail.status_code == 206 and tail.content == data[-5:]
    assert get(f"bytes=10-{size + 50}").content == data[10:]
    beyond = get(f"bytes={size}-")
    refused(beyond, 416, "range_not_satisfiable")
    assert beyond.headers["content-range"] == f"bytes */{size}"
    several = get("bytes=0-1,5-6")
    assert several.status_code == 200 and several.content == data
    assert api.get(a["url"], headers={"If-None-Match": f'"{a["id"]}"'}).status_code == 304


# -- the refusals of the contract's table ----------------------------------------------


def test_400_no_file_several_files_empty_file_not_multipart(api: Api, room: Room) -> None:
    """400 bad_request: no 'file' field, two files, an empty file, a body that is not multipart, a cut-off body."""
    url = f"/api/rooms/{room.slug}/attachments"
    headers = {"X-CSRFToken": api.csrf}  # type: ignore[attr-defined]
    message = refused(
        api.post(url, data={"other": "x"}, files={"picture": ("a.txt", b"hi")}, headers=headers), 400, "bad_request"
    )
    assert "'file'" in message
    two = [("file", ("a.txt", b"one", "text/plain")), ("file", ("b.txt", b"two", "text/plain"))]
    assert "one file" in refused(api.post(url, files=two, headers=headers), 400, "bad_request")
    assert "empty" in refused(upload(api, room.slug, b"", "empty.txt"), 400, "bad_request")
    assert "multipart/form-data" in refused(api.post(url, json={"file": "x"}, headers=headers), 400, "bad_request")
    cut = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nhello'
    cut_headers = {**headers, "Content-Type": "multipart/form-data; boundary=XyZ"}
    assert "cut off" in refused(api.post(url, content=cut, headers=cut_headers), 400, "bad_request")
    assert not Attachment.objects.exists()


def test_403_anonymous_or_without_csrf(anonymous: Api, api: Api, room: Room) -> None:
    """403 forbidden: no session; a session but no CSRF token (Django's rule)."""
    refused(upload(anonymous, room.slug, samplefiles.TEXT), 403, "forbidden")
    api.csrf = ""  # type: ignore[attr-defined]
    assert "CSRF" in refused(upload(api, room.slug, samplefiles.TEXT), 403, "forbidden")
    assert not Attachment.objects.exists()


def test_404_unknown_room_or_private_room_of_others(api: Api, make_user: Any) -> None:
    """404 not_found: an unknown slug and a private room alice is not in answer the same."""
    bob = make_user("bob")
    secret = services.room_create(name="Bob only", private=True, creator=bob)
    unknown = refused(upload(api, "no-such-room", samplefiles.TEXT), 404, "not_found")
    hidden = refused(upload(api, secret.slug, samplefiles.TEXT), 404, "not_found")
    assert unknown.replace("no-such-room", secret.slug) == hidden


def test_downloads_answer_only_those_who_see_the_room(api: Api, alice: Any, make_user: Any, anonymous: Api) -> None:
    """url and thumbnail_url of a private room: 404 to a non-member, 403 without a session; members get them."""
    private = services.room_create(name="Secret", private=True, creator=alice)
    a = upload(api, private.slug, samplefiles.jpeg_with_gps(), "p.jpg").json()["attachment"]
    carol_user = make_user("carol")
    carol = login(Api(), carol_user)
    refused(carol.get(a["url"]), 404, "not_found")
    refused(carol.get(a["thumbnail_url"]), 404, "not_found")
    refused(anonymous.get(a["url"]), 403, "forbidden")
    refused(carol.get("/api/attachments/nope"), 404, "not_found")
    services.room_member_add(room=private, user=carol_user)
    assert carol.get(a["url"]).status_code == 200


def test_413_over_the_limit_by_content_length(api: Api, room: Room, settings: Any) -> None:
    """413 too_large when the declared body is over KAIWA_MAX_UPLOAD_BYTES, before reading it."""
    settings.KAIWA_MAX_UPLOAD_BYTES = 10_000
    message = refused(upload(api, room.slug, samplefiles.PDF + b"x" * 100_000, "big.pdf"), 413, "too_large")
    assert "10,000 bytes" in message
    assert not Attachment.objects.exists()


def test_413_stops_reading_a_streamed_body_at_the_limit(api: Api, room: Room, settings: Any) -> None:
    """A body without Content-Length is read only until the file passes the limit: the rest is never asked for."""
    settings.KAIWA_MAX_UPLOAD_BYTES = 100_000
    sent: list[int] = []
    chunk = b"x" * 16_384
    chunks = 200  # 3.2 MB offered

    async def body() -> AsyncIterator[bytes]:
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
        for _ in range(chunks):
            sent.append(len(chunk))
            yield chunk
        yield b"\r\n--B--\r\n"

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", cookies=api.cookies) as client:
            return await asyncio.wait_for(
                client.post(
                    f"/api/rooms/{room.slug}/attachments",
                    content=body(),
                    headers={"X-CSRFToken": api.csrf, "Content-Type": "multipart/form-data; boundary=B"},  # type: ignore[attr-defined]
                ),
                TIMEOUT,
            )

    response = asyncio.run(send())
    refused(response, 413, "too_large")
    assert sum(sent) < 100_000 + 3 * len(chunk), f"read {sum(sent)} bytes of {chunks * len(chunk)}"
    assert not Attachment.objects.exists()


def test_415_type_from_content_not_from_the_claim(api: Api, room: Room) -> None:
    """415 unsupported_type: a ZIP sent as photo.jpg with Content-Type image/jpeg."""
    message = refused(upload(api, room.slug, samplefiles.ZIP, "photo.jpg", "image/jpeg"), 415, "unsupported_type")
    assert "image/jpeg" in message
    assert not Attachment.objects.exists()


@pytest.mark.parametrize(
    ("maker", "fragment"),
    [(samplefiles.png_bomb, "pixels"), (samplefiles.truncated_jpeg, "not a readable JPEG")],
)
def test_422_bomb_or_broken_picture(api: Api, room: Room, maker: Any, fragment: str) -> None:
    """422 bad_image: 60 million pixels in a few kilobytes (over KAIWA_MAX_IMAGE_PIXELS), or a cut-off JPEG."""
    message = refused(upload(api, room.slug, maker(), "x.png"), 422, "bad_image")
    assert fragment in message
    assert not Attachment.objects.exists()
    assert not any(Path(settings.STORAGES["attachments"]["OPTIONS"]["location"]).rglob("*.*"))


def test_429_over_the_upload_budget_with_retry_after(api: Api, room: Room, settings: Any) -> None:
    """429 rate_limited past KAIWA_UPLOAD_RATE_BURST uploads, with a Retry-After header in seconds."""
    settings.KAIWA_UPLOAD_RATE_BURST = 2
    settings.KAIWA_UPLOAD_RATE_PER_MINUTE = 2
    assert upload(api, room.slug, samplefiles.TEXT, "1.txt").status_code == 201
    assert upload(api, room.slug, samplefiles.TEXT, "2.txt").status_code == 201
    third = upload(api, room.slug, samplefiles.TEXT, "3.txt")
    refused(third, 429, "rate_limited")
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert Attachment.objects.count() == 2


def test_refusals_are_counted_by_code_in_the_metrics(api: Api, room: Room, settings: Any) -> None:
    """Each refused upload adds one to kaiwa_upload_refusals_total{code}; a stored one adds none."""

    def count(code: str) -> float:
        return metrics.REGISTRY.get_sample_value("kaiwa_upload_refusals_total", {"code": code}) or 0.0

    before = {code: count(code) for code in ("too_large", "unsupported_type", "rate_limited")}
    settings.KAIWA_MAX_UPLOAD_BYTES = 10_000
    settings.KAIWA_UPLOAD_RATE_BURST = 3
    settings.KAIWA_UPLOAD_RATE_PER_MINUTE = 1
    assert upload(api, room.slug, samplefiles.TEXT, "ok.txt").status_code == 201
    refused(upload(api, room.slug, samplefiles.PDF + b"x" * 100_000, "big.pdf"), 413, "too_large")
    refused(upload(api, room.slug, samplefiles.ZIP, "photo.jpg", "image/jpeg"), 415, "unsupported_type")
    refused(upload(api, room.slug, samplefiles.TEXT, "late.txt"), 429, "rate_limited")
    assert {code: count(code) - was for code, was in before.items()} == {
        "too_large": 1,
        "unsupported_type": 1,
        "rate_limited": 1,
    }


def test_503_storage_unreachable_keeps_nothing(api: Api, room: Room, settings: Any, tmp_path: Path) -> None:
    """503 unavailable when the storage cannot be written; no row, no file, no temporary file left."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(blocker)},
        },
    }
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    message = refused(upload(api, room.slug, samplefiles.jpeg_with_gps(), "a.jpg"), 503, "unavailable")
    assert "nothing was kept" in message
    assert not Attachment.objects.exists()
    assert list((tmp_path / "tmp").iterdir()) == []


def test_stored_files_are_under_the_attachments_storage(api: Api, room: Room, media: Path) -> None:
    """The served copy and thumbnail land in the 'attachments' storage (MEDIA_ROOT by default), named by id."""
    a = upload(api, room.slug, samplefiles.jpeg_with_gps(), "../../evil.jpg").json()["attachment"]
    row = Attachment.objects.get(pk=a["id"])
    assert a["name"] == "evil.jpg"
    assert attachment_storage().exists(row.file) and (media / row.file).is_file()
    assert {p.name for p in media.rglob("*") if p.is_file()} == {Path(row.file).name, Path(row.thumbnail).name}


def test_openapi_documents_the_routes(api: Api) -> None:
    """The schema lists the upload (multipart, its refusals) and both downloads."""
    paths = api.get("/api/openapi.json").json()["paths"]
    post = paths["/api/rooms/{slug}/attachments"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"201", "413", "415", "422", "429", "503"} <= set(post["responses"])
    assert "get" in paths["/api/attachments/{attachment_id}"]
    assert "get" in paths["/api/attachments/{attachment_id}/thumbnail"]
