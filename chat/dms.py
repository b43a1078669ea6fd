"""Direct conversations (protocol.md 7.5): the one private room of ``kind`` "dm" between two users.

A write of ``chat.services``' kind, kept in its own module because services
is already long; views and the API call ``dm_open`` / ``adm_open``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from chat.models import Membership, Room, RoomKind

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser


class DmUserUnknown(ValidationError):
    """No active user has that username."""


def dm_key(a: int, b: int) -> str:
    low, high = sorted((a, b))
    return f"{low}:{high}"


def dm_get(*, user_id: int, other_id: int) -> Room | None:
    """The direct conversation between the two users, if it exists."""
    return Room.objects.filter(dm_key=dm_key(user_id, other_id)).first()


def dm_open(*, user: AbstractBaseUser, username: str) -> tuple[Room, bool]:
    """The direct conversation between ``user`` and ``username``, created on first use; (room, created).

    The unique ``dm_key`` makes two concurrent first uses create one room: the
    loser's insert fails and it returns the winner's. A conversation with
    oneself is a private notepad, as in Slack.
    """
    name = (username or "").strip()
    other = get_user_model().objects.filter(username=name, is_active=True).first()
    if other is None:
        raise DmUserUnknown(f"There is no user named {name!r}: check the spelling of the username.")
    assert user.pk is not None and other.pk is not None
    key = dm_key(int(user.pk), int(other.pk))
    existing = Room.objects.filter(dm_key=key).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            # The slug is never shown (the client names a DM after the other person) and never guessable.
            room = Room.objects.create(
                slug=f"dm-{uuid.uuid4().hex[:20]}",
                name=f"{user.get_username()} and {other.get_username()}"[:100],
                private=True,
                kind=RoomKind.DM,
                dm_key=key,
                created_by_id=user.pk,
            )
            Membership.objects.bulk_create([Membership(room=room, user_id=pk) for pk in {user.pk, other.pk}])
    except IntegrityError:
        # The other user opened it at the same moment.
        return Room.objects.get(dm_key=key), False
    return room, True


async def adm_open(*, user: AbstractBaseUser, username: str) -> tuple[Room, bool]:
    """Async twin of :func:`dm_open`."""
    return await sync_to_async(dm_open)(user=user, username=username)
