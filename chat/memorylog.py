"""``MemoryLog``: the message log's in-memory twin (the ``chat.messagelog.Log`` protocol).

It keeps the append script's rules (``chat.logscripts.APPEND``), in the same
order: the room's epoch must be the one this log validated (``chat.epochs``:
the same ``settle`` code as ``MessageLog``, over this twin's seed); a
duplicate ``client_id`` within the dedup window answers the original seq and
takes no rate token; a room without a validated epoch needs a floor; the
sender's token bucket refills by elapsed time; the seq is the room's next;
the message is kept by seq and published (through a ``MemoryBroker``) in the
same step, so publish order is seq order. For fast in-process tests of the
hub; the Redis log is tested against a real Redis.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chat import epochs
from chat.events import Entry, epoch_event, message_event
from chat.logkeys import channel
from chat.memorybroker import MemoryBroker
from chat.messagelog import (
    AppendResult,
    FloorNeeded,
    RateLimit,
    RateLimited,
    TargetGone,
    append_guard,
    blank_deleted,
)


class MemoryLog:
    def __init__(
        self,
        broker: MemoryBroker,
        *,
        dedup_seconds: int = 600,
        clock: Callable[[], float] = time.time,
        epoch_store: epochs.EpochStore | None = None,
    ) -> None:
        self.broker = broker
        self.dedup_seconds = dedup_seconds
        self.epoch_store: epochs.EpochStore = epoch_store or epochs.MemoryEpochs()
        self.epoch_keys: dict[int, str] = {}  # the "Redis" epoch key of each room
        self._epochs: dict[int, str] = {}  # room -> the epoch this process validated
        self.clock = clock  # seconds; the log's "Redis clock"
        self.seqs: dict[int, int] = {}
        self.streams: dict[int, dict[int, Entry]] = {}
        self._dedup: dict[tuple[int, int, str], tuple[int, int, float]] = {}  # -> seq, ts, expiry
        self._buckets: dict[int, tuple[float, int]] = {}  # user -> tokens, ts_ms
        self.gone: dict[int, set[int]] = {}  # room -> deleted message seqs (the script's "gone" set)

    def lose_data(self) -> None:
        """Forget everything, as a Redis without persistence that restarted."""
        self.seqs.clear()
        self.streams.clear()
        self.epoch_keys.clear()
        self._dedup.clear()
        self._buckets.clear()
        self.gone.clear()

    async def append(
        self,
        *,
        room_id: int,
        slug: str,
        user_id: int,
        username: str,
        body: str,
        client_id: str | None,
        token: str,
        token_seconds: int | None = None,
        floor: int | None = None,
        known_last: int = 0,
        rate: RateLimit | None = None,
        attachments: Sequence[Mapping[str, Any]] = (),
        op: str = "",
        target: int | None = None,
        reply_to: int | None = None,
        mentions: Sequence[int] = (),
    ) -> AppendResult:
        if floor is not None:
            await self.settle(room_id=room_id, slug=slug, floor=floor)
        epoch = self._epochs.get(room_id)
        if epoch is None or self.epoch_keys.get(room_id) != epoch or self.seqs.get(room_id, -1) < known_last:
            self._epochs.pop(room_id, None)
            raise FloorNeeded(room_id)
        now = self.clock()
        dedup = (room_id, user_id, token)
        seen = self._dedup.get(dedup)
        if seen is not None and seen[2] > now:
            return AppendResult(seq=seen[0], ts_ms=seen[1], duplicate=True)
        guard, guarded = append_guard(op=op, target=target, reply_to=reply_to)
        if guard and int(guarded) in self.gone.get(room_id, set()):
            raise TargetGone(int(guarded))
        ts = int(now * 1000)
        if rate is not None:
            self._take_token(user_id, ts, rate)
        seq = self.seqs[room_id] + 1
        self.seqs[room_id] = seq
        entry = Entry(
            room_id=room_id, room=slug, seq=seq, ts_ms=ts, epoch=epoch,
            user_id=user_id, username=username, body=body,
            client_id=client_id, attachments=tuple(dict(a) for a in attachments), op=op, target=target,
            reply_to=reply_to, mentions=tuple(mentions),
        )  # fmt: skip
        self.streams.setdefault(room_id, {})[seq] = entry
        if guard == "take":
            self.gone.setdefault(room_id, set()).add(int(guarded))
        self._dedup[dedup] = (seq, ts, now + (token_seconds or self.dedup_seconds))
        self.broker.publish(channel(room_id), message_event(entry))
        return AppendResult(seq=seq, ts_ms=ts, duplicate=False)

    def _take_token(self, user_id: int, ts: int, rate: RateLimit) -> None:
        per_ms = rate.per_second / 1000
        tokens, last = self._buckets.get(user_id, (float(rate.burst), ts))
        tokens = min(rate.burst, tokens + max(0, ts - last) * per_ms)
        wait = 0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = math.ceil((1 - tokens) / per_ms)
        self._buckets[user_id] = (tokens, ts)
        if wait > 0:
            raise RateLimited(max(1, wait))

    async def last_seq(self, room_id: int) -> int | None:
        return self.seqs.get(room_id)

    # -- epochs: the primitives chat.epochs.settle runs over, as MessageLog's ---------

    async def settle(self, *, room_id: int, slug: str, floor: int) -> epochs.EpochState:
        return await epochs.settle(self, self.epoch_store, room_id=room_id, slug=slug, floor=floor)

    async def room_state(self, room_id: int) -> tuple[str | None, int | None]:
        return self.epoch_keys.get(room_id), self.seqs.get(room_id)

    async def preload_dedup(self, room_id: int, tokens: Sequence[epochs.StoredToken]) -> None:
        now = self.clock()
        for t in tokens:
            key = (room_id, t.user_id, t.client_id)
            seen = self._dedup.get(key)
            if seen is None or seen[2] <= now:
                ttl = epochs.dedup_ttl(t, self.dedup_seconds, int(now * 1000))
                self._dedup[key] = (t.seq, t.ts_ms, now + ttl)

    async def seed(self, *, room_id: int, slug: str, found: str, new: str, floor: int) -> tuple[bool, str, int]:
        current = self.epoch_keys.get(room_id, "")
        if current != found:
            return False, current, self.seqs.get(room_id, 0)
        base = max(floor, self.seqs.get(room_id, 0))
        self.seqs[room_id] = base
        self.epoch_keys[room_id] = new
        self.broker.publish(channel(room_id), epoch_event(room_id=room_id, slug=slug, epoch=new, base=base))
        return True, new, base

    def adopt(self, room_id: int, epoch: str) -> None:
        self._epochs[room_id] = epoch

    async def read_range(self, *, room_id: int, slug: str | None, after: int, upto: int | None = None) -> list[Entry]:
        stream = self.streams.get(room_id, {})
        end = self.seqs.get(room_id, 0) if upto is None else upto
        found = [dataclasses.replace(stream[s], room=slug) for s in range(after + 1, end + 1) if s in stream]
        return blank_deleted(found, self.gone.get(room_id, set()))
