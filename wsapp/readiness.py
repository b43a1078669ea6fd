"""``GET /readyz``: may a load balancer send this process new sockets? (protocol.md 7.7)

Not ready (503, with the reasons) while Redis or the database does not
answer within ``KAIWA_READY_TIMEOUT_SECONDS``, while this process's pub/sub
connection is down, while the process is shutting down, or while the
persistence backlog is above ``KAIWA_READY_MAX_BACKLOG`` (or its oldest
message older than ``KAIWA_READY_MAX_LAG_SECONDS``, when that is set). The
backlog and the unstored-conflict count are also what ``/metrics`` shows,
read from Redis and the database, so every process reports the whole
server's figures wherever the worker runs.

Load balancers poll often: concurrent requests share one check in flight,
Redis and the database get one PING / ``SELECT 1`` per answer, and the
backlog (which reads every room's stream) is kept for ``BACKLOG_FRESH_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from django.conf import settings
from django.db import DatabaseError, connection

from chat import metrics
from chat.epochmodels import UnstoredMessage
from chat.messagelog import MessageLog

T = TypeVar("T")

# How long the backlog figure is reused: it reads every room's stream, and
# /readyz is polled every second or two by each load balancer.
BACKLOG_FRESH_SECONDS = 5.0


@dataclass
class Figure:
    """One cached check: its value (None: failed) and why it failed."""

    value: Any = None
    error: str = ""
    at: float = -1e9
    inflight: asyncio.Future[Any] | None = None


@dataclass
class Live:
    """What Redis and the database say now (None: could not be read)."""

    redis_ok: bool
    database_ok: bool
    backlog: int | None
    oldest_seconds: float | None
    unstored: int | None
    errors: dict[str, str] = field(default_factory=dict)


def _database_figures() -> int | None:
    """On the readiness thread: raises if the database does not answer; the unstored-conflict count."""
    try:
        connection.close_if_unusable_or_obsolete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        with contextlib.suppress(Exception):
            connection.close()
        raise
    try:
        return UnstoredMessage.objects.count()
    except DatabaseError:
        return None  # the table is missing (migrations not applied): the database itself answers


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Readiness:
    """The checks of one server process, with their cache."""

    def __init__(self, *, redis: aioredis.Redis, log: MessageLog, hub: Any = None) -> None:
        self.redis = redis
        self.log = log
        self.hub = hub
        self._figures: dict[str, Figure] = {}
        # One thread with one kept connection: a poll never opens a database connection of its own.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaiwa-readiness")
        self._db_job: asyncio.Future[int | None] | None = None

    def close(self) -> None:
        self._executor.submit(connection.close)
        self._executor.shutdown(wait=False)

    async def _cached(self, name: str, fresh: float, compute: Callable[[], Awaitable[T]]) -> Figure:
        figure = self._figures.setdefault(name, Figure())
        now = time.monotonic()
        if now - figure.at < fresh:
            return figure
        if figure.inflight is None:
            figure.inflight = asyncio.ensure_future(self._run(compute))
        inflight = figure.inflight
        value, error = await asyncio.shield(inflight)
        if figure.inflight is inflight:
            figure.inflight = None
            figure.value, figure.error, figure.at = value, error, time.monotonic()
        return figure

    async def _run(self, compute: Callable[[], Awaitable[T]]) -> tuple[T | None, str]:
        timeout = settings.KAIWA_READY_TIMEOUT_SECONDS
        try:
            async with asyncio.timeout(timeout):
                return await compute(), ""
        except TimeoutError:
            return None, f"no answer within {timeout:g} s (KAIWA_READY_TIMEOUT_SECONDS)"
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"

    async def _ping(self) -> float:
        started = time.perf_counter()
        await self.redis.ping()
        elapsed = time.perf_counter() - started
        metrics.redis_roundtrip(elapsed)
        return elapsed

    async def _backlog(self) -> tuple[int, float | None]:
        total, oldest_ms = await self.log.backlog(await self.log.active_rooms())
        return total, (None if oldest_ms is None else oldest_ms / 1000)

    async def _database(self) -> int | None:
        # A database that never answers holds the thread: later polls must not queue behind it.
        if self._db_job is not None and not self._db_job.done():
            raise TimeoutError("the previous check has not returned yet")
        loop = asyncio.get_running_loop()
        self._db_job = loop.run_in_executor(self._executor, _database_figures)
        self._db_job.add_done_callback(_retrieved)  # an answer after the timeout is dropped quietly
        return await asyncio.shield(self._db_job)

    async def live(self) -> Live:
        """Redis, the database and the backlog, looked at together (each from its cache when fresh)."""
        redis_f, db_f, backlog_f = await asyncio.gather(
            self._cached("redis", 0.0, self._ping),
            self._cached("database", 0.0, self._database),
            self._cached("backlog", BACKLOG_FRESH_SECONDS, self._backlog),
        )
        redis_ok = not redis_f.error
        backlog, oldest = backlog_f.value if not backlog_f.error else (None, None)
        errors = {
            name: f.error for name, f in (("redis", redis_f), ("database", db_f), ("backlog", backlog_f)) if f.error
        }
        return Live(
            redis_ok=redis_ok,
            database_ok=not db_f.error,
            backlog=backlog,
            oldest_seconds=oldest,
            unstored=None if db_f.error else db_f.value,
            errors=errors,
        )

    async def verdict(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the JSON body of /readyz)."""
        live = await self.live()
        hub = self.hub
        accepting = bool(hub is not None and hub.accepting)
        relay = bool(hub is not None and hub.relay.connected)
        found = reasons(live, accepting=accepting, relay_connected=relay)
        body: dict[str, Any] = {
            "status": "not_ready" if found else "ready",
            "reason": "; ".join(found),
            "reasons": found,
            "checks": {
                "redis": live.redis_ok,
                "database": live.database_ok,
                "relay": relay,
                "accepting": accepting,
                "backlog": live.backlog,
                "oldest_unstored_seconds": None if live.oldest_seconds is None else round(live.oldest_seconds, 3),
            },
        }
        return not found, body


def reasons(live: Live, *, accepting: bool, relay_connected: bool) -> list[str]:
    """Why this process should get no new sockets now (empty: ready), each saying what to look at."""
    found: list[str] = []
    if not accepting:
        found.append("shutting down: this process takes no new sockets")
    if not live.redis_ok:
        found.append(f"Redis unreachable ({live.errors.get('redis')})")
    elif not relay_connected:
        found.append("the pub/sub connection to Redis is down (reconnecting)")
    if not live.database_ok:
        found.append(f"database unreachable ({live.errors.get('database')})")
    limit = settings.KAIWA_READY_MAX_BACKLOG
    if live.backlog is None and live.redis_ok:
        found.append(f"persistence backlog unknown ({live.errors.get('backlog')})")
    elif live.backlog is not None and live.backlog > limit:
        found.append(
            f"persistence backlog {live.backlog} messages, above KAIWA_READY_MAX_BACKLOG={limit}: "
            "the worker is behind (add workers or check the database)"
        )
    max_lag = settings.KAIWA_READY_MAX_LAG_SECONDS
    if max_lag > 0 and live.oldest_seconds is not None and live.oldest_seconds > max_lag:
        found.append(
            f"oldest unstored message is {live.oldest_seconds:.1f} s old, above KAIWA_READY_MAX_LAG_SECONDS={max_lag:g}"
        )
    return found
