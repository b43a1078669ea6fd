"""Edits and deletions in the database: the worker applies each event once, in order; the purge (protocol.md 7.4)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from chat import messageedits, services
from chat.epochmodels import UnstoredMessage
from chat.events import DELETE_OP, EDIT_OP, Entry, ts_ms_of
from chat.messagelog import TargetGone
from chat.models import Attachment, Message, MessageKind, MessageVersion, Room

pytestmark = pytest.mark.django_db

T0 = ts_ms_of(timezone.now())


def entry(room: Room, seq: int, user: Any, body: str = "", **extra: Any) -> Entry:
    return Entry(
        room_id=room.pk, seq=seq, ts_ms=T0 + seq, user_id=user.pk, username=user.username, body=body,
        client_id=f"c{seq}", **extra,
    )  # fmt: skip


@pytest.fixture
def room(db: Any) -> Room:
    return Room.objects.create(slug="lobby", name="Lobby")


def test_mention_names() -> None:
    """@names are read as Django usernames; an e-mail address is not a mention; trailing punctuation is tried off."""
    assert messageedits.mention_names("hi @bob, @alice. mail me@example.com @bob") == ["bob", "alice.", "alice"]
    assert messageedits.mention_names("no mentions here") == []


def test_batch_applies_edit_then_delete_once(room: Room, alice: Any, make_user: Any) -> None:
    """One batch with a message, its edit and its deletion: the row ends deleted and empty, both earlier bodies
    are kept as versions, the edit event's row is blanked; replaying the batch changes nothing."""
    bob = make_user("bob")
    batch = [
        entry(room, 1, alice, "helo", reply_to=None, mentions=(bob.pk,)),
        entry(room, 2, alice, "hello", op=EDIT_OP, target=1),
        entry(room, 3, bob, op=DELETE_OP, target=1),
    ]
    for _ in range(2):
        assert services.message_bulk_persist(entries=batch) == 3
    row = Message.objects.get(room=room, seq=1)
    assert row.body == "" and row.deleted_at is not None and row.deleted_by_id == bob.pk and row.version_seq == 3
    assert row.edited_at is not None and row.mentions == [bob.pk]
    events = dict(Message.objects.filter(room=room, seq__gt=1).values_list("seq", "kind"))
    assert events == {2: MessageKind.EDIT, 3: MessageKind.DELETE}
    assert Message.objects.get(room=room, seq=2).body == ""
    versions = list(MessageVersion.objects.values_list("event_seq", "body", "deletion", "replaced_by_id"))
    assert versions == [(2, "helo", False, alice.pk), (3, "hello", True, bob.pk)]
    assert not UnstoredMessage.objects.exists()  # the replay found the same messages, not conflicts


def test_replaying_a_message_after_its_edit_is_not_a_conflict(room: Room, alice: Any) -> None:
    """A batch replayed after a later batch edited its message (a worker crashed before acknowledging)
    finds the row changed by the edit: that is the same message, not an acked message left unstored."""
    first = [entry(room, 1, alice, "helo")]
    services.message_bulk_persist(entries=first)
    services.message_bulk_persist(entries=[entry(room, 2, alice, "hello", op=EDIT_OP, target=1)])
    services.message_bulk_persist(entries=first)
    assert Message.objects.get(room=room, seq=1).body == "hello"
    assert not UnstoredMessage.objects.exists()


def test_event_stored_before_its_target_is_applied_when_the_target_arrives(room: Room, alice: Any) -> None:
    """An edit claimed from a crashed worker can be stored before its message: the message's own batch applies it."""
    services.message_bulk_persist(entries=[entry(room, 2, alice, "fixed", op=EDIT_OP, target=1)])
    assert not Message.objects.filter(room=room, seq=1).exists()
    services.message_bulk_persist(entries=[entry(room, 1, alice, "fxied")])
    row = Message.objects.get(room=room, seq=1)
    assert row.body == "fixed" and row.version_seq == 2
    assert list(MessageVersion.objects.values_list("body", flat=True)) == ["fxied"]


def test_events_stored_earlier_are_found_by_room_and_exact_target(
    room: Room, alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events stored before their targets are found for every target of a batch, room by room, in chunks of
    rooms: the one aimed at the middle of the batch's seqs is applied, the one aimed at a seq the batch does not
    hold waits for that message, and another room's event for the same seq number touches only its own room."""
    monkeypatch.setattr(messageedits, "_ROOMS_PER_LOOKUP", 1)
    other = Room.objects.create(slug="other", name="Other")
    services.message_bulk_persist(
        entries=[
            entry(room, 6, alice, "three!", op=EDIT_OP, target=3),
            entry(room, 7, alice, "four!", op=EDIT_OP, target=4),
            entry(other, 7, alice, "five!", op=EDIT_OP, target=5),
        ]
    )
    services.message_bulk_persist(
        entries=[
            entry(room, 1, alice, "one"),
            entry(room, 3, alice, "thre"),
            entry(room, 5, alice, "five"),
            entry(other, 5, alice, "fiev"),
        ]
    )
    stored = Message.objects.filter(kind=MessageKind.MESSAGE).order_by("room__slug", "seq")
    assert [(m.room.slug, m.seq, m.body) for m in stored] == [
        ("lobby", 1, "one"), ("lobby", 3, "three!"), ("lobby", 5, "five"), ("other", 5, "five!"),
    ]  # fmt: skip
    services.message_bulk_persist(entries=[entry(room, 4, alice, "for")])
    assert Message.objects.get(room=room, seq=4).body == "four!"


def test_edit_after_deletion_changes_nothing(room: Room, alice: Any) -> None:
    """An edit that raced the deletion (never accepted by the append script, but defended here too) is ignored."""
    services.message_bulk_persist(
        entries=[
            entry(room, 1, alice, "x"),
            entry(room, 2, alice, op=DELETE_OP, target=1),
            entry(room, 3, alice, "back", op=EDIT_OP, target=1),
        ]
    )
    row = Message.objects.get(room=room, seq=1)
    assert row.body == "" and row.deleted_at is not None and row.version_seq == 2


def test_purge_removes_bodies_and_attachments_after_the_retention(room: Room, alice: Any, settings: Any) -> None:
    """Past KAIWA_DELETED_RETENTION_DAYS the kept versions and attachments of a deleted message go; the row stays
    with who deleted it and when; a deletion within the retention and an edited message keep theirs."""
    settings.KAIWA_DELETED_RETENTION_DAYS = 30
    services.message_bulk_persist(
        entries=[
            entry(room, 1, alice, "old"),
            entry(room, 2, alice, "recent"),
            entry(room, 3, alice, "kept"),
            entry(room, 4, alice, op=DELETE_OP, target=1),
            entry(room, 5, alice, op=DELETE_OP, target=2),
            entry(room, 6, alice, "kept!", op=EDIT_OP, target=3),
        ]
    )
    Attachment.objects.create(
        room=room, uploader=alice, name="a.txt", content_type="text/plain", size=1, file="a", message_seq=1
    )
    MessageVersion.objects.filter(event_seq=4).update(replaced_at=timezone.now() - timedelta(days=31))
    assert services.message_purge_deleted() == 1
    assert list(MessageVersion.objects.order_by("event_seq").values_list("event_seq", flat=True)) == [5, 6]
    assert not Attachment.objects.exists()
    row = Message.objects.get(room=room, seq=1)
    assert row.deleted_at is not None and row.deleted_by_id == alice.pk
    assert services.message_purge_deleted() == 0


async def _guard_script(log: Any) -> list[Any]:
    """Edits, deletions and replies against the append script's guard; what each answered, and a range read."""
    out: list[Any] = []

    async def append(token: str, **extra: Any) -> None:
        try:
            result = await log.append(
                room_id=1, slug="lobby", user_id=7, username="ann", body=f"body {token}", client_id=token,
                token=token, floor=0, **extra,
            )  # fmt: skip
        except TargetGone as exc:
            out.append(("gone", exc.seq))
        else:
            out.append((result.seq, result.duplicate))

    await append("m1")
    await append("m2", reply_to=1, mentions=(7,))
    await append("e1", op=EDIT_OP, target=1)
    await append("d1", op=DELETE_OP, target=1)
    await append("d1", op=DELETE_OP, target=1)  # the same client_id: the original, not a refusal
    await append("d2", op=DELETE_OP, target=1)  # a second deletion
    await append("e2", op=EDIT_OP, target=1)  # an edit of a deleted message
    await append("r1", reply_to=1)  # a reply to it
    entries = await log.read_range(room_id=1, slug="lobby", after=0)
    out.append([(e.seq, e.op, e.target, e.reply_to, e.mentions, e.body, e.deleted) for e in entries])
    return out


def test_the_guard_answers_alike_on_redis_and_in_memory() -> None:
    """On Redis and in memory: a deletion takes its message, so a second deletion, an edit and a reply of it
    are refused without a seq (a re-send of the deletion acks it again), and reads empty it and its edit."""
    import asyncio

    import redis.asyncio as aioredis

    from chat import epochs
    from chat.memorybroker import MemoryBroker
    from chat.memorylog import MemoryLog
    from chat.messagelog import MessageLog
    from tests import redis_server

    async def on_redis() -> list[Any]:
        assert redis_server.SERVER is not None
        client = aioredis.Redis.from_url(redis_server.SERVER.url)
        try:
            log = MessageLog(client, dedup_seconds=600, stream_keep=100, epoch_store=epochs.MemoryEpochs())
            return await _guard_script(log)
        finally:
            await client.aclose()

    redis_answers = asyncio.run(asyncio.wait_for(on_redis(), 30))
    memory_answers = asyncio.run(asyncio.wait_for(_guard_script(MemoryLog(MemoryBroker(), dedup_seconds=600)), 30))
    assert redis_answers == memory_answers
    assert redis_answers[:8] == [
        (1, False),
        (2, False),
        (3, False),
        (4, False),
        (4, True),
        ("gone", 1),
        ("gone", 1),
        ("gone", 1),
    ]
    assert redis_answers[8] == [
        (1, "", None, None, (), "", True),
        (2, "", None, 1, (7,), "body m2", False),
        (3, EDIT_OP, 1, None, (), "", False),
        (4, DELETE_OP, 1, None, (), "body d1", False),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_deleted_messages_attachments_are_not_served(room: Room, alice: Any) -> None:
    """The download routes' room check (selectors.aattachment_get_for_user_id) finds no attachment of a deleted
    message, and the history shows it without attachments, while the admin's rows keep them until the purge."""
    import asyncio

    from chat import selectors

    services.message_bulk_persist(entries=[entry(room, 1, alice, "photo"), entry(room, 2, alice, "kept")])
    for seq in (1, 2):
        Attachment.objects.create(
            id=f"a{seq}", room=room, uploader=alice, name="a.txt", content_type="text/plain", size=1, file=f"f{seq}",
            message_seq=seq,
        )  # fmt: skip

    def served(attachment_id: str) -> bool:
        found = selectors.aattachment_get_for_user_id(user_id=alice.pk, attachment_id=attachment_id)
        return asyncio.run(asyncio.wait_for(found, 10)) is not None

    assert served("a1") and served("a2")
    services.message_bulk_persist(entries=[entry(room, 3, alice, op=DELETE_OP, target=1)])
    assert not served("a1") and served("a2")
    page, _ = selectors.message_page(room=room, before=None, limit=10)
    frames = {m.seq: selectors.message_frame(m, slug="lobby") for m in page}
    assert frames[1]["attachments"] == [] and frames[1]["deleted"] is True
    assert [a["id"] for a in frames[2]["attachments"]] == ["a2"]
    assert Attachment.objects.filter(pk="a1").exists()
