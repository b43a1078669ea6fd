"""Reads: every query about rooms and stored messages goes through here.

Views, the history API, the admin, ``wsapp`` and the worker call these
functions; nothing else builds chat querysets. Functions take keyword-only
arguments; async twins carry Django's ``a`` prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Exists, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.utils import timezone

from chat.events import DELETE_OP, EDIT_OP, Entry, ts_ms_of
from chat.models import Attachment, Membership, Message, MessageKind, Room, RoomKind

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

    AnyUser = AbstractBaseUser | AnonymousUser

# A message whose author account was deleted keeps its author_username; the
# wire contract's user id is an int, so such messages carry id 0 (no real user
# has primary key 0).
DELETED_USER_ID = 0


def _visible_rooms(user: AnyUser) -> QuerySet[Room]:
    """Public rooms, plus the private rooms ``user`` is a member of."""
    if not user.is_authenticated or user.pk is None:
        return Room.objects.filter(private=False)
    # A subquery rather than a join: no duplicate rows, so no DISTINCT.
    member_of = Membership.objects.filter(user_id=user.pk).values("room_id")
    return Room.objects.filter(Q(private=False) | Q(pk__in=member_of))


def room_get_for_user(*, user: AnyUser, slug: str) -> Room | None:
    """The room ``slug`` if ``user`` may see it, else None.

    An unknown slug and a private room the user is not a member of both give
    None: callers must not be able to tell the two apart (protocol.md §4).
    """
    return room_get_for_user_id(user_id=user.pk if user.is_authenticated else None, slug=slug)


def room_get_for_user_id(*, user_id: int | None, slug: str) -> Room | None:
    """:func:`room_get_for_user` for a user known by id (``None``: anonymous)."""
    room = Room.objects.filter(slug=slug).first()
    if room is None:
        return None
    if not room.private:
        return room
    if user_id is None:
        return None
    if Membership.objects.filter(room=room, user_id=user_id).exists():
        return room
    return None


async def aroom_get_for_user(*, user: AnyUser, slug: str) -> Room | None:
    """Async twin of :func:`room_get_for_user`."""
    return await aroom_get_for_user_id(user_id=user.pk if user.is_authenticated else None, slug=slug)


async def aroom_get_for_user_id(*, user_id: int | None, slug: str) -> Room | None:
    """:func:`aroom_get_for_user` for a user known by id (``None``: anonymous).

    A WebSocket keeps its user's id, not a ``User`` instance: about a kilobyte
    per idle socket. One thread hop for both queries.
    """
    return await sync_to_async(room_get_for_user_id)(user_id=user_id, slug=slug)


async def aroom_privacy(*, room_id: int) -> bool | None:
    """Whether the room is private; None if it no longer exists (the WebSocket's room-access re-check)."""
    return await Room.objects.filter(pk=room_id).values_list("private", flat=True).afirst()


async def aroom_member_ids(*, room_id: int, user_ids: set[int]) -> set[int]:
    """Which of ``user_ids`` are members of the room (meaningful for private rooms)."""
    members = Membership.objects.filter(room_id=room_id, user_id__in=user_ids).values_list("user_id", flat=True)
    return {uid async for uid in members}


def room_list_for_user(*, user: AnyUser) -> list[Room]:
    """Every room ``user`` may see, by name: public ones and private ones they belong to."""
    return list(_visible_rooms(user).order_by("name", "slug"))


MENTIONABLE_MAX = 200  # names the page offers for "@"; the rest still resolve when typed in full


def room_mentionable(*, room: Room) -> list[dict[str, Any]]:
    """Who the composer's "@" offers: a private room's members, or the latest authors of a public room."""
    rows: list[tuple[int, str]]
    if room.private:
        rows = list(room.memberships.filter(user__is_active=True).values_list("user_id", "user__username"))
    else:
        rows = list(
            Message.objects.filter(room=room, kind=MessageKind.MESSAGE, author__is_active=True)
            .order_by("-seq")
            .values_list("author_id", "author_username")[: MENTIONABLE_MAX * 5]
        )
    users = {int(uid): name for uid, name in rows}
    return [{"id": uid, "username": name} for uid, name in sorted(users.items(), key=lambda u: u[1])][:MENTIONABLE_MAX]


def room_rights(*, room: Room, user: AnyUser) -> dict[str, bool]:
    """What ``user`` may do in ``room`` beyond writing: the one place these rules live.

    ``moderator``: staff, or the room's creator, may delete anyone's message
    (protocol.md 7.4; the WebSocket's ``delete`` is checked by it too, in
    ``chat.messageedits.adelete_check``).
    ``can_manage``: the creator of a private room manages its members
    (``chat.views.room_members``). A direct conversation has no owner: the
    person who opened it is not the other one's moderator, and a pair has no
    members to manage.
    """
    owner = (
        user.is_authenticated
        and room.kind != RoomKind.DM
        and room.created_by_id is not None
        and room.created_by_id == user.pk
    )
    return {
        "moderator": bool(getattr(user, "is_staff", False) or owner),
        "can_manage": bool(room.private and owner),
    }


def room_members(*, room: Room) -> list[Any]:
    """The members of a room (meaningful for private rooms), by username."""
    return [m.user for m in room.memberships.select_related("user").order_by("user__username")]


def room_last_seqs(*, room_ids: list[int]) -> dict[int, int]:
    """The highest stored seq per room (rooms without messages are absent).

    This is the database's view: the live sequence in Redis may be ahead
    until the worker has persisted the newest messages.
    """
    if not room_ids:
        return {}
    # One correlated subquery per room, each a single step down the (room, seq)
    # unique index; a GROUP BY would read every message of every room.
    newest = Message.objects.filter(room_id=OuterRef("pk")).order_by("-seq").values("seq")[:1]
    rows = Room.objects.filter(pk__in=room_ids).annotate(last=Subquery(newest)).values_list("pk", "last")
    return {pk: last for pk, last in rows if last is not None}


def message_page(*, room: Room, before: int | None, limit: int) -> tuple[list[Message], bool]:
    """The latest ``limit`` stored messages with ``seq < before`` (all when None), oldest first.

    Returns ``(messages, has_more)``; ``has_more`` is True when older messages
    exist. One indexed range scan on ``(room, seq)``, whatever the table size.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    # Edit and delete events are rows of the room's sequence too; the history shows messages (protocol.md 7.4).
    qs = Message.objects.filter(room=room, kind=MessageKind.MESSAGE)
    if before is not None:
        qs = qs.filter(seq__lt=before)
    # One extra row tells whether older messages exist, without a COUNT.
    rows = list(qs.order_by("-seq")[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    _attach(rows, attachments_for_messages(room_id=room.pk, seqs=[m.seq for m in rows]))
    return rows, has_more


async def amessage_range(*, room: Room, after: int, upto: int) -> list[Entry]:
    """Stored messages with ``after < seq <= upto`` as log entries, oldest first.

    Used to resume a client when the Redis stream was already trimmed below
    ``after``: the missing prefix is read from the database.
    """
    if upto <= after:
        return []
    qs = Message.objects.filter(room=room, seq__gt=after, seq__lte=upto).order_by("seq")
    messages = [message async for message in qs]
    _attach(messages, await aattachments_for_messages(room_id=room.pk, seqs=[m.seq for m in messages]))
    return [message_entry(message, slug=room.slug) for message in messages]


def message_max_seq(*, room_id: int) -> int:
    """The highest stored seq of a room, 0 if it has no stored message."""
    value = Message.objects.filter(room_id=room_id).aggregate(last=Max("seq"))["last"]
    return int(value or 0)


async def amessage_max_seq(*, room_id: int) -> int:
    """Async twin of :func:`message_max_seq`."""
    value = (await Message.objects.filter(room_id=room_id).aaggregate(last=Max("seq")))["last"]
    return int(value or 0)


_OPS = {MessageKind.EDIT: EDIT_OP, MessageKind.DELETE: DELETE_OP}


def message_entry(message: Message, *, slug: str) -> Entry:
    """A stored row (a message in its current state, or an edit/delete event) as a :class:`chat.events.Entry`.

    Its attachments are those :func:`message_page` / :func:`amessage_range`
    loaded with it (none for a message read otherwise, or deleted).
    """
    deleted = message.deleted_at is not None
    return Entry(
        room_id=message.room_id,
        room=slug,
        seq=message.seq,
        ts_ms=ts_ms_of(message.created_at),
        user_id=message.author_id if message.author_id is not None else DELETED_USER_ID,
        username=message.author_username,
        body=message.body,
        client_id=message.client_id or None,
        attachments=() if deleted else tuple(getattr(message, _ATTACHMENTS, ())),
        op=_OPS.get(MessageKind(message.kind), ""),
        target=message.target_seq,
        reply_to=message.reply_to,
        mentions=tuple(message.mentions or ()),
        deleted=deleted,
        edited_ts_ms=None if message.edited_at is None or deleted else ts_ms_of(message.edited_at),
    )


def message_frame(message: Message, *, slug: str | None = None) -> dict[str, Any]:
    """The wire ``message`` frame of a stored message (protocol.md §2).

    Pass ``slug`` when the caller already has it, to avoid loading ``message.room``.
    """
    frame = message_entry(message, slug=slug if slug is not None else message.room.slug).frame()
    # The history always says whether and when a message was edited, and whether it was deleted (7.4).
    frame.setdefault("edited_ts", None)
    frame.setdefault("deleted", False)
    return frame


# Attachments (protocol.md 7.3) --------------------------------------------------

# Where the API serves an attachment and its thumbnail (wsapp/api/attachments.py).
ATTACHMENT_URL = "/api/attachments/{id}"
ATTACHMENT_THUMBNAIL_URL = "/api/attachments/{id}/thumbnail"


def attachment_dict(attachment: Attachment) -> dict[str, Any]:
    """The wire object ``A`` of an attachment."""
    data: dict[str, Any] = {
        "id": attachment.pk,
        "name": attachment.name,
        "content_type": attachment.content_type,
        "size": attachment.size,
        "url": ATTACHMENT_URL.format(id=attachment.pk),
    }
    if attachment.thumbnail:
        data.update(
            width=attachment.width,
            height=attachment.height,
            thumbnail_url=ATTACHMENT_THUMBNAIL_URL.format(id=attachment.pk),
            thumbnail_width=attachment.thumbnail_width,
            thumbnail_height=attachment.thumbnail_height,
        )
    return data


async def aattachment_get_for_user_id(*, user_id: int | None, attachment_id: str) -> Attachment | None:
    """The attachment if the user may see its room (public, or private and a member), else None."""
    visible = Q(room__private=False)
    if user_id is not None:
        visible |= Q(room__memberships__user_id=user_id)
    # A deleted message's attachments are gone from every user-facing surface (protocol.md 7.4).
    deleted = Message.objects.filter(room_id=OuterRef("room_id"), seq=OuterRef("message_seq"), deleted_at__isnull=False)
    return await Attachment.objects.filter(visible, ~Exists(deleted), pk=attachment_id).distinct().afirst()


# Where message_page / amessage_range leave a message's A objects for message_entry.
_ATTACHMENTS = "_kaiwa_attachment_objects"


def _attach(messages: list[Message], found: dict[int, list[dict[str, Any]]]) -> None:
    for message in messages:
        setattr(message, _ATTACHMENTS, found.get(message.seq, []))


async def aattachments_for_messages(*, room_id: int, seqs: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Async twin of :func:`attachments_for_messages`."""
    found: dict[int, list[dict[str, Any]]] = {}
    if not seqs:
        return found
    rows = Attachment.objects.filter(room_id=room_id, message_seq__in=seqs).order_by("message_seq", "created_at")
    async for attachment in rows:
        assert attachment.message_seq is not None
        found.setdefault(attachment.message_seq, []).append(attachment_dict(attachment))
    return found


async def aattachment_dicts(*, ids: Sequence[str]) -> list[dict[str, Any]]:
    """The ``A`` objects of the attachments ``ids``, in that order (unknown ids are left out)."""
    by_id = {a.pk: attachment_dict(a) async for a in Attachment.objects.filter(pk__in=list(ids))}
    return [by_id[i] for i in ids if i in by_id]


def attachments_for_messages(*, room_id: int, seqs: list[int]) -> dict[int, list[dict[str, Any]]]:
    """The ``A`` objects of each of a room's messages, by seq (messages without any are absent)."""
    found: dict[int, list[dict[str, Any]]] = {}
    if not seqs:
        return found
    rows = Attachment.objects.filter(room_id=room_id, message_seq__in=seqs).order_by("message_seq", "created_at")
    for attachment in rows:
        assert attachment.message_seq is not None
        found.setdefault(attachment.message_seq, []).append(attachment_dict(attachment))
    return found


def attachments_of_message(*, room_id: int, seq: int) -> list[Attachment]:
    """A stored message's attachments, in upload order."""
    return list(Attachment.objects.filter(room_id=room_id, message_seq=seq).order_by("created_at"))


def room_attachment_bytes(*, room_ids: list[int]) -> dict[int, int]:
    """Total bytes of stored attachments (files and thumbnails) per room; rooms without any are absent."""
    rows = (
        Attachment.objects.filter(room_id__in=room_ids)
        .values("room_id")
        .annotate(total=Sum("size") + Sum("thumbnail_size"))
    )
    return {row["room_id"]: int(row["total"] or 0) for row in rows}


def attachment_orphans_filter(*, now: datetime | None = None) -> Q:
    """Uploads no message used within ``KAIWA_ATTACHMENT_ORPHAN_HOURS``.

    An upload claimed by a ``send`` counts from the claim too: its message
    may still be on its way from Redis to the database.
    """
    cutoff = (now or timezone.now()) - timedelta(hours=settings.KAIWA_ATTACHMENT_ORPHAN_HOURS)
    unclaimed_or_stale = Q(claimed_at__isnull=True) | Q(claimed_at__lt=cutoff)
    return Q(message_seq__isnull=True, created_at__lt=cutoff) & unclaimed_or_stale


def attachment_orphan_count(*, now: datetime | None = None) -> int:
    """How many uploads :func:`chat.services.attachment_delete_orphans` would delete now."""
    return Attachment.objects.filter(attachment_orphans_filter(now=now)).count()


def attachments_by_message(*, keys: list[tuple[int, int]]) -> dict[tuple[int, int], list[Attachment]]:
    """The attachments of the messages ``(room_id, seq)`` in ``keys``, in upload order: one query."""
    found: dict[tuple[int, int], list[Attachment]] = {}
    if not keys:
        return found
    by_room: dict[int, list[int]] = {}
    for room_id, seq in keys:
        by_room.setdefault(room_id, []).append(seq)
    match = Q()
    for room_id, seqs in by_room.items():
        match |= Q(room_id=room_id, message_seq__in=seqs)
    for attachment in Attachment.objects.filter(match).order_by("created_at"):
        assert attachment.message_seq is not None
        found.setdefault((attachment.room_id, attachment.message_seq), []).append(attachment)
    return found
