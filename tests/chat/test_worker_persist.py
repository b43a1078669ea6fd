"""``services.message_bulk_persist``: the one write the persistence worker makes per batch."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from django.conf import settings
from django.db import OperationalError

from chat import services
from chat.messagelog import Entry
from chat.models import Message, Room, UnstoredMessage
from tests.conftest import database_url

pytestmark = pytest.mark.django_db

TS = 1_767_225_600_123  # 2026-01-01T00:00:00.123Z


def entry(room: Room, seq: int, *, user_id: int, username: str = "ann", body: str = "hi", cid: str | None = None):
    return Entry(
        room_id=room.pk, room=room.slug, seq=seq, ts_ms=TS + seq, user_id=user_id,
        username=username, body=body, client_id=cid,
    )  # fmt: skip


def test_writes_rows_with_the_log_time(make_user):
    """Each entry becomes one row; created_at is the time Redis accepted it, to the millisecond."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    written = services.message_bulk_persist(
        entries=[entry(room, 1, user_id=ann.pk, cid="c-1"), entry(room, 2, user_id=ann.pk)]
    )
    assert written == 2
    first = Message.objects.get(room=room, seq=1)
    assert (first.author_id, first.author_username, first.body, first.client_id) == (ann.pk, "ann", "hi", "c-1")
    assert first.created_at == datetime(2026, 1, 1, 0, 0, 0, 124000, tzinfo=UTC)
    assert first.persisted_at > first.created_at
    assert Message.objects.get(room=room, seq=2).client_id == ""


def test_replaying_a_batch_writes_nothing_twice(make_user):
    """Entries already stored (a worker died after the commit, before XACK) are left alone on replay."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    services.message_bulk_persist(entries=[entry(room, seq, user_id=ann.pk, body=f"m{seq}") for seq in (1, 2)])
    services.message_bulk_persist(entries=[entry(room, seq, user_id=ann.pk, body=f"m{seq}") for seq in (1, 2, 3)])
    assert list(Message.objects.filter(room=room).values_list("seq", "body")) == [(1, "m1"), (2, "m2"), (3, "m3")]
    assert not UnstoredMessage.objects.exists()  # the same message again is no conflict


def test_a_batch_larger_than_one_statement(make_user):
    """A big batch (more rows than one INSERT may carry parameters for) is stored whole, and replays cleanly."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    batch = [entry(room, seq, user_id=ann.pk, body=f"b{seq}") for seq in range(1, 1201)]
    assert services.message_bulk_persist(entries=batch[:700]) == 700
    assert services.message_bulk_persist(entries=batch) == 1200
    rows = list(Message.objects.filter(room=room).order_by("seq").values_list("seq", "body"))
    assert rows == [(seq, f"b{seq}") for seq in range(1, 1201)]


def test_deleted_author_and_deleted_room(make_user):
    """A deleted author leaves author None and the username; a deleted room's entries are skipped."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    gone = Room.objects.create(slug="gone", name="Gone")
    gone_entry = entry(gone, 1, user_id=ann.pk)
    gone.delete()
    written = services.message_bulk_persist(entries=[entry(room, 1, user_id=999_999, username="bob"), gone_entry])
    assert written == 1
    row = Message.objects.get()
    assert (row.room_id, row.author_id, row.author_username) == (room.pk, None, "bob")


def test_a_nul_character_does_not_block_the_queue(make_user):
    """PostgreSQL text cannot hold NUL: it is stored as U+FFFD instead of failing the whole batch."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    services.message_bulk_persist(entries=[entry(room, 1, user_id=ann.pk, body="a\x00b")])
    assert Message.objects.get().body == "a\ufffdb"


def test_empty_batch():
    """An empty batch touches nothing."""
    assert services.message_bulk_persist(entries=[]) == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"),
    reason="statement_timeout is PostgreSQL's; on SQLite the busy timeout bounds a lock wait (test_worker outage test)",
)
def test_statement_timeout_bounds_a_lock_wait(make_user):
    """On PostgreSQL a batch stuck behind a lock fails after ``statement_timeout_ms`` instead of hanging."""
    ann = make_user("ann")
    room = Room.objects.create(slug="lobby", name="Lobby")
    with psycopg.connect(database_url()) as other:
        other.execute("LOCK TABLE chat_message IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(OperationalError, match="statement timeout"):
            services.message_bulk_persist(entries=[entry(room, 1, user_id=ann.pk)], statement_timeout_ms=300)
        other.rollback()
    assert services.message_bulk_persist(entries=[entry(room, 1, user_id=ann.pk)], statement_timeout_ms=300) == 1
