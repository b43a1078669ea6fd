"""Attachment services and selectors: storing, claiming for a message, linking, orphans, access."""

from __future__ import annotations

import asyncio
import io
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from django.core.management import call_command
from django.utils import timezone

from chat import events, images, selectors, services
from chat.attachmentstore import attachment_storage
from chat.events import Entry
from chat.messagelog import MessageLog
from chat.models import Attachment, Room
from chat.orphansweep import OrphanSweep
from chat.redisclient import make_async_client
from chat.worker import Worker
from tests import redis_server, samplefiles
from tests.chat.conftest import run_async

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    """The attachments storage in a fresh directory."""
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
    }
    return root


@pytest.fixture
def room(alice: Any) -> Room:
    return services.room_create(name="Photos", creator=alice)


def _upload(tmp_path: Path, data: bytes, *, room: Room, user: Any, name: str = "file") -> Attachment:
    src = tmp_path / f"src-{name}"
    src.write_bytes(data)
    work = tmp_path / f"work-{name}"
    work.mkdir()
    return services.attachment_create(room_id=room.pk, uploader_id=user.pk, path=str(src), name=name, workdir=str(work))


def test_create_stores_served_copy_and_thumbnail(media: Path, tmp_path: Path, room: Room, alice: Any) -> None:
    """A photo becomes a row plus two files in the attachments storage: the clean copy and the thumbnail."""
    att = _upload(tmp_path, samplefiles.jpeg_with_gps(), room=room, user=alice, name="IMG.jpg")
    storage = attachment_storage()
    assert storage.exists(att.file) and storage.exists(att.thumbnail)
    assert att.file.startswith(f"{att.pk[:2]}/{att.pk}")
    assert storage.size(att.file) == att.size
    assert storage.size(att.thumbnail) == att.thumbnail_size > 0
    with storage.open(att.file) as fp:
        data = fp.read()
    assert not any(secret in data for secret in samplefiles.SECRETS)
    assert (media / att.file).is_file()
    assert selectors.attachment_dict(att) == {
        "id": att.pk,
        "name": "IMG.jpg",
        "content_type": "image/jpeg",
        "size": att.size,
        "url": f"/api/attachments/{att.pk}",
        "width": 200,
        "height": 300,
        "thumbnail_url": f"/api/attachments/{att.pk}/thumbnail",
        "thumbnail_width": 200,
        "thumbnail_height": 300,
    }


def test_file_attachment_has_no_image_fields(media: Path, tmp_path: Path, room: Room, alice: Any) -> None:
    """A PDF's A object has id, name, content_type, size and url only."""
    att = _upload(tmp_path, samplefiles.PDF, room=room, user=alice, name="report.pdf")
    assert set(selectors.attachment_dict(att)) == {"id", "name", "content_type", "size", "url"}
    assert att.thumbnail == ""


def test_unreachable_storage_keeps_nothing(settings: Any, tmp_path: Path, room: Room, alice: Any) -> None:
    """When the storage cannot be written, the upload is refused as unavailable and no row is left."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(blocker)},
        },
    }
    with pytest.raises(services.UploadRefused) as info:
        _upload(tmp_path, samplefiles.jpeg_with_gps(), room=room, user=alice)
    assert info.value.code == "unavailable"
    assert "nothing was kept" in info.value.message
    assert not Attachment.objects.exists()


def test_async_create_runs_the_picture_work_in_a_worker(media: Path, tmp_path: Path, room: Room, alice: Any) -> None:
    """The async service gives the same result, the image work done by a worker process."""
    src = tmp_path / "photo.heic"
    src.write_bytes(samplefiles.heic_with_gps())
    work = tmp_path / "work"
    work.mkdir()
    try:
        att = run_async(
            services.aattachment_create(
                room_id=room.pk, uploader_id=alice.pk, path=str(src), name="photo.heic", workdir=str(work)
            ),
            timeout=60,
        )
    finally:
        images.shutdown_pool()
    assert (att.name, att.content_type, att.width, att.height) == ("photo.jpg", "image/jpeg", 200, 300)
    assert Attachment.objects.get(pk=att.pk).file == att.file


def test_claim_link_and_replay_are_exactly_once(
    media: Path, tmp_path: Path, room: Room, alice: Any, make_user: Any
) -> None:
    """Only the uploader's unused uploads to that room can be claimed; a re-send re-claims; linking is idempotent."""
    bob = make_user("bob")
    other = services.room_create(name="Other", creator=alice)
    a1 = _upload(tmp_path, samplefiles.PDF, room=room, user=alice, name="a1.pdf")
    a2 = _upload(tmp_path, samplefiles.TEXT, room=room, user=alice, name="a2.txt")
    elsewhere = _upload(tmp_path, samplefiles.TEXT, room=other, user=alice, name="x.txt")
    bobs = _upload(tmp_path, samplefiles.TEXT, room=room, user=bob, name="b.txt")

    def claim(ids: list[str], token: str, user: Any = alice) -> None:
        run_async(services.aattachments_claim(ids=ids, room_id=room.pk, user_id=user.pk, token=token))

    for bad in ([elsewhere.pk], [bobs.pk], ["nope"], [], [a1.pk, a1.pk], [a1.pk] * 11):
        with pytest.raises(services.AttachmentsInvalid):
            claim(bad, "t0")
    # A refused claim of several ids changes none of them.
    with pytest.raises(services.AttachmentsInvalid):
        claim([a1.pk, bobs.pk], "t0")
    assert Attachment.objects.get(pk=a1.pk).claim == ""

    claim([a1.pk, a2.pk], "c1")
    claim([a1.pk, a2.pk], "c1")  # a re-send of the same message
    with pytest.raises(services.AttachmentsInvalid):
        claim([a1.pk], "c2")  # another message
    with pytest.raises(services.AttachmentsInvalid):
        claim([bobs.pk], "c1", user=alice)

    assert services.attachments_link(room_id=room.pk, seq=7, uploader_id=alice.pk, ids=[a1.pk, a2.pk]) == 2
    assert (
        services.attachments_link(room_id=room.pk, seq=7, uploader_id=alice.pk, ids=[a1.pk, a2.pk]) == 2
    )  # replayed batch
    assert (
        services.attachments_link(room_id=room.pk, seq=8, uploader_id=alice.pk, ids=[a1.pk]) == 0
    )  # never into a second message
    assert services.attachments_link(room_id=other.pk, seq=7, uploader_id=alice.pk, ids=[a1.pk]) == 0
    claim([a1.pk], "c1")  # the same message re-sent after it was stored: still fine
    by_seq = selectors.attachments_for_messages(room_id=room.pk, seqs=[7, 8])
    assert [a["id"] for a in by_seq[7]] == [a1.pk, a2.pk] and 8 not in by_seq


def test_orphans_are_deleted_with_their_files(
    media: Path, tmp_path: Path, room: Room, alice: Any, settings: Any
) -> None:
    """Unused uploads older than KAIWA_ATTACHMENT_ORPHAN_HOURS go (files first); used and recent ones stay."""
    settings.KAIWA_ATTACHMENT_ORPHAN_HOURS = 24
    old_unused = _upload(tmp_path, samplefiles.jpeg_with_gps(), room=room, user=alice, name="old.jpg")
    old_used = _upload(tmp_path, samplefiles.PDF, room=room, user=alice, name="used.pdf")
    old_claimed = _upload(tmp_path, samplefiles.PDF, room=room, user=alice, name="claimed.pdf")
    recent = _upload(tmp_path, samplefiles.TEXT, room=room, user=alice, name="new.txt")
    now = timezone.now()
    long_ago = now - timedelta(hours=25)
    Attachment.objects.filter(pk__in=[old_unused.pk, old_used.pk, old_claimed.pk]).update(created_at=long_ago)
    services.attachments_link(room_id=room.pk, seq=1, uploader_id=alice.pk, ids=[old_used.pk])
    Attachment.objects.filter(pk=old_claimed.pk).update(claim="1:x", claimed_at=now - timedelta(hours=1))

    assert services.attachment_delete_orphans(now=now) == 1
    storage = attachment_storage()
    assert not storage.exists(old_unused.file) and not storage.exists(old_unused.thumbnail)
    assert set(Attachment.objects.values_list("pk", flat=True)) == {old_used.pk, old_claimed.pk, recent.pk}
    # A claim whose message never arrived is released after the same time.
    assert services.attachment_delete_orphans(now=now + timedelta(hours=24)) == 2
    assert set(Attachment.objects.values_list("pk", flat=True)) == {old_used.pk}


def test_download_access_follows_the_room(media: Path, tmp_path: Path, alice: Any, make_user: Any) -> None:
    """An attachment of a private room is found only for its members; of a public room, for everyone."""
    bob = make_user("bob")
    private = services.room_create(name="Secret", private=True, creator=alice)
    public = services.room_create(name="Lobby", creator=alice)
    hidden = _upload(tmp_path, samplefiles.PDF, room=private, user=alice, name="p.pdf")
    shown = _upload(tmp_path, samplefiles.TEXT, room=public, user=alice, name="t.txt")

    def get(user_id: int | None, pk: str) -> Attachment | None:
        return run_async(selectors.aattachment_get_for_user_id(user_id=user_id, attachment_id=pk))

    assert get(alice.pk, hidden.pk) == hidden
    assert get(bob.pk, hidden.pk) is None
    assert get(None, hidden.pk) is None
    assert get(bob.pk, shown.pk) == shown
    services.room_member_add(room=private, user=bob)
    assert get(bob.pk, hidden.pk) == hidden


def test_room_attachment_bytes_counts_files_and_thumbnails(media: Path, tmp_path: Path, room: Room, alice: Any) -> None:
    """The admin's per-room storage total adds served copies and thumbnails."""
    a = _upload(tmp_path, samplefiles.jpeg_with_gps(), room=room, user=alice, name="a.jpg")
    b = _upload(tmp_path, samplefiles.PDF, room=room, user=alice, name="b.pdf")
    assert selectors.room_attachment_bytes(room_ids=[room.pk]) == {room.pk: a.size + a.thumbnail_size + b.size}


def _old_orphan(tmp_path: Path, room: Room, user: Any, name: str) -> Attachment:
    att = _upload(tmp_path, samplefiles.jpeg_with_gps(), room=room, user=user, name=name)
    Attachment.objects.filter(pk=att.pk).update(created_at=timezone.now() - timedelta(hours=25))
    return att


def test_management_command_counts_then_deletes(media: Path, tmp_path: Path, room: Room, alice: Any) -> None:
    """`manage.py attachmentorphans --dry-run` counts the orphans; without it, deletes them."""
    orphan = _old_orphan(tmp_path, room, alice, "o.jpg")
    _upload(tmp_path, samplefiles.TEXT, room=room, user=alice, name="fresh.txt")
    out = io.StringIO()
    call_command("attachmentorphans", "--dry-run", stdout=out)
    assert out.getvalue().startswith("1 unused uploads older than 24 hours")
    assert Attachment.objects.count() == 2
    out = io.StringIO()
    call_command("attachmentorphans", stdout=out)
    assert out.getvalue().startswith("Deleted 1 unused uploads")
    assert not Attachment.objects.filter(pk=orphan.pk).exists()
    assert not attachment_storage().exists(orphan.file)


def test_worker_deletes_orphans_periodically(
    media: Path, tmp_path: Path, room: Room, alice: Any, settings: Any
) -> None:
    """The persistence worker sweeps every KAIWA_ATTACHMENT_SWEEP_SECONDS; a failed sweep is retried later."""
    settings.KAIWA_ATTACHMENT_SWEEP_SECONDS = 0.2
    orphan = _old_orphan(tmp_path, room, alice, "o.jpg")

    async def main() -> None:
        client = make_async_client()
        worker = Worker(redis=client)
        worker.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        try:
            # An observation loop with a deadline: the sweep runs on the worker's own schedule.
            while await Attachment.objects.filter(pk=orphan.pk).aexists():
                assert loop.time() < deadline, "the worker did not delete the orphan within 30 s"
                await asyncio.sleep(0.05)
        finally:
            await worker.close()
            # Clients made on a pool do not close it with aclose(): disconnect both pools.
            assert worker._reader_client is not None
            await worker._reader_client.connection_pool.disconnect()
            await client.aclose()
            await client.connection_pool.disconnect()

    run_async(main(), timeout=60)
    assert not attachment_storage().exists(orphan.file)


def test_sweep_survives_a_storage_that_refuses(tmp_path: Path, room: Room, alice: Any, settings: Any) -> None:
    """A storage that cannot delete: the orphan stays, marked so no send can take it; a later sweep deletes it."""
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    orphan = _old_orphan(tmp_path, room, alice, "o.jpg")
    directory = (root / orphan.file).parent
    directory.chmod(0o500)
    try:
        if os.access(directory, os.W_OK):
            # root ignores directory permissions: make the directory a file's path instead.
            directory.chmod(0o700)
            moved = tmp_path / "moved"
            directory.rename(moved)
            directory.write_text("not a directory any more")
        sweep = OrphanSweep(interval=3600)
        assert run_async(sweep.run()) == 0
        assert Attachment.objects.get(pk=orphan.pk).claim == "orphan"
        with pytest.raises(services.AttachmentsInvalid):
            run_async(services.aattachments_claim(ids=[orphan.pk], room_id=room.pk, user_id=alice.pk, token="c"))
    finally:
        if directory.is_file():
            directory.unlink()
            (tmp_path / "moved").rename(directory)
        directory.chmod(0o700)
    assert run_async(sweep.run()) == 1
    assert not Attachment.objects.filter(pk=orphan.pk).exists()


# -- messages with attachments (send, the relay, persistence, history) -------------------


def _send(room: Room, user: Any, *, body: str, ids: list[str], client_id: str | None) -> tuple[int, list[Entry]]:
    """amessage_send on the suite's real Redis; returns the seq and what the room's stream holds."""

    async def main() -> tuple[int, list[Entry]]:
        assert redis_server.SERVER is not None
        client = aioredis.Redis.from_url(redis_server.SERVER.url)
        try:
            log = MessageLog(client, dedup_seconds=600, stream_keep=1000)
            result = await services.amessage_send(
                log=log,
                room_id=room.pk,
                slug=room.slug,
                user_id=user.pk,
                username=user.username,
                body=body,
                client_id=client_id,
                attachments=ids,
            )
            return result.seq, await log.read_range(room_id=room.pk, slug=room.slug, after=0)
        finally:
            await client.aclose()

    return run_async(main())


def test_send_with_attachments_relays_persists_and_lists_them_once(
    media: Path, tmp_path: Path, room: Room, alice: Any
) -> None:
    """A send with two uploads and an empty body: the stream entry and frame carry both A objects in order;
    persisting (twice, as a replayed batch) links them once; the history shows them."""
    photo = _upload(tmp_path, samplefiles.jpeg_with_gps(), room=room, user=alice, name="p.jpg")
    pdf = _upload(tmp_path, samplefiles.PDF, room=room, user=alice, name="r.pdf")
    seq, stream = _send(room, alice, body="", ids=[pdf.pk, photo.pk], client_id="c1")
    (entry,) = stream
    expected = [selectors.attachment_dict(pdf), selectors.attachment_dict(photo)]
    assert entry.seq == seq and list(entry.attachments) == expected
    assert entry.frame()["attachments"] == expected and entry.frame()["body"] == ""
    # The same message re-sent (same client_id): acked again, nothing new.
    again, stream = _send(room, alice, body="", ids=[pdf.pk, photo.pk], client_id="c1")
    assert again == seq and len(stream) == 1

    assert services.message_bulk_persist(entries=stream) == 1
    assert services.message_bulk_persist(entries=stream) == 1
    assert set(Attachment.objects.filter(message_seq=seq).values_list("pk", flat=True)) == {pdf.pk, photo.pk}
    messages, _ = selectors.message_page(room=room, before=None, limit=10)
    assert selectors.message_frame(messages[0], slug=room.slug)["attachments"] == [
        selectors.attachment_dict(photo),  # history lists them in upload order
        selectors.attachment_dict(pdf),
    ]


def test_send_refuses_attachments_that_are_not_the_senders_unused_uploads(
    media: Path, tmp_path: Path, room: Room, alice: Any, make_user: Any
) -> None:
    """Another user's upload, an upload used by another message, an unknown id: AttachmentsInvalid, nothing sent."""
    bob = make_user("bob")
    bobs = _upload(tmp_path, samplefiles.TEXT, room=room, user=bob, name="b.txt")
    mine = _upload(tmp_path, samplefiles.TEXT, room=room, user=alice, name="a.txt")
    for ids in ([bobs.pk], ["unknown"], [mine.pk, bobs.pk]):
        with pytest.raises(services.AttachmentsInvalid):
            _send(room, alice, body="look", ids=ids, client_id=None)
    _send(room, alice, body="first", ids=[mine.pk], client_id="m1")
    with pytest.raises(services.AttachmentsInvalid):
        _send(room, alice, body="second", ids=[mine.pk], client_id="m2")
    with pytest.raises(services.MessageBodyEmpty):
        _send(room, alice, body="  ", ids=[], client_id="m3")
    assert len(_send(room, alice, body="text only", ids=[], client_id="m4")[1]) == 2


def test_entries_written_before_attachments_existed_read_as_none() -> None:
    """A stream entry or event without the "att" field (written by an older server) has no attachments."""
    entry = events.entry_from_stream(
        1, "lobby", b"0-5", {b"uid": b"7", b"un": b"ann", b"body": b"hi", b"cid": b"", b"ts": b"1700000000000"}
    )
    assert entry.attachments == () and entry.frame()["attachments"] == []
