"""chat.selectors: room visibility, history pages, the DB resume range, max seq, frames."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import AnonymousUser

from chat import selectors, services
from chat.messagelog import Entry, format_ts
from chat.models import Message
from tests.chat.conftest import run_async
from tests.chat.factories import add_messages

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def people(make_user):
    return make_user("alice"), make_user("bob"), make_user("carol")


def test_public_room_is_visible_to_everyone(people):
    """A public room is found for any logged-in user."""
    alice, bob, _ = people
    room = services.room_create(name="Lobby", creator=alice)
    assert selectors.room_get_for_user(user=bob, slug="lobby") == room


def test_private_room_is_hidden_from_non_members_like_an_unknown_room(people):
    """A private room gives None to non-members, exactly as an unknown slug does."""
    alice, bob, carol = people
    services.room_create(name="Secret", private=True, creator=alice, members=[bob])
    assert selectors.room_get_for_user(user=alice, slug="secret") is not None
    assert selectors.room_get_for_user(user=bob, slug="secret") is not None
    assert selectors.room_get_for_user(user=carol, slug="secret") is None
    assert selectors.room_get_for_user(user=carol, slug="no-such-room") is None


def test_anonymous_user_sees_only_public_rooms(people):
    """An anonymous user never sees a private room."""
    alice, _, _ = people
    services.room_create(name="Lobby", creator=alice)
    services.room_create(name="Secret", private=True, creator=alice)
    anon = AnonymousUser()
    assert selectors.room_get_for_user(user=anon, slug="secret") is None
    assert [r.slug for r in selectors.room_list_for_user(user=anon)] == ["lobby"]


@pytest.mark.django_db(transaction=True)
def test_async_room_get_matches_sync(people):
    """aroom_get_for_user, and aroom_get_for_user_id given the user's id, answer exactly like room_get_for_user."""
    alice, bob, carol = people
    services.room_create(name="Secret", private=True, creator=alice, members=[bob])
    services.room_create(name="Lobby", creator=alice)
    pairs = [(user, slug) for user in (alice, bob, carol, AnonymousUser()) for slug in ("secret", "lobby", "missing")]

    async def lookups():
        by_user = [await selectors.aroom_get_for_user(user=user, slug=slug) for user, slug in pairs]
        by_id = [await selectors.aroom_get_for_user_id(user_id=user.pk, slug=slug) for user, slug in pairs]
        return by_user, by_id

    by_user, by_id = run_async(lookups())
    want = [selectors.room_get_for_user(user=user, slug=slug) for user, slug in pairs]
    assert by_user == want
    assert by_id == want
    assert want.count(None) == 6


def test_room_list_is_sorted_and_filtered_without_duplicates(people):
    """The list holds public rooms and the user's private rooms, by name, each once."""
    alice, bob, carol = people
    services.room_create(name="Zeta", creator=alice)
    services.room_create(name="alpha", slug="alpha", creator=alice)
    services.room_create(name="Mine", private=True, creator=bob, members=[alice, carol])
    services.room_create(name="Theirs", private=True, creator=carol)
    assert [r.name for r in selectors.room_list_for_user(user=alice)] == ["Mine", "Zeta", "alpha"]
    assert [r.name for r in selectors.room_list_for_user(user=carol)] == ["Mine", "Theirs", "Zeta", "alpha"]


def test_message_page_latest_oldest_first_with_has_more(people):
    """Without before, the latest `limit` messages come oldest first, and has_more says older exist."""
    alice, _, _ = people
    room = services.room_create(name="Lobby", creator=alice)
    add_messages(room, 10, author=alice)
    page, more = selectors.message_page(room=room, before=None, limit=4)
    assert [m.seq for m in page] == [7, 8, 9, 10]
    assert more is True
    page, more = selectors.message_page(room=room, before=None, limit=10)
    assert [m.seq for m in page] == list(range(1, 11))
    assert more is False


def test_message_page_before_walks_back_to_the_start(people):
    """With before, pages walk back through history until has_more is False."""
    alice, _, _ = people
    room = services.room_create(name="Lobby", creator=alice)
    add_messages(room, 7, author=alice)
    page, more = selectors.message_page(room=room, before=5, limit=3)
    assert [m.seq for m in page] == [2, 3, 4] and more is True
    page, more = selectors.message_page(room=room, before=2, limit=3)
    assert [m.seq for m in page] == [1] and more is False
    page, more = selectors.message_page(room=room, before=1, limit=3)
    assert page == [] and more is False


def test_message_page_only_reads_its_room(people):
    """Messages of other rooms never leak into a page."""
    alice, _, _ = people
    one = services.room_create(name="One", creator=alice)
    two = services.room_create(name="Two", creator=alice)
    add_messages(one, 3, author=alice, body="one {seq}")
    add_messages(two, 3, author=alice, body="two {seq}")
    page, _ = selectors.message_page(room=two, before=None, limit=50)
    assert [m.body for m in page] == ["two 1", "two 2", "two 3"]


def test_message_page_rejects_a_limit_below_one(people):
    """A limit below 1 is a programming error, refused loudly."""
    alice, _, _ = people
    room = services.room_create(name="Lobby", creator=alice)
    with pytest.raises(ValueError, match="limit"):
        selectors.message_page(room=room, before=None, limit=0)


def test_message_max_seq(people):
    """message_max_seq is the highest stored seq, 0 for an empty room; the async twin agrees."""
    alice, _, _ = people
    room = services.room_create(name="Lobby", creator=alice)
    empty = services.room_create(name="Empty", creator=alice)
    add_messages(room, 5, author=alice)
    assert selectors.message_max_seq(room_id=room.pk) == 5
    assert selectors.message_max_seq(room_id=empty.pk) == 0
    assert selectors.room_last_seqs(room_ids=[room.pk, empty.pk]) == {room.pk: 5}
    assert selectors.room_last_seqs(room_ids=[]) == {}


@pytest.mark.django_db(transaction=True)
def test_async_max_seq_and_range(make_user):
    """amessage_max_seq and amessage_range read the stored messages from async code."""
    alice = make_user("alice")
    room = services.room_create(name="Lobby", creator=alice)
    add_messages(room, 6, author=alice)

    async def reads():
        return (
            await selectors.amessage_max_seq(room_id=room.pk),
            await selectors.amessage_range(room=room, after=2, upto=5),
            await selectors.amessage_range(room=room, after=5, upto=5),
            await selectors.amessage_range(room=room, after=4, upto=100),
        )

    top, middle, empty, tail = run_async(reads())
    assert top == 6
    assert [e.seq for e in middle] == [3, 4, 5]
    assert all(isinstance(e, Entry) for e in middle)
    assert middle[0] == Entry(
        room_id=room.pk,
        room="lobby",
        seq=3,
        ts_ms=int(datetime(2026, 11, 21, 12, 0, 3, 123000, tzinfo=UTC).timestamp() * 1000),
        user_id=alice.pk,
        username="alice",
        body="message 3",
        client_id="c3",
    )
    assert empty == []
    assert [e.seq for e in tail] == [5, 6]


def test_message_frame_has_the_wire_shape(make_user):
    """message_frame gives the protocol's message frame, ts in ISO-8601 UTC with milliseconds."""
    alice = make_user("alice")
    room = services.room_create(name="Lobby", creator=alice)
    (message,) = add_messages(room, 1, author=alice)
    message = Message.objects.get(pk=message.pk)
    assert selectors.message_frame(message) == {
        "type": "message",
        "room": "lobby",
        "seq": 1,
        "ts": "2026-11-21T12:00:01.123Z",
        "user": {"id": alice.pk, "username": "alice"},
        "body": "message 1",
        "client_id": "c1",
        "attachments": [],
        "reply_to": None,
        "mentions": [],
        "edited_ts": None,
        "deleted": False,
    }


def test_message_frame_ts_matches_messagelog_format(make_user):
    """A message stored from a log entry renders the same ts the live frame had."""
    alice = make_user("alice")
    room = services.room_create(name="Lobby", creator=alice)
    for ts_ms in (1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_999, 1_799_999_999_457):
        created = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
        message = Message.objects.create(
            room=room, seq=ts_ms % 100000, author=alice, author_username="alice", body="x", created_at=created
        )
        message.refresh_from_db()
        assert selectors.message_frame(message, slug="lobby")["ts"] == format_ts(ts_ms)


def test_message_frame_of_a_deleted_author_and_no_client_id(make_user):
    """A deleted author keeps their name with user id 0; an empty client_id is null."""
    alice = make_user("alice")
    room = services.room_create(name="Lobby", creator=alice)
    Message.objects.create(
        room=room, seq=1, author=alice, author_username="alice", body="hi", client_id="", created_at=datetime.now(UTC)
    )
    alice.delete()
    frame = selectors.message_frame(Message.objects.get(room=room, seq=1))
    assert frame["user"] == {"id": 0, "username": "alice"}
    assert frame["client_id"] is None


def test_room_members_sorted_by_username(make_user):
    """room_members lists a private room's members by username."""
    zed, amy = make_user("zed"), make_user("amy")
    room = services.room_create(name="Secret", private=True, creator=zed, members=[amy])
    assert [u.username for u in selectors.room_members(room=room)] == ["amy", "zed"]


def test_room_rights_of_staff_creators_members_and_conversations(make_user):
    """room_rights: staff and a room's creator moderate; only a private room's creator manages members; opening
    a direct conversation makes nobody its moderator or manager."""
    from chat import dms

    alice, bob = make_user("alice"), make_user("bob")
    staff = make_user("staff", is_staff=True)
    club = services.room_create(name="Club", private=True, creator=alice, members=[bob])
    lobby = services.room_create(name="Lobby", creator=alice)
    dm, _ = dms.dm_open(user=alice, username="bob")
    assert selectors.room_rights(room=club, user=alice) == {"moderator": True, "can_manage": True}
    assert selectors.room_rights(room=club, user=bob) == {"moderator": False, "can_manage": False}
    assert selectors.room_rights(room=club, user=staff) == {"moderator": True, "can_manage": False}
    assert selectors.room_rights(room=lobby, user=alice) == {"moderator": True, "can_manage": False}
    assert selectors.room_rights(room=lobby, user=AnonymousUser()) == {"moderator": False, "can_manage": False}
    assert selectors.room_rights(room=dm, user=alice) == {"moderator": False, "can_manage": False}
