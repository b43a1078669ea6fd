"""Rooms, memberships and accounts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.text import slugify

from chat.models import Membership, Room, slug_validator

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import User


ROOM_NAME_MAX = Room._meta.get_field("name").max_length or 100
SLUG_MAX = Room._meta.get_field("slug").max_length or 64


def _slug_from_name(name: str) -> str:
    slug = slugify(name)[:SLUG_MAX].strip("-")
    # Names without any latin letter or digit (e.g. "会話") slugify to "".
    return slug or "room"


def _free_slug(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``, ... whichever is not taken yet."""
    if not Room.objects.filter(slug=base).exists():
        return base
    taken = set(Room.objects.filter(slug__startswith=f"{base[: SLUG_MAX - 8]}").values_list("slug", flat=True))
    n = 2
    while True:
        suffix = f"-{n}"
        candidate = base[: SLUG_MAX - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate
        n += 1


@transaction.atomic
def room_create(
    *,
    name: str,
    slug: str | None = None,
    private: bool = False,
    creator: AbstractBaseUser | None,
    members: Iterable[AbstractBaseUser] = (),
) -> Room:
    """Create a room; the creator of a private room is always one of its members.

    Without ``slug``, one is derived from ``name`` (with ``-2``, ``-3``, ...
    appended when taken). An explicit ``slug`` that is taken is an error.
    """
    name = " ".join((name or "").split())
    if not name:
        raise ValidationError({"name": "Give the room a name."})
    if len(name) > ROOM_NAME_MAX:
        raise ValidationError({"name": f"Room names are at most {ROOM_NAME_MAX} characters; this one has {len(name)}."})
    if slug is None or slug.strip() == "":
        slug = _free_slug(_slug_from_name(name))
    else:
        slug = slug.strip()
        try:
            slug_validator(slug)
        except ValidationError:
            raise ValidationError(
                {
                    "slug": f"{slug!r} is not a valid room address: use 1 to 64 lowercase letters, digits or "
                    "hyphens, not starting or ending with a hyphen (e.g. 'team-chat')."
                }
            ) from None
        if Room.objects.filter(slug=slug).exists():
            raise ValidationError({"slug": f"A room with the address {slug!r} already exists; choose another one."})
    try:
        with transaction.atomic():
            room = Room.objects.create(
                name=name, slug=slug, private=private, created_by_id=creator.pk if creator else None
            )
    except IntegrityError:
        # Someone created the same slug at the same moment.
        raise ValidationError(
            {"slug": f"A room with the address {slug!r} was just created by someone else; choose another one."}
        ) from None
    if private:
        wanted: dict[Any, AbstractBaseUser] = {}
        if creator is not None:
            wanted[creator.pk] = creator
        for user in members:
            wanted.setdefault(user.pk, user)
        Membership.objects.bulk_create([Membership(room=room, user_id=pk) for pk in wanted])
    return room


def room_member_add(*, room: Room, user: AbstractBaseUser) -> Membership:
    """Make ``user`` a member of ``room``; adding an existing member changes nothing."""
    membership, _ = Membership.objects.get_or_create(room=room, user_id=user.pk)
    return membership


def room_member_remove(*, room: Room, user: AbstractBaseUser) -> bool:
    """Remove ``user`` from ``room``; returns whether they were a member.

    The creator of a private room cannot be removed: they manage its members.
    """
    if room.private and room.created_by_id is not None and room.created_by_id == user.pk:
        raise ValidationError(
            "The room's creator manages its members and cannot be removed; delete the room in the admin instead."
        )
    deleted, _ = Membership.objects.filter(room=room, user_id=user.pk).delete()
    return deleted > 0


@transaction.atomic
def user_signup(*, username: str, password: str) -> User:
    """Create an active account, checking the username and Django's password validators.

    With ``settings.DEBUG`` on, the very first account of the site becomes
    staff and superuser, so a developer trying Kaiwa can open /admin/ at once.
    """
    User = get_user_model()
    USERNAME_MAX = User._meta.get_field("username").max_length or 150
    username = User.normalize_username((username or "").strip())
    if not username:
        raise ValidationError({"username": "Choose a username."})
    if len(username) > USERNAME_MAX:
        raise ValidationError({"username": f"Usernames are at most {USERNAME_MAX} characters."})
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise ValidationError({"username": exc.messages}) from None
    if User._default_manager.filter(username__iexact=username).exists():
        raise ValidationError({"username": f"The username {username!r} is taken; choose another one."})
    candidate = User(username=username)
    try:
        validate_password(password, user=candidate)
    except ValidationError as exc:
        raise ValidationError({"password": exc.messages}) from None
    first_account = settings.DEBUG and not User._default_manager.exists()
    try:
        with transaction.atomic():
            user = User.objects.create_user(
                username=username, password=password, is_staff=first_account, is_superuser=first_account
            )
    except IntegrityError:
        raise ValidationError({"username": f"The username {username!r} is taken; choose another one."}) from None
    return user
