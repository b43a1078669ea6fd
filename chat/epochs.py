"""Epochs (protocol.md 7.1): a room's Redis state is used only while it provably continues the database's history.

A room's Redis state (sequence counter, stream, dedup tokens) carries an
epoch: the key ``chat.logkeys.epoch_key`` holds it, and exists only while the
state is valid. The append script refuses to append unless the key holds the
epoch the calling process validated, so every append checks continuity for
the price of one GET, never a database query.

A process validates a room (``settle``) when it first needs it (the hub's
first subscription, or an append the script refused): the state continues
the history when Redis has an epoch, the database issued that epoch
(``RoomEpoch``; a Redis that belongs to another database, or a restored
database, fails this), and the counter is not below ``floor`` (the highest
stored seq, and every seq this process has seen: a Redis restored from an
older copy fails this). Otherwise the process seeds a new epoch:

1. it writes the epoch to the database first (so any process can check it);
2. it loads the dedup tokens of the room's recently stored messages into
   Redis, so a re-send whose ``client_id`` the database holds is acked with
   the stored message (this is the one database check of dedup: on the seed
   path, not per message);
3. a compare-and-set script (``chat.logscripts.SEED``) sets the counter to
   ``max(floor, counter)`` and the epoch, and publishes the change. Two
   processes seeding at once agree: the loser finds the winner's epoch,
   which the database holds, and adopts it.

``MessageLog`` and its twin ``MemoryLog`` both run ``settle`` below over their
own primitives (``SeedableLog``), so the rules are the same code.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from redis.exceptions import RedisError

logger = logging.getLogger("kaiwa.epochs")

SETTLE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class EpochState:
    """A room's validated epoch, its latest assigned seq at that moment, and the seq it started above."""

    epoch: str
    last: int
    base: int


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A stored message's dedup token: its sender, ``client_id``, seq and acceptance time."""

    user_id: int
    client_id: str
    seq: int
    ts_ms: int


class EpochUnsettled(RedisError):
    """Other processes kept re-seeding the room while this one tried: answered ``unavailable``."""


class EpochStore(Protocol):
    """What the database knows of a room's epochs (``DatabaseEpochs``; ``MemoryEpochs`` for in-process tests)."""

    async def max_seq(self, *, room_id: int) -> int: ...

    async def base(self, *, room_id: int, epoch: str) -> int | None:
        """The seq the epoch started above, or None if this database never issued it."""
        ...

    async def issue(self, *, room_id: int, epoch: str, base: int) -> None: ...

    async def recent_tokens(self, *, room_id: int, seconds: int) -> Sequence[StoredToken]: ...


class SeedableLog(Protocol):
    """The primitives ``settle`` needs of a log (Redis or in memory)."""

    dedup_seconds: int

    async def room_state(self, room_id: int) -> tuple[str | None, int | None]: ...

    async def preload_dedup(self, room_id: int, tokens: Sequence[StoredToken]) -> None: ...

    async def seed(self, *, room_id: int, slug: str, found: str, new: str, floor: int) -> tuple[bool, str, int]: ...

    def adopt(self, room_id: int, epoch: str) -> None: ...


def new_epoch() -> str:
    return secrets.token_hex(8)


def dedup_ttl(token: StoredToken, dedup_seconds: int, now_ms: int) -> int:
    """Seconds left of a stored message's dedup window (at least 1)."""
    return max(1, dedup_seconds - max(0, now_ms - token.ts_ms) // 1000)


async def settle(log: SeedableLog, store: EpochStore, *, room_id: int, slug: str, floor: int) -> EpochState:
    """The room's valid epoch: the current one if it continues the history, else a newly seeded one.

    ``floor``: the highest seq the calling process has seen (the highest stored one is added here).
    """
    floor = max(floor, await store.max_seq(room_id=room_id))
    for _ in range(SETTLE_ATTEMPTS):
        found, last = await log.room_state(room_id)
        base = None
        if found is not None and last is not None and last >= floor:
            base = await store.base(room_id=room_id, epoch=found)
        if found is not None and last is not None and base is not None:
            log.adopt(room_id, found)
            return EpochState(found, last, base)
        epoch = new_epoch()
        base = max(floor, last or 0)
        await store.issue(room_id=room_id, epoch=epoch, base=base)
        await log.preload_dedup(room_id, await store.recent_tokens(room_id=room_id, seconds=log.dedup_seconds))
        seeded, current, current_last = await log.seed(
            room_id=room_id, slug=slug, found=found or "", new=epoch, floor=base
        )
        if seeded:
            from chat import metrics

            # A room Redis never had, with nothing stored or seen: its first epoch, no change to report.
            first = found is None and last is None and floor == 0
            if not first:
                metrics.epoch_changed()
            logger.log(
                logging.INFO if first else logging.WARNING,
                "room %s: new epoch %s above seq %s (Redis had epoch %s, seq %s; the floor was %s)",
                slug,
                current,
                current_last,
                found or "none",
                last,
                floor,
            )
            log.adopt(room_id, current)
            return EpochState(current, current_last, current_last)
        # Another process changed the epoch first: check its epoch on the next round.
    raise EpochUnsettled(f"room {slug}: its epoch kept changing while this process validated it; try again")


class DatabaseEpochs:
    """The ``EpochStore`` on the database (``RoomEpoch`` rows, stored messages' ``client_id``s).

    ``prepare`` runs before each use (the server passes ``wsapp.dbthread.db_ready``: Django's
    connection cleanup on the async ORM's thread, which a long-lived process must do itself).
    """

    def __init__(self, prepare: Callable[[], Awaitable[None]] | None = None) -> None:
        self.prepare = prepare

    async def max_seq(self, *, room_id: int) -> int:
        from chat.selectors import amessage_max_seq

        if self.prepare is not None:
            await self.prepare()
        return await amessage_max_seq(room_id=room_id)

    async def base(self, *, room_id: int, epoch: str) -> int | None:
        from chat.epochmodels import RoomEpoch

        if self.prepare is not None:
            await self.prepare()
        row = await RoomEpoch.objects.filter(room_id=room_id, epoch=epoch).values_list("base_seq", flat=True).afirst()
        return None if row is None else int(row)

    async def issue(self, *, room_id: int, epoch: str, base: int) -> None:
        from chat.epochmodels import RoomEpoch

        await RoomEpoch.objects.acreate(room_id=room_id, epoch=epoch, base_seq=base)

    async def recent_tokens(self, *, room_id: int, seconds: int) -> Sequence[StoredToken]:
        from django.utils import timezone

        from chat.events import ts_ms_of
        from chat.models import Message

        since = timezone.now() - timedelta(seconds=seconds)
        rows = (
            Message.objects.filter(room_id=room_id, created_at__gte=since, author__isnull=False)
            .exclude(client_id="")
            .values_list("author_id", "client_id", "seq", "created_at")
        )
        return [StoredToken(int(a), c, s, ts_ms_of(t)) async for a, c, s, t in rows]


@dataclass
class MemoryEpochs:
    """The ``EpochStore`` in memory, for in-process tests; ``stored`` plays the database's messages."""

    epochs: dict[int, list[tuple[str, int]]] = field(default_factory=dict)
    stored: dict[int, list[StoredToken]] = field(default_factory=dict)
    max_stored: dict[int, int] = field(default_factory=dict)

    async def max_seq(self, *, room_id: int) -> int:
        return self.max_stored.get(room_id, 0)

    async def base(self, *, room_id: int, epoch: str) -> int | None:
        return next((b for e, b in self.epochs.get(room_id, []) if e == epoch), None)

    async def issue(self, *, room_id: int, epoch: str, base: int) -> None:
        self.epochs.setdefault(room_id, []).append((epoch, base))

    async def recent_tokens(self, *, room_id: int, seconds: int) -> Sequence[StoredToken]:
        since = int(time.time() * 1000) - seconds * 1000
        return [t for t in self.stored.get(room_id, []) if t.ts_ms >= since]
