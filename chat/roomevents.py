"""The user's own room events (protocol.md 7.5): ``room_added``, ``room_removed``, ``room_updated``.

Django signal handlers (``chat.signals``) decide who can newly see, no longer
see, or sees a renamed room, and publish one event on the control channel
(``chat.logkeys.CONTROL_CHANNEL``); every server process forwards it to the
local connections of the users concerned (``wsapp.userevents``). An event
names its audience as ``users`` (ids) or ``everyone`` (every connected user,
minus the ids in ``except``): a public room is everybody's business, and the
process, not the database, knows who is connected.

Events are published once the transaction commits (a rolled-back change tells
nobody), and a client that missed one (its socket was down) gets the truth
from ``GET /api/rooms/`` when it reconnects. Events may repeat (an admin form
saving a room and its members); clients treat ``room_added`` of a room they
know as an update.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from chat.logkeys import CONTROL_CHANNEL
from chat.models import Membership, Room, RoomKind

logger = logging.getLogger("kaiwa.signals")

ADDED = "room_added"
REMOVED = "room_removed"
UPDATED = "room_updated"
KINDS = frozenset({ADDED, REMOVED, UPDATED})


def room_dict(
    room: Room, *, last_seq: int | None = None, members: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A room as the room list and ``room_added`` give it."""
    if last_seq is None:
        from chat.selectors import room_last_seqs

        last_seq = room_last_seqs(room_ids=[room.pk]).get(room.pk, 0)
    data: dict[str, Any] = {
        "slug": room.slug,
        "name": room.name,
        "private": room.private,
        "kind": room.kind,
        "last_seq": last_seq,
    }
    if room.kind == RoomKind.DM:
        data["members"] = dm_members(room.pk) if members is None else members
    return data


def dm_members(room_id: int) -> list[dict[str, Any]]:
    """A direct conversation's two members as ``user`` objects: a client names it after the other one."""
    rows = Membership.objects.filter(room_id=room_id).order_by("user_id").values_list("user_id", "user__username")
    return [{"id": uid, "username": name} for uid, name in rows]


def member_ids(room_id: int) -> list[int]:
    return list(Membership.objects.filter(room_id=room_id).values_list("user_id", flat=True))


def event(
    kind: str,
    *,
    room_id: int,
    room: dict[str, Any] | str,
    users: Iterable[int] | None = None,
    everyone_except: Iterable[int] | None = None,
) -> dict[str, Any]:
    """The control event: ``room`` is the room's dict (added, updated) or its slug (removed)."""
    data: dict[str, Any] = {"kind": kind, "room_id": room_id, "room": room}
    if users is not None:
        data["users"] = sorted(set(users))
    else:
        data["everyone"] = True
        data["except"] = sorted(set(everyone_except or ()))
    return data


def publish(data: dict[str, Any]) -> None:
    """Publish ``data`` on the control channel now; a Redis error is logged, never raised."""
    from chat.redisclient import sync_client

    try:
        sync_client().publish(CONTROL_CHANNEL, json.dumps(data))
    except Exception as exc:
        logger.warning("could not publish %s (%r); clients see the change when they reload the room list", data, exc)


def publish_on_commit(build: Any) -> None:
    """Build the event (a callable: it may read the committed state) and publish it after the commit."""

    def run() -> None:
        try:
            data = build()
        except Exception:
            logger.exception("could not build a room event; clients see the change when they reload the room list")
            return
        if data is not None:
            publish(data)

    transaction.on_commit(run)


def room_dicts(rooms: list[Room]) -> list[dict[str, Any]]:
    """``rooms`` as the room list gives them: three queries whatever their number."""
    from chat.selectors import room_last_seqs

    last = room_last_seqs(room_ids=[room.pk for room in rooms])
    dm_ids = [room.pk for room in rooms if room.kind == RoomKind.DM]
    members: dict[int, list[dict[str, Any]]] = {}
    if dm_ids:
        rows = (
            Membership.objects.filter(room_id__in=dm_ids)
            .order_by("room_id", "user_id")
            .values_list("room_id", "user_id", "user__username")
        )
        for room_id, uid, name in rows:
            members.setdefault(room_id, []).append({"id": uid, "username": name})
    out = []
    for room in rooms:
        data = room_dict(room, last_seq=last.get(room.pk, 0), members=members.get(room.pk, []))
        out.append(data)
    return out
