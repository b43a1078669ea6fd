"""The user's own room events (protocol.md 7.5), from the control channel to the user's sockets.

``chat.roomevents`` publishes ``room_added`` / ``room_removed`` /
``room_updated`` with their audience (user ids, or everyone but some ids);
each process puts the frame on the local connections of those users. A
``room_removed`` first ends the room's subscription on every such connection
that joined it (an unsolicited ``left``), so ``left`` always comes first. The
access re-check (``wsapp.revocation``) may end the same subscription at the
same time; ``Hub.leave`` queues ``left`` in the step that ends it, so whichever
task ends it, its ``left`` precedes this ``room_removed``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from chat import roomevents
from wsapp import frames
from wsapp.connection import Connection

if TYPE_CHECKING:
    from wsapp.hub import Hub

logger = logging.getLogger("kaiwa.hub")

KINDS = roomevents.KINDS


def audience(hub: Hub, event: dict[str, Any]) -> list[Connection]:
    """The local connections the event is for."""
    if event.get("everyone"):
        excluded = {int(uid) for uid in event.get("except", ())}
        return [conn for conn in hub.connections if conn.user_id not in excluded]
    return [conn for uid in event.get("users", ()) for conn in list(hub.by_user.get(int(uid), ()))]


def on_control(hub: Hub, event: dict[str, Any]) -> None:
    """Forward one room event (``event["kind"]`` in ``KINDS``) to the connections concerned."""
    kind = event["kind"]
    room = event["room"]
    room_id = int(event["room_id"])
    if kind == roomevents.REMOVED:
        if not isinstance(room, str):
            raise ValueError("room_removed names its room by slug")
    elif not isinstance(room, dict) or not isinstance(room.get("slug"), str):
        raise ValueError(f"{kind} carries the room's object")
    conns = audience(hub, event)
    if not conns:
        return
    text, nbytes = frames.encode({"type": kind, "room": room})
    if kind != roomevents.REMOVED:
        for conn in conns:
            if conn.open:
                conn.put(text, nbytes)
        return
    hub.spawn(_remove(hub, conns, room_id, text, nbytes))


async def _remove(hub: Hub, conns: list[Connection], room_id: int, text: str, nbytes: int) -> None:
    for conn in conns:
        for slug, subscription in list(conn.subscriptions.items()):
            if subscription.room_id == room_id and conn.open:
                await hub.leave(conn, slug, tell=True)
        if conn.open:
            conn.put(text, nbytes)
