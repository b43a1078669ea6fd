"""A ``join`` with ``since``: the backlog ``since < seq <= last``, read back and paced into the queue.

Also the range reads the hub's gap repair uses: from the log, and the prefix
the log no longer holds (trimmed after the worker stored it) from the database.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from chat import selectors
from chat.messagelog import Entry, Log
from wsapp import frames
from wsapp.connection import Connection
from wsapp.dbthread import db_ready
from wsapp.errors import Close

if TYPE_CHECKING:
    from wsapp.hub import Hub
    from wsapp.roomstate import RoomState

logger = logging.getLogger("kaiwa.hub")

# A ``since`` backlog is read in chunks (the first of this many messages, the
# next ones sized to about one outgoing queue's worth, at most the max) and fed
# into the connection's queue as the client reads; a client that takes none of
# it for this long is closed with 1013.
FIRST_CHUNK = 8
MAX_CHUNK = 256
PACE_TIMEOUT_SECONDS = 20.0


class RangeIncomplete(Exception):
    """Neither the stream nor the database holds some seq of a range.

    ``other_epoch``: the stream held some of them, in another epoch (expected
    after an epoch change, so not an error; protocol.md, Epochs).
    """

    def __init__(self, message: str, *, other_epoch: bool = False) -> None:
        super().__init__(message)
        self.other_epoch = other_epoch


async def fetch_range(log: Log, state: RoomState, *, after: int, upto: int) -> list[Entry]:
    """Messages ``after < seq <= upto``: from the stream, the trimmed prefix from the database."""
    if upto <= after:
        return []
    entries = await log.read_range(room_id=state.room_id, slug=state.slug, after=after, upto=upto)
    streamed = len(entries)
    if state.epoch:
        # A stream entry of another epoch is not this history's: the state of another
        # database, or a message acked and then lost with Redis's data before it was
        # stored (protocol.md, Epochs). What the database stored stands for it.
        entries = [e for e in entries if not e.epoch or e.epoch == state.epoch]
    other_epoch = len(entries) < streamed
    have = {e.seq for e in entries}
    missing = [s for s in range(after + 1, upto + 1) if s not in have]
    if missing:
        # The trimmed prefix, or the seqs of other epochs: from the database.
        await db_ready()
        stored = await selectors.amessage_range(room=state.room, after=missing[0] - 1, upto=missing[-1])
        entries = sorted([*entries, *(e for e in stored if e.seq not in have)], key=lambda e: e.seq)
    if [e.seq for e in entries] != list(range(after + 1, upto + 1)):
        have = {e.seq for e in entries}
        missing = [s for s in range(after + 1, upto + 1) if s not in have]
        raise RangeIncomplete(
            f"room {state.room_id}: seqs {missing[:5]}... are neither in Redis (in this epoch) nor stored",
            other_epoch=other_epoch,
        )
    return entries


async def replay(
    hub: Hub,
    conn: Connection,
    state: RoomState,
    held: list[tuple[str, int]],
    joined: dict[str, Any],
    *,
    since: int,
    last: int,
) -> None:
    """Queue ``joined``, the backlog ``since < seq <= last`` and the held live frames, in that order.

    Runs in the joining connection's own task, never in the fan-out. The
    backlog is read in chunks and fed into the queue only as the writer
    drains it, so a backlog larger than the queue's limits (e.g. 80
    messages of 1 MB) reaches a client that reads; live frames of the room
    stay held meanwhile and count against the same limits (Connection.held_*).
    The caller unregisters ``conn`` if this raises.
    """
    after = since
    first = True
    chunk_size = FIRST_CHUNK
    while after < last:
        upto = min(last, after + chunk_size)
        try:
            chunk = await fetch_range(hub.log, state, after=after, upto=upto)
        except RangeIncomplete as exc:
            if first:
                # Part of the backlog exists nowhere any more: the client must reload.
                (logger.info if exc.other_epoch else logger.error)("%s; answering join with reset", exc)
                joined["reset"] = True
                chunk, upto = [], last
            else:
                logger.error("%s; closing connection %s with 1011 so the client resyncs", exc, conn.id)
                conn.close(Close.SERVER_ERROR)
                return
        if state.members.get(conn) is not held:
            return  # left (or disconnected) while the backlog was read
        if first:
            first = False
            if not conn.put_frame(joined):
                return
        chunk_bytes = 0
        for entry in chunk:
            text, nbytes = frames.encode(frames.message(entry))
            chunk_bytes += nbytes
            if not await conn.wait_for_space(nbytes, PACE_TIMEOUT_SECONDS):
                if conn.open:
                    logger.warning(
                        "connection %s (user %s) read none of its backlog for %.0f s; closing with 1013",
                        conn.id,
                        conn.user_id,
                        PACE_TIMEOUT_SECONDS,
                    )
                    conn.close(Close.TRY_AGAIN)
                return
            if state.members.get(conn) is not held:
                return
            if not conn.put(text, nbytes):
                return
        after = upto
        if chunk:
            # About one queue's worth per read: few round trips for small
            # messages, bounded memory for large ones.
            average = max(1, chunk_bytes // len(chunk))
            chunk_size = max(1, min(MAX_CHUNK, conn.max_messages, conn.max_bytes // average))
    if first and not conn.put_frame(joined):
        return
    # Hand the held live frames over: no await from here on, so nothing new is held meanwhile.
    state.members[conn] = None
    handed_over = list(held)
    release_held(conn, held)
    for text, nbytes in handed_over:
        if not conn.put(text, nbytes):
            break


def release_held(conn: Connection, held: list[tuple[str, int]] | None) -> None:
    """Stop counting ``held`` frames against ``conn``'s limits (they are dropped or were handed over)."""
    if held:
        conn.held_messages -= len(held)
        conn.held_bytes -= sum(n for _, n in held)
        held.clear()
    if conn.held_messages <= 0:
        conn.held_messages = conn.held_bytes = 0
