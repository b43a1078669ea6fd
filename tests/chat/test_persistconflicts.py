"""``chat.persistconflicts``: the worker's insert never drops an acked message silently (protocol.md 7.1)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import sys

import pytest

from chat import persistconflicts, services
from chat.messagelog import Entry
from chat.models import Message, Room, RoomEpoch, UnstoredMessage
from tests.conftest import ROOT, server_env

pytestmark = pytest.mark.django_db

TS = 1_767_225_600_123


def entry(room: Room, seq: int, *, user_id: int, body: str = "hi", cid: str | None = None, ts: int = TS) -> Entry:
    return Entry(
        room_id=room.pk, room=room.slug, seq=seq, ts_ms=ts + seq, user_id=user_id,
        username="ann", body=body, client_id=cid,
    )  # fmt: skip


def test_another_message_at_a_stored_seq_is_kept_logged_and_counted(make_user, caplog):
    """A different message for a stored (room, seq) leaves the stored one alone and is kept, logged, counted."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    services.message_bulk_persist(entries=[entry(room, 1, user_id=ann.pk, body="stored")])
    before = persistconflicts.recorded_count()
    with caplog.at_level(logging.ERROR, logger="kaiwa.worker"):
        services.message_bulk_persist(
            entries=[entry(room, 1, user_id=ann.pk, body="later", ts=TS + 5000), entry(room, 2, user_id=ann.pk)]
        )
    assert list(Message.objects.filter(room=room).values_list("seq", "body")) == [(1, "stored"), (2, "hi")]
    kept = UnstoredMessage.objects.get()
    assert (kept.room_id, kept.seq, kept.body) == (room.pk, 1, "later")
    assert "seq 1 already holds another message" in kept.reason
    assert json.loads(kept.event)["body"] == "later"
    assert persistconflicts.recorded_count() == before + 1
    assert any(r.levelno == logging.ERROR and f"room {room.pk} seq 1" in r.getMessage() for r in caplog.records)


def test_a_client_id_stored_under_another_seq_is_a_conflict(make_user):
    """A second message with a client_id the database holds for that sender and room is kept, not stored."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    services.message_bulk_persist(entries=[entry(room, 1, user_id=ann.pk, cid="c-1")])
    services.message_bulk_persist(entries=[entry(room, 7, user_id=ann.pk, cid="c-1")])
    assert list(Message.objects.filter(room=room).values_list("seq", flat=True)) == [1]
    kept = UnstoredMessage.objects.get()
    assert kept.seq == 7
    assert "client_id 'c-1' is already stored as seq 1" in kept.reason


def test_a_replayed_conflict_is_recorded_once(make_user):
    """Replaying a batch that held a conflict (the worker died before acknowledging it) records it once."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    services.message_bulk_persist(entries=[entry(room, 1, user_id=ann.pk, body="stored")])
    batch = [entry(room, 1, user_id=ann.pk, body="other", ts=TS + 9)]
    services.message_bulk_persist(entries=batch)
    services.message_bulk_persist(entries=batch)
    assert UnstoredMessage.objects.count() == 1


def test_the_same_client_id_from_two_users_is_no_conflict(make_user):
    """The dedup constraint is per sender: two users may pick the same client_id in one room."""
    ann, bob = make_user("ann"), make_user("bob")
    room = Room.objects.create(slug="lobby", name="Lobby")
    services.message_bulk_persist(
        entries=[entry(room, 1, user_id=ann.pk, cid="x"), entry(room, 2, user_id=bob.pk, cid="x")]
    )
    assert Message.objects.filter(room=room).count() == 2
    assert not UnstoredMessage.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_chatworker_status_lists_the_kept_messages(make_user):
    """``manage.py chatworker --status`` lists every acked message kept in UnstoredMessage, with room, seq and why."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    services.message_bulk_persist(entries=[entry(room, 3, user_id=ann.pk, body="stored")])
    services.message_bulk_persist(entries=[entry(room, 3, user_id=ann.pk, body="other", ts=TS + 1)])
    done = subprocess.run(
        [sys.executable, "manage.py", "chatworker", "--status"],
        cwd=ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "unstored: 1 acked messages could not be stored without a conflict" in done.stdout
    assert re.search(
        rf"^  room {room.pk} seq 3 epoch - by 'ann' at .*: seq 3 already holds another message", done.stdout, re.M
    )


def test_entries_of_an_epoch_this_database_never_issued_are_kept_not_stored(make_user):
    """An entry from a Redis state of another database (its epoch has no RoomEpoch row here) is kept in
    UnstoredMessage instead of taking one of this history's seqs; issued and pre-epoch entries pass."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    RoomEpoch.objects.create(room=room, epoch="ours", base_seq=0)
    batch = [
        dataclasses.replace(entry(room, 1, user_id=ann.pk), epoch="ours"),
        dataclasses.replace(entry(room, 2, user_id=ann.pk), epoch="theirs"),
        entry(room, 3, user_id=ann.pk),  # written before epochs existed
    ]
    own = persistconflicts.keep_foreign_epochs(batch)
    assert [e.seq for e in own] == [1, 3]
    services.message_bulk_persist(entries=own)
    assert list(Message.objects.filter(room=room).values_list("seq", flat=True)) == [1, 3]
    kept = UnstoredMessage.objects.get()
    assert (kept.seq, kept.epoch) == (2, "theirs") and "not issued by this database" in kept.reason
    assert persistconflicts.keep_foreign_epochs(batch[1:2]) == []  # a replay records it once
    assert UnstoredMessage.objects.count() == 1
