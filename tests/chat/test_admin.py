"""The Django admin for rooms and messages, rendered with a superuser."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from chat import services
from chat.admin import LargeTablePaginator
from chat.models import Membership, Message, Room
from tests.chat.factories import add_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

MESSAGES = "/admin/chat/message/"


@pytest.fixture
def admin_user(make_user):
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client(client: Client, admin_user) -> Client:
    client.force_login(admin_user)
    return client


@pytest.fixture
def rooms(admin_user, make_user):
    alice = make_user("alice")
    lobby = services.room_create(name="Lobby", creator=alice)
    secret = services.room_create(name="Secret", private=True, creator=alice, members=[admin_user])
    add_messages(lobby, 30, author=alice, body="hello lobby {seq}")
    add_messages(secret, 5, author=admin_user, body="psst {seq}")
    return lobby, secret


def html_of(response) -> str:
    return response.content.decode()


def full_counts(queries: list[dict[str, str]]) -> list[str]:
    """COUNT queries that are not bounded by a LIMIT subquery."""
    return [q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "LIMIT" not in q["sql"].upper()]


def test_admin_index_lists_chat_models(admin_client):
    """The admin index shows rooms and messages, with no "add" for messages."""
    page = html_of(admin_client.get("/admin/"))
    assert 'href="/admin/chat/room/"' in page and 'href="/admin/chat/message/"' in page
    assert 'href="/admin/chat/room/add/"' in page and 'href="/admin/chat/message/add/"' not in page


def test_admin_pages_carry_the_sites_name_and_icon(admin_client):
    """Admin pages say Kaiwa and link the site's icon, so the browser does not ask for a missing /favicon.ico."""
    page = html_of(admin_client.get(MESSAGES))
    assert "Kaiwa administration" in page and "| Kaiwa admin</title>" in page
    assert re.search(r'<link rel="icon" href="/static/chat/favicon\.svg"', page)


def test_staff_only(client, make_user):
    """Non-staff users are sent to the admin login."""
    client.force_login(make_user("bob"))
    response = client.get(MESSAGES)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


# -- rooms ----------------------------------------------------------------------------------


def test_room_changelist_search_and_filter(admin_client, rooms):
    """The room list renders, searches by name and filters by the private flag."""
    page = html_of(admin_client.get("/admin/chat/room/"))
    assert "Lobby" in page and "Secret" in page
    page = html_of(admin_client.get("/admin/chat/room/", {"q": "lob"}))
    assert "Lobby" in page and ">Secret<" not in page
    page = html_of(admin_client.get("/admin/chat/room/", {"private__exact": "1"}))
    assert ">Secret<" in page and ">Lobby<" not in page


def test_room_change_page_has_member_inline_with_autocomplete(admin_client, rooms):
    """A room's page lists its members inline, picked with an autocomplete widget."""
    _, secret = rooms
    response = admin_client.get(f"/admin/chat/room/{secret.pk}/change/")
    assert response.status_code == 200
    page = html_of(response)
    assert "members (private rooms only)" in page.lower()
    assert re.search(r'<select name="memberships-0-user"[^>]*class="admin-autocomplete"', page)
    assert "root" in page and "alice" in page


def test_room_add_with_members_through_the_admin(admin_client, admin_user):
    """Staff can create a private room with members in the admin."""
    response = admin_client.post(
        "/admin/chat/room/add/",
        {
            "name": "Staff room",
            "slug": "staff-room",
            "private": "on",
            "created_by": str(admin_user.pk),
            "memberships-TOTAL_FORMS": "1",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
            "memberships-0-user": str(admin_user.pk),
        },
    )
    assert response.status_code == 302, html_of(response)
    room = Room.objects.get(slug="staff-room")
    assert list(room.members.all()) == [admin_user]


def test_room_user_autocomplete_answers(admin_client, rooms):
    """The member autocomplete finds users by name."""
    response = admin_client.get(
        "/admin/autocomplete/",
        {"term": "ali", "app_label": "chat", "model_name": "membership", "field_name": "user"},
    )
    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["alice"]


def test_room_delete_confirmation_summarises_instead_of_listing_messages(admin_client, rooms):
    """Deleting a room shows counts, not one line per message, and deletes its history."""
    lobby, _ = rooms
    response = admin_client.get(f"/admin/chat/room/{lobby.pk}/delete/")
    assert response.status_code == 200
    page = html_of(response)
    assert "hello lobby" not in page
    assert re.search(r"Messages: 30", page, re.IGNORECASE)
    response = admin_client.post(f"/admin/chat/room/{lobby.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Room.objects.filter(pk=lobby.pk).exists()
    assert not Message.objects.filter(room_id=lobby.pk).exists()


# -- messages ---------------------------------------------------------------------------------


def test_message_changelist_columns(admin_client, rooms):
    """The message list shows seq, room, author, time and an excerpt of the body."""
    response = admin_client.get(MESSAGES)
    assert response.status_code == 200
    page = html_of(response)
    for header in ("Seq", "Room", "Author", "Created at", "Message"):
        assert f">{header}<" in page or f">{header}</a>" in page
    assert "hello lobby 30" in page and "psst 5" in page
    assert "35 messages" in page


def test_message_excerpt_is_short(admin_client, admin_user):
    """Long bodies are cut to an excerpt in the list."""
    room = services.room_create(name="Long", creator=admin_user)
    add_messages(room, 1, author=admin_user, body="word " * 500)
    page = html_of(admin_client.get(MESSAGES))
    assert "word " * 20 not in page
    assert "…" in page


def test_message_search_by_body_and_author(admin_client, rooms):
    """Search matches message bodies and author usernames."""
    page = html_of(admin_client.get(MESSAGES, {"q": "psst"}))
    assert "psst 1" in page and "hello lobby" not in page
    page = html_of(admin_client.get(MESSAGES, {"q": "alice"}))
    assert "hello lobby 1<" in page and "psst" not in page


def test_message_filters_by_room_and_date(admin_client, rooms):
    """The list filters by room and by a date range (the "created at" filter; there is no date hierarchy)."""
    _, secret = rooms
    page = html_of(admin_client.get(MESSAGES, {"room__id__exact": str(secret.pk)}))
    assert "psst 1" in page and "hello lobby" not in page
    november = {"created_at__gte": "2026-11-01 00:00:00+00:00", "created_at__lt": "2026-12-01 00:00:00+00:00"}
    page = html_of(admin_client.get(MESSAGES, november))
    assert "psst 1" in page and "Past 7 days" in page
    year_2025 = {"created_at__gte": "2025-01-01 00:00:00+00:00", "created_at__lt": "2026-01-01 00:00:00+00:00"}
    page = html_of(admin_client.get(MESSAGES, year_2025))
    assert "0 messages" in page


def test_message_change_page_is_read_only(admin_client, rooms):
    """A message's page shows its fields read-only, with no save or delete."""
    message = Message.objects.get(room=rooms[0], seq=3)
    response = admin_client.get(f"/admin/chat/message/{message.pk}/change/")
    assert response.status_code == 200
    page = html_of(response)
    assert "hello lobby 3" in page
    assert "<textarea" not in page and 'name="_save"' not in page and "deletelink" not in page
    response = admin_client.post(f"/admin/chat/message/{message.pk}/change/", {"body": "edited"})
    assert response.status_code == 403
    message.refresh_from_db()
    assert message.body == "hello lobby 3"


def test_messages_cannot_be_added_or_deleted(admin_client, rooms):
    """The admin refuses to add or delete single messages."""
    message = Message.objects.get(room=rooms[0], seq=3)
    assert admin_client.get("/admin/chat/message/add/").status_code == 403
    assert admin_client.post(f"/admin/chat/message/{message.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Message.objects.filter(pk=message.pk).exists()


# -- large tables -------------------------------------------------------------------------------

BIG = 20_000


@pytest.fixture
def big_room(admin_user):
    # A second room, so that the room filter has a choice to offer.
    add_messages(services.room_create(name="Quiet", creator=admin_user), 3, author=admin_user)
    room = services.room_create(name="Busy", creator=admin_user)
    add_messages(room, BIG, author=admin_user)
    if connection.vendor == "postgresql":
        # What autovacuum does on a real server: gives the planner (and the paginator) a row estimate.
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE chat_message")
    return room


def test_big_changelist_never_runs_a_full_count(admin_client, big_room):
    """With 20,000 messages the list page runs a bounded number of queries and no unbounded COUNT."""
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(MESSAGES)
    assert response.status_code == 200
    assert full_counts(ctx.captured_queries) == []
    assert len(ctx.captured_queries) <= 15
    # No date drill-down: no DISTINCT over every row, and no MIN()/MAX() walking an index.
    assert not [q["sql"] for q in ctx.captured_queries if "DISTINCT" in q["sql"].upper()]
    assert not [q["sql"] for q in ctx.captured_queries if "MIN(" in q["sql"].upper() or 'created_at")' in q["sql"]]
    page = html_of(response)
    assert f"about {BIG + 3} messages" in page
    assert "message 20000" in page and "message 19901" in page and "message 19900" not in page


def test_big_changelist_filtered_is_bounded(admin_client, big_room):
    """Filtered by room, the count stops at the cap and the page says "more than"."""
    with CaptureQueriesContext(connection) as ctx:
        response = admin_client.get(MESSAGES, {"room__id__exact": str(big_room.pk)})
    assert response.status_code == 200
    assert full_counts(ctx.captured_queries) == []
    assert f"more than {LargeTablePaginator.count_cap} messages" in html_of(response)


def test_big_changelist_later_page_and_search(admin_client, big_room):
    """Paging and searching a big list work and stay free of unbounded counts."""
    with CaptureQueriesContext(connection) as ctx:
        page2 = admin_client.get(MESSAGES, {"p": "2"})
        found = admin_client.get(MESSAGES, {"q": "message 12345"})
        facets = admin_client.get(MESSAGES, {"_facets": "1"})
    assert full_counts(ctx.captured_queries) == []
    assert "message 19900" in html_of(page2)
    assert "message 12345" in html_of(found) and "1 message" in html_of(found)
    assert facets.status_code == 200


def test_search_reads_the_table_once_and_pages_in_order(admin_client, big_room):
    """A search evaluates its LIKE once per page load, and its pages come in list order."""
    with CaptureQueriesContext(connection) as ctx:
        first = admin_client.get(MESSAGES, {"q": "message 1999"})
    # The one scan; the page and the date bounds are then read by primary key.
    likes = [q["sql"] for q in ctx.captured_queries if "LIKE" in q["sql"].upper() and '"id" IN (' not in q["sql"]]
    assert len(likes) == 1, likes
    page = html_of(first)
    # "message 19990" ... "message 19999", "message 11999" and "message 1999": 12 matches, newest first.
    assert "12 messages" in page
    shown = [int(n) for n in re.findall(r">message (\d+)<", page)]
    assert shown == [*range(19999, 19989, -1), 11999, 1999]
    second = html_of(admin_client.get(MESSAGES, {"q": "message 15", "p": "2"}))
    matching = sorted((n for n in range(1, BIG + 1) if "15" in str(n)), reverse=True)
    assert f"{len(matching)} messages" in second
    assert [int(n) for n in re.findall(r">message (\d+)<", second)] == matching[100:200]


def test_date_filter_stays_cheap(admin_client, big_room):
    """The date ranges of the "created at" filter, alone and within one room, list messages without DISTINCT
    scans, full counts, or the MIN()/MAX() the date hierarchy ran over the filtered rows."""
    november = {"created_at__gte": "2026-11-01 00:00:00+00:00", "created_at__lt": "2026-12-01 00:00:00+00:00"}
    steps = [
        (november, "message 20000"),
        ({**november, "room__id__exact": str(big_room.pk)}, "message 20000"),
    ]
    for params, expected in steps:
        with CaptureQueriesContext(connection) as ctx:
            response = admin_client.get(MESSAGES, params)
        assert response.status_code == 200
        assert expected in html_of(response)
        assert full_counts(ctx.captured_queries) == []
        assert not [q["sql"] for q in ctx.captured_queries if "DISTINCT" in q["sql"].upper()]
        assert not [q["sql"] for q in ctx.captured_queries if "MIN(" in q["sql"].upper()]


def test_date_hierarchy_periods_between_first_and_last():
    """The cheap hierarchy offers every year, month or day between the oldest and newest row."""
    from datetime import UTC, datetime

    from chat.templatetags.chat_admin import _periods

    first, last = datetime(2025, 11, 30, 23, 0, tzinfo=UTC), datetime(2026, 2, 1, 1, 0, tzinfo=UTC)
    assert [p.year for p in _periods(first, last, "year")] == [2025, 2026]
    assert [(p.year, p.month) for p in _periods(first, last, "month")] == [(2025, 11), (2025, 12), (2026, 1), (2026, 2)]
    days = _periods(datetime(2026, 2, 27, tzinfo=UTC), datetime(2026, 3, 2, 5, tzinfo=UTC), "day")
    assert [(p.month, p.day) for p in days] == [(2, 27), (2, 28), (3, 1), (3, 2)]


def test_paginator_small_lists_are_exact(admin_user):
    """Under the cap the paginator's count is exact and not flagged as an estimate."""
    room = services.room_create(name="Small", creator=admin_user)
    add_messages(room, 7, author=admin_user)
    paginator = LargeTablePaginator(Message.objects.order_by("-pk"), 3)
    assert paginator.count == 7 and paginator.num_pages == 3
    assert not paginator.count_is_estimate and not paginator.count_is_lower_bound
    assert LargeTablePaginator([1, 2, 3], 2).count == 3
    assert Membership.objects.count() == 0
