"""chat.services: creating rooms, managing members, signing up."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import override_settings

from chat import services
from chat.models import Membership, Room

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def errors_of(exc_info: pytest.ExceptionInfo[ValidationError]) -> dict[str, list[str]]:
    return exc_info.value.message_dict


def test_room_create_derives_the_slug_from_the_name(make_user):
    """Without a slug, one is made from the name; the creator is recorded."""
    alice = make_user("alice")
    room = services.room_create(name="  Team   Chat! ", creator=alice)
    assert (room.name, room.slug, room.private, room.created_by) == ("Team Chat!", "team-chat", False, alice)


def test_room_create_derived_slug_gets_a_suffix_when_taken(make_user):
    """A derived slug that is taken becomes name-2, name-3, ..."""
    alice = make_user("alice")
    slugs = [services.room_create(name="Team chat", creator=alice).slug for _ in range(3)]
    assert slugs == ["team-chat", "team-chat-2", "team-chat-3"]


def test_room_create_name_without_latin_letters(make_user):
    """A name that slugifies to nothing (e.g. Japanese) still gets a valid slug."""
    alice = make_user("alice")
    first = services.room_create(name="会話", creator=alice)
    second = services.room_create(name="雑談", creator=alice)
    assert first.slug == "room" and second.slug == "room-2"
    assert first.name == "会話"


def test_room_create_long_name_slug_fits(make_user):
    """A 100-character name gives a slug of at most 64 characters, also with a suffix."""
    alice = make_user("alice")
    name = "a" * 100
    assert len(services.room_create(name=name, creator=alice).slug) == 64
    assert services.room_create(name=name, creator=alice).slug == "a" * 62 + "-2"


def test_room_create_explicit_slug_taken_is_a_clear_error(make_user):
    """An explicit slug that is taken is refused with a message naming it."""
    alice = make_user("alice")
    services.room_create(name="Lobby", slug="lobby", creator=alice)
    with pytest.raises(ValidationError) as exc_info:
        services.room_create(name="Another", slug="lobby", creator=alice)
    assert "already exists" in errors_of(exc_info)["slug"][0]
    assert Room.objects.count() == 1


@pytest.mark.parametrize("slug", ["Lobby", "-lobby", "lobby-", "lob by", "lob_by", "a" * 65, "ロビー"])
def test_room_create_invalid_slug(make_user, slug):
    """A slug outside lowercase letters, digits and inner hyphens is refused, saying what is allowed."""
    alice = make_user("alice")
    with pytest.raises(ValidationError) as exc_info:
        services.room_create(name="Lobby", slug=slug, creator=alice)
    assert "lowercase letters, digits or hyphens" in errors_of(exc_info)["slug"][0]


@pytest.mark.parametrize("name", ["", "   ", "\n\t"])
def test_room_create_needs_a_name(make_user, name):
    """An empty or blank name is refused."""
    with pytest.raises(ValidationError) as exc_info:
        services.room_create(name=name, creator=make_user())
    assert errors_of(exc_info)["name"] == ["Give the room a name."]


def test_room_create_name_too_long(make_user):
    """A name longer than 100 characters is refused with the limit in the message."""
    with pytest.raises(ValidationError) as exc_info:
        services.room_create(name="x" * 101, creator=make_user())
    assert "at most 100" in errors_of(exc_info)["name"][0]


def test_private_room_members_include_the_creator(make_user):
    """A private room's members are the creator plus the given users, each once."""
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol")
    room = services.room_create(name="Secret", private=True, creator=alice, members=[bob, carol, bob, alice])
    assert sorted(room.members.values_list("username", flat=True)) == ["alice", "bob", "carol"]


def test_public_room_has_no_memberships(make_user):
    """A public room stores no membership rows."""
    alice, bob = make_user("alice"), make_user("bob")
    room = services.room_create(name="Lobby", creator=alice, members=[bob])
    assert not Membership.objects.filter(room=room).exists()


def test_member_add_is_idempotent_and_remove_reports(make_user):
    """Adding twice keeps one membership; removing says whether the user was a member."""
    alice, bob = make_user("alice"), make_user("bob")
    room = services.room_create(name="Secret", private=True, creator=alice)
    first = services.room_member_add(room=room, user=bob)
    assert services.room_member_add(room=room, user=bob) == first
    assert Membership.objects.filter(room=room).count() == 2
    assert services.room_member_remove(room=room, user=bob) is True
    assert services.room_member_remove(room=room, user=bob) is False


def test_creator_cannot_be_removed(make_user):
    """The creator of a private room stays a member."""
    alice = make_user("alice")
    room = services.room_create(name="Secret", private=True, creator=alice)
    with pytest.raises(ValidationError, match="creator"):
        services.room_member_remove(room=room, user=alice)
    assert room.members.filter(pk=alice.pk).exists()


@override_settings(DEBUG=False)
def test_signup_creates_an_ordinary_user():
    """Sign-up creates an active user with a usable password, not staff, outside DEBUG."""
    user = services.user_signup(username="alice", password="correct horse battery")
    assert user.is_active and not user.is_staff and not user.is_superuser
    assert user.check_password("correct horse battery")


@override_settings(DEBUG=True)
def test_signup_first_account_is_admin_in_debug():
    """With DEBUG on, the very first account becomes staff and superuser, the next ones do not."""
    first = services.user_signup(username="dev", password="correct horse battery")
    second = services.user_signup(username="other", password="correct horse battery")
    assert first.is_staff and first.is_superuser
    assert not second.is_staff and not second.is_superuser


@override_settings(DEBUG=False)
def test_signup_first_account_is_not_admin_in_production():
    """Without DEBUG, even the first account is an ordinary user."""
    user = services.user_signup(username="dev", password="correct horse battery")
    assert not user.is_staff and not user.is_superuser


@pytest.mark.parametrize(
    ("password", "fragment"),
    [
        ("short1", "too short"),
        ("12345678901", "entirely numeric"),
        ("password123", "too common"),
        ("alicealice", "too similar"),
    ],
)
def test_signup_runs_django_password_validation(password, fragment):
    """Django's password validators refuse weak passwords, and no account is created."""
    with pytest.raises(ValidationError) as exc_info:
        services.user_signup(username="alicealice", password=password)
    assert any(fragment in m for m in errors_of(exc_info)["password"])
    assert not get_user_model().objects.exists()


def test_signup_username_taken_case_insensitively(make_user):
    """A username that differs only in case from an existing one is refused."""
    make_user("Alice")
    with pytest.raises(ValidationError) as exc_info:
        services.user_signup(username="alice", password="correct horse battery")
    assert "taken" in errors_of(exc_info)["username"][0]


@pytest.mark.parametrize("username", ["", "   ", "has space", "semi;colon", "x" * 151])
def test_signup_bad_username(username):
    """Empty, malformed or too long usernames are refused with a message."""
    with pytest.raises(ValidationError) as exc_info:
        services.user_signup(username=username, password="correct horse battery")
    assert errors_of(exc_info)["username"]
