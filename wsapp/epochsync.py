"""The hub's side of epochs (protocol.md 7.1): follow a room's epoch change and tell its members.

A room's epoch changes when its Redis state was re-seeded (``chat.epochs``):
the seed script publishes the change before any message of the new epoch,
and a hub that missed it (pub/sub reconnecting) finds it when it repairs the
room, or when a message of another epoch arrives. Members joined in the old
epoch get a ``joined`` with ``reset: true`` and the new epoch: they replace
their view of the room with the HTTP history and go on live from its
``last_seq``. A hub that has delivered more than the new epoch starts above
re-seeds it higher, so no client ever sees one seq twice in one epoch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from chat import events
from wsapp import frames
from wsapp.errors import Close

if TYPE_CHECKING:
    from wsapp.hub import Hub
    from wsapp.roomstate import RoomState

logger = logging.getLogger("kaiwa.hub")


async def on_epoch_change(hub: Hub, state: RoomState, change: events.EpochChange) -> None:
    """The seed script's event: adopt the new epoch, or re-seed it if it starts below what we delivered."""
    if state.last is None or change.epoch == state.epoch:
        return
    if change.base < state.last:
        await settle(hub, state)
        return
    await adopt(hub, state, change.epoch, change.base)
    await hub._repair(state, upto=None)  # what the new epoch published before it was adopted here


async def settle(hub: Hub, state: RoomState) -> None:
    """Settle the room's epoch above the stored history and everything this process delivered."""
    assert state.last is not None
    settled = await hub.log.settle(room_id=state.room_id, slug=state.slug, floor=state.last)
    if settled.epoch != state.epoch:
        # From the epoch's start: what it published while this process was not listening is repaired.
        await adopt(hub, state, settled.epoch, settled.base)
        await hub._repair(state, upto=None)


async def adopt(hub: Hub, state: RoomState, epoch: str, last: int) -> None:
    """Go on in ``epoch`` from ``last``; every member gets ``joined`` with ``reset: true``.

    A member still replaying a ``since`` backlog of the old epoch is closed
    with 1013 instead: it rejoins with its epoch and gets the reset then.
    """
    present = await hub.presence.members(room_id=state.room_id)
    if epoch == state.epoch:
        return  # adopted meanwhile (by the event, or another settle)
    logger.warning("room %s: epoch %s -> %s at seq %s; members reset", state.slug, state.epoch, epoch, last)
    state.epoch = epoch
    state.last = last
    text, nbytes = frames.encode(
        frames.joined(room=state.slug, last_seq=last, presence=present, reset=True, epoch=epoch)
    )
    for conn, held in list(state.members.items()):
        if held is None:
            conn.put(text, nbytes)
        else:
            conn.close(Close.TRY_AGAIN)
