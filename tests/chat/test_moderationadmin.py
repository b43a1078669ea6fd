"""Moderation in the admin (protocol.md 7.4): the delete action goes through the room's log; the list stays cheap."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat import services
from chat.events import DELETE_OP, decode, entry_from_stream
from chat.logkeys import channel
from chat.messagelog import Entry, stream_key
from chat.models import Message, Room
from tests.chat.factories import add_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

MESSAGES = "/admin/chat/message/"


@pytest.fixture
def admin_client(client: Client, make_user: Any) -> Client:
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def lobby(make_user: Any) -> tuple[Room, Any, Any]:
    alice, bob = make_user("alice"), make_user("bob")
    room = services.room_create(name="Lobby", creator=alice)
    add_messages(room, 10, author=alice, body="alice says {seq}")
    add_messages(room, 5, author=bob, start=11, body="bob says {seq}")
    return room, alice, bob


def test_list_of_one_room_runs_no_min_over_the_table(admin_client: Client, lobby: Any) -> None:
    """Filtering one room (and one author) renders without any MIN()/MAX() aggregate: the date drill-down that
    walked most of the created_at index is gone; the rows show their state and a link into the room."""
    room, alice, _ = lobby
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(MESSAGES, {"room__id__exact": room.pk, "author": alice.pk})
    assert response.status_code == 200
    page = response.content.decode()
    aggregates = [
        q["sql"] for q in queries.captured_queries if "MIN(" in q["sql"].upper() or "MAX(" in q["sql"].upper()
    ]
    assert aggregates == []
    assert "alice says 10" in page and "bob says" not in page
    assert 'href="/rooms/lobby/?before=11#m10"' in page and f'href="?author={alice.pk}"' in page


def test_delete_action_appends_deletions_that_members_see_live(admin_client: Client, lobby: Any) -> None:
    """Staff select two messages and run "delete": each becomes a delete event in the room's log (published
    live to the room's channel), the worker's write empties the rows, and the detail page keeps the old body
    with who deleted it; running the action again deletes nothing twice."""
    room, _, bob = lobby
    chosen = list(Message.objects.filter(room=room, seq__in=[3, 12]).values_list("pk", flat=True))
    listener = redis.Redis.from_url(settings.REDIS_URL).pubsub()
    listener.subscribe(channel(room.pk))
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    response = admin_client.post(MESSAGES, {"action": "delete_messages", "_selected_action": chosen}, follow=True)
    assert "Deleted 2 message(s)" in response.content.decode()
    # Other room events (an epoch's start) may come first: read until both deletions or a silent 5 s.
    deletions: list[tuple[str, int | None, int]] = []
    while len(deletions) < 2:
        published = listener.get_message(timeout=5)
        assert published is not None, f"only {deletions} were published"
        event = decode(published["data"]) if published["type"] == "message" else None
        if isinstance(event, Entry):
            deletions.append((event.op, event.target, event.seq))
    listener.close()
    assert sorted(t or 0 for _, t, _ in deletions) == [3, 12] and sorted(s for *_, s in deletions) == [16, 17]
    assert {op for op, *_ in deletions} == {DELETE_OP}

    client = redis.Redis.from_url(settings.REDIS_URL)
    rows: list[Any] = client.xrange(stream_key(room.pk))  # type: ignore[assignment]
    client.close()
    services.message_bulk_persist(entries=[entry_from_stream(room.pk, None, i, f) for i, f in rows])
    deleted = Message.objects.get(room=room, seq=12)
    assert deleted.body == "" and deleted.deleted_at is not None
    detail = admin_client.get(f"{MESSAGES}{deleted.pk}/change/").content.decode()
    assert "bob says 12" in detail and "deleted" in detail

    again = admin_client.post(MESSAGES, {"action": "delete_messages", "_selected_action": chosen}, follow=True)
    assert "Deleted 0 message(s)" in again.content.decode()
    assert deleted.deleted_by is not None and deleted.deleted_by.username == "root" and bob.pk != deleted.deleted_by_id
