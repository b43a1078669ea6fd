"""The persistence worker: moves acknowledged messages from Redis into the database.

An ``ack`` means "this message will be in the database". The worker is what
keeps that promise, whatever fails:

* It is one consumer of the ``persist`` consumer group on every room stream
  (see ``chat.messagelog``). Every server process runs one (embedded, unless
  ``KAIWA_WORKER_EMBEDDED=0``) and ``manage.py chatworker`` runs one alone; all
  of them share the group, so each entry goes to one of them and adding
  processes adds throughput.
* It batches entries by size and time, writes each batch with ONE bulk insert
  that ignores rows already there (unique ``(room, seq)``), and acknowledges
  the entries to Redis only after the database committed. A crash between
  the commit and the acknowledgement replays the batch, which writes nothing
  twice.
* Entries a crashed consumer read but never acknowledged are claimed
  (XAUTOCLAIM) once idle for ``KAIWA_WORKER_CLAIM_IDLE_MS``.
* Database work runs on the worker's own thread (``chat.workerdb``). While the
  database is away, entries wait in Redis unacknowledged and the worker
  retries with backoff; streams are trimmed only below what is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat import metrics, persistconflicts, workerdb
from chat.backlogwatch import BacklogWatch
from chat.clusterlog import message_log
from chat.events import Entry
from chat.messagelog import MessageLog, PendingEntry
from chat.orphansweep import OrphanSweep
from chat.outage import BACKOFF_MAX_SECONDS, Outage
from chat.persistbatch import Batch, claim_idle
from chat.redisclient import make_async_client

logger = logging.getLogger("kaiwa.worker")

# How long one XREADGROUP waits when there is nothing to do. The first message
# of a new room is noticed within about this (the room count is checked
# before every read), so it reaches the database well within a second.
IDLE_BLOCK_MS = 250
ROOMS_REFRESH_SECONDS = 30.0  # full re-read of the room set, besides the count check
PRUNE_SECONDS = 600.0  # how often consumers of killed workers are removed from the group
# Only consumers holding no pending entry are removed (atomically), so even a
# live one that was idle in a quiet room loses nothing: its next read recreates it.
PRUNE_IDLE_MS = 3_600_000
READ_GRACE_SECONDS = 10.0


def consumer_name() -> str:
    """Unique per process and per start, so a restarted worker never takes over a dead one's name."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class WorkerStats:
    batches: int = 0
    entries: int = 0  # entries written (or found already written) and acknowledged
    claimed: int = 0  # entries taken over from other consumers
    skipped: int = 0  # entries of rooms deleted from the database
    conflicts: int = 0  # acked entries kept in UnstoredMessage (chat.persistconflicts), in this process


class Worker:
    """One persistence consumer. ``await run()`` until ``stop()``; or ``start()`` / ``await close()``.

    Options default to the ``KAIWA_WORKER_*`` settings, read when the worker
    is made.
    """

    def __init__(
        self,
        *,
        consumer: str | None = None,
        batch_size: int | None = None,
        batch_ms: int | None = None,
        claim_idle_ms: int | None = None,
        backlog_warn: int | None = None,
        stop_grace_seconds: float | None = None,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self.consumer = consumer or consumer_name()
        self.batch_size = batch_size or settings.KAIWA_WORKER_BATCH_SIZE
        self.batch_ms = settings.KAIWA_WORKER_BATCH_MS if batch_ms is None else batch_ms
        self.claim_idle_ms = claim_idle_ms or settings.KAIWA_WORKER_CLAIM_IDLE_MS
        self._backlog = BacklogWatch(backlog_warn or settings.KAIWA_WORKER_BACKLOG_WARN)
        self._orphans = OrphanSweep()  # unused uploads (protocol.md 7.3)
        self.stop_grace_seconds = (
            settings.KAIWA_SHUTDOWN_GRACE_SECONDS if stop_grace_seconds is None else stop_grace_seconds
        )
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._stop_deadline: float | None = None
        self._task: asyncio.Task[None] | None = None
        # XREADGROUP BLOCK gets a connection with no socket timeout of its own;
        # everything else goes through a client with timeouts (the server
        # process's pool when embedded), so a silent Redis cannot hang the worker.
        self._shared_client = redis
        self._client: aioredis.Redis | None = None
        self._reader_client: aioredis.Redis | None = None
        self._log: MessageLog | None = None
        self._reader: MessageLog | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._rooms: list[int] = []
        self._rooms_at = 0.0
        self._claim_at = 0.0
        self._prune_at = time.monotonic()
        self._db = Outage("database")
        self._redis = Outage("Redis")
        self._batch = Batch(size=self.batch_size, window_ms=self.batch_ms)
        self._caught_up = True

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """Run in the background of the current event loop (the embedded worker)."""
        self._task = asyncio.create_task(self.run(), name=f"kaiwa-worker {self.consumer}")
        return self._task

    def stop(self) -> None:
        """Ask for a clean stop: the current batch is written and acknowledged, then ``run`` returns.

        If the database stays unreachable for ``stop_grace_seconds``, the worker
        returns without acknowledging: the entries stay pending in Redis and
        another worker claims them.
        """
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + self.stop_grace_seconds
            self._stopping.set()

    async def close(self) -> None:
        """Stop and wait for the background task started by ``start()``."""
        self.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=self.stop_grace_seconds + 15)
            except TimeoutError:
                logger.error("persistence worker did not stop in time; cancelling it (its entries stay in Redis)")
                self._task.cancel()
            except RedisError as exc:
                logger.warning("persistence worker stopped on a Redis error (%r); its entries stay in Redis", exc)
            except Exception:
                logger.exception("persistence worker failed while stopping (its entries stay in Redis)")

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        self._reader_client = make_async_client(blocking_reads=True)
        self._client = self._shared_client or make_async_client()
        options = {"dedup_seconds": settings.KAIWA_DEDUP_SECONDS, "stream_keep": settings.KAIWA_STREAM_KEEP}
        self._log = message_log(self._client, **options)
        self._reader = message_log(self._reader_client, **options)
        self._executor = workerdb.executor()
        logger.info(
            "persistence worker started: consumer %s, batches of %d entries or %d ms",
            self.consumer,
            self.batch_size,
            self.batch_ms,
        )
        try:
            while not self.stopping:
                try:
                    await self._step()
                    self._redis.ok()
                except RedisError as exc:
                    await self._sleep(self._redis.failed(exc, "messages wait in Redis until it is back"))
                except Exception:
                    # A bug must not silently end persistence for this process.
                    logger.exception("persistence worker step failed; retrying in %.0f s", BACKOFF_MAX_SECONDS)
                    await self._sleep(BACKOFF_MAX_SECONDS)
            await self._flush()
            await self._forget_self()
        except asyncio.CancelledError:
            logger.warning("persistence worker cancelled; unacknowledged entries stay pending in Redis")
            raise
        finally:
            left = len(self._batch)
            if left:
                logger.warning(
                    "persistence worker stopping with %d entries not written (or written, not acknowledged); "
                    "they stay pending in Redis, another worker claims them after %d ms and writes each once",
                    left,
                    self.claim_idle_ms,
                )
            await self._shutdown_resources()
            logger.info(
                "persistence worker stopped: consumer %s, %d entries persisted in %d batches (%d claimed, %d skipped, "
                "%d conflicts kept)",
                self.consumer,
                self.stats.entries,
                self.stats.batches,
                self.stats.claimed,
                self.stats.skipped,
                self.stats.conflicts,
            )

    async def _forget_self(self) -> None:
        """Leave the group's consumer lists clean (only if nothing is held: the script checks)."""
        if self._batch or not self._rooms:
            return
        try:
            await self._require_log().persist_forget(room_ids=self._rooms, consumer=self.consumer)
        except RedisError as exc:
            logger.debug("could not remove consumer %s from the group: %s", self.consumer, exc)

    async def _shutdown_resources(self) -> None:
        if self._executor is not None:
            await workerdb.shutdown(self._executor)
        clients = [self._reader_client]
        if self._shared_client is None:
            clients.append(self._client)
        for client in clients:
            if client is not None:
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()

    # -- the loop ------------------------------------------------------------------

    async def _step(self) -> None:
        log = self._require_log()
        now = time.monotonic()
        if now - self._rooms_at >= ROOMS_REFRESH_SECONDS or await log.active_room_count() != len(self._rooms):
            self._rooms = await log.active_rooms()
            self._rooms_at = now
        if self._rooms and now - self._claim_at >= self._claim_interval():
            self._claim_at = now
            await self._claim()
        if self._backlog.due():
            await self._backlog.check(log, self._rooms)
        if self._orphans.due():
            await self._orphans.run()
        if self._rooms and now - self._prune_at >= PRUNE_SECONDS:
            self._prune_at = now
            idle_ms = max(PRUNE_IDLE_MS, 10 * self.claim_idle_ms)
            removed = await log.persist_forget(room_ids=self._rooms, min_idle_ms=idle_ms)
            if removed:
                logger.info("removed %d idle consumers (stopped workers) from the persist group", removed)

        if self._batch.full():
            await self._flush()
            return
        block: int | None
        if not self._batch:
            block = IDLE_BLOCK_MS
        else:
            remaining_ms = self._batch.remaining_ms()
            if remaining_ms > 0 and self._caught_up:
                # Let the window fill, then read what arrived in one go. (A blocking read
                # here returns as soon as one entry arrives: under a steady stream of
                # messages that was one XREADGROUP, and one step, per message.) A long
                # window is read every IDLE_BLOCK_MS, so a batch still flushes as soon as
                # it is full, and a stop request is noticed quickly.
                await self._sleep(min(remaining_ms, IDLE_BLOCK_MS) / 1000)
            block = None  # whatever is there, without waiting
        if not self._rooms:
            await self._sleep(IDLE_BLOCK_MS / 1000)
            return
        # XREADGROUP's COUNT applies to each stream: share the room left in the
        # batch among the rooms, so one read holds about one batch, not one per room.
        room_left = self.batch_size - len(self._batch)
        count = max(1, room_left // len(self._rooms))
        assert self._reader is not None
        read = self._reader.persist_read(
            consumer=self.consumer,
            room_ids=self._rooms,
            count=count,
            block_ms=block,
            slugs={},
        )
        limit = (block or 0) / 1000 + READ_GRACE_SECONDS
        try:
            # The reader has no socket timeout (a blocked read must not be
            # re-sent); this bounds a read that a dead connection never answers.
            got = await asyncio.wait_for(read, timeout=limit)
        except TimeoutError:
            raise RedisTimeoutError(f"no answer to XREADGROUP within {limit:.1f} s") from None
        # Every stream gave fewer than COUNT: all were read to their end (a backlog is read on
        # without pausing). COUNT applies per stream, so this is counted per stream.
        per_stream = Counter(item.stream for item in got)
        self._caught_up = all(n < count for n in per_stream.values())
        if got:
            self._batch.add(got)
            logger.debug("read %d entries, batch now %d", len(got), len(self._batch))
        if self._batch.full() or (self._batch and self._batch.remaining_ms() <= 0):
            await self._flush()

    def _claim_interval(self) -> float:
        return max(0.1, min(self.claim_idle_ms / 2000, 10.0))

    async def _claim(self) -> None:
        """Take over entries idle longer than ``claim_idle_ms`` (their consumer crashed or is stuck)."""
        sweep = claim_idle(
            self._require_log(),
            consumer=self.consumer,
            room_ids=list(self._rooms),
            min_idle_ms=self.claim_idle_ms,
            count=self.batch_size,
            stopping=lambda: self.stopping,
        )
        async for taken in sweep:
            for room_id, items in taken.items():
                fresh = [t for t in items if not self._batch.holds(t)]
                if fresh:
                    self.stats.claimed += len(fresh)
                    logger.info(
                        "claimed %d entries of room %d left unacknowledged by another consumer", len(fresh), room_id
                    )
                self._batch.add(items)
            if self._batch.full():
                await self._flush()

    # -- one batch -----------------------------------------------------------------

    async def _flush(self) -> None:
        """Write the batch, then acknowledge it, then trim its rooms."""
        if not self._batch:
            return
        items = self._batch.pending()
        entries = [item.entry for item in items]
        logger.debug("writing a batch of %d entries", len(entries))
        written = await self._write(entries)
        if written is None:
            return  # stopping while the database is away: leave them pending in Redis
        if not await self._ack(items):
            return  # written but not acknowledged: a replay writes nothing twice
        skipped = len(entries) - written
        if skipped:
            logger.warning("skipped %d entries of rooms deleted from the database", skipped)
        self.stats.batches += 1
        self.stats.entries += written
        self.stats.skipped += skipped
        conflicts = persistconflicts.recorded_count()
        metrics.unstored_recorded(conflicts - self.stats.conflicts)
        self.stats.conflicts = conflicts
        metrics.persisted(entries)
        rooms = sorted({item.entry.room_id for item in items})
        self._batch.clear()
        logger.debug("persisted a batch of %d entries (rooms %s)", written, rooms)
        try:
            await self._require_log().trim_rooms(rooms)
        except RedisError as exc:
            logger.debug("trimming rooms %s failed (their next batch trims them): %s", rooms, exc)

    async def _write(self, entries: list[Entry]) -> int | None:
        """One transaction, retried until it commits; None if stopping ran out of time first."""
        assert self._executor is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                written = await loop.run_in_executor(self._executor, workerdb.persist_batch, entries)
            except Exception as exc:
                # Any failure: an outage, a lock timeout, a row that raced with
                # a deletion. Nothing was committed; the entries stay pending.
                metrics.worker_write_failed()
                if self._past_stop_deadline():
                    return None
                delay = self._db.failed(exc, f"{len(entries)} entries wait in Redis, unacknowledged")
                await self._check_backlog_during_outage()
                await self._sleep(delay, until_stop=False)
                continue
            self._db.ok()
            return written

    async def _ack(self, items: list[PendingEntry]) -> bool:
        log = self._require_log()
        while True:
            try:
                await log.persist_ack(items)
            except (RedisError, OSError) as exc:
                if self._past_stop_deadline():
                    return False
                delay = self._redis.failed(exc, f"{len(items)} written entries wait for their acknowledgement")
                await self._sleep(delay, until_stop=False)
                continue
            self._redis.ok()
            return True

    async def _check_backlog_during_outage(self) -> None:
        if self._backlog.due():
            with contextlib.suppress(RedisError):
                await self._backlog.check(self._require_log(), self._rooms)

    def _past_stop_deadline(self) -> bool:
        return self._stop_deadline is not None and time.monotonic() >= self._stop_deadline

    async def _sleep(self, seconds: float, *, until_stop: bool = True) -> None:
        """Sleep; a stop request wakes it early (unless we are retrying a batch we must finish)."""
        if until_stop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
            return
        if self._stop_deadline is not None:
            seconds = max(0.0, min(seconds, self._stop_deadline - time.monotonic()))
        await asyncio.sleep(seconds)

    def _require_log(self) -> MessageLog:
        assert self._log is not None, "the worker is not running"
        return self._log
