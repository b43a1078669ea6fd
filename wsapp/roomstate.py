"""A room as one process's hub holds it: its members here, its delivery point, its subscription's readiness.

Membership is kept in per-user lists (``group_add`` / ``group_discard``):
almost always one connection per user, and a one-element list costs a quarter
of a one-element set's memory per idle socket.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from chat.models import Room
from wsapp.connection import Connection


@dataclass(eq=False)
class RoomState:
    room: Room
    channel: str
    last: int | None = None
    epoch: str = ""  # the room's epoch (protocol.md 7.1) that ``last`` belongs to
    ready: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    # conn -> None when live, or the frames held back while its backlog is fetched
    members: dict[Connection, list[tuple[str, int]] | None] = field(default_factory=dict)
    # user id -> that user's connections here (lists: almost always one, and a
    # one-element set costs four times the memory per idle socket)
    users: dict[int, list[Connection]] = field(default_factory=dict)
    # user id -> the connections that make that user present (joined without presence: false)
    present: dict[int, list[Connection]] = field(default_factory=dict)
    pending_joins: int = 0

    @property
    def room_id(self) -> int:
        return int(self.room.pk)

    @property
    def slug(self) -> str:
        return self.room.slug


def group_add(groups: dict[int, list[Connection]], key: int, conn: Connection) -> None:
    group = groups.setdefault(key, [])
    if conn not in group:
        group.append(conn)


def group_discard(groups: dict[int, list[Connection]], key: int, conn: Connection) -> None:
    group = groups.get(key)
    if group is not None and conn in group:
        group.remove(conn)
        if not group:
            del groups[key]
