"""The session check of a handshake: one Redis read when cached, the database when not.

A session that passed Django's rules (the same ones ``django.contrib.auth.aget_user``
applies: the session exists and is unexpired, its backend is configured, the
backend returns the user, so ``is_active`` for ``ModelBackend``, and the
session auth hash matches ``SECRET_KEY`` or a ``SECRET_KEY_FALLBACKS`` one) is
remembered in Redis as one record holding the user's fields (never the
password hash). The next check of that session is one ``MGET`` on the event
loop, batched with the other checks of the same loop iteration: no thread, no
database. ``chat.authcache`` drops the record on every revocation (logout,
password change, deactivation, user or session deleted) and explains how a
check racing with a revocation cannot put it back.

A miss runs the check in a small pool of threads of its own
(``KAIWA_AUTH_DB_THREADS``) whose SQLite connections stay open between checks
(a PostgreSQL connection goes back to Django's pool after each).

When the database fails or does not answer within
``KAIWA_AUTH_DB_TIMEOUT_SECONDS``, a miss raises ``AuthUnavailable`` (and the
next misses do at once, for twice that long) instead of waiting: the caller
answers "try again later". Cached sessions keep connecting. While the event
loop itself is starved (a connect storm), the checks are starved with it and
get more time before the same verdict (``wsapp.stalljudge``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, router
from django.utils.crypto import constant_time_compare
from redis.exceptions import RedisError

from chat.authcache import REV_KEY, session_record_key, user_set_key
from chat.redistopology import make_async_client
from chat.scriptbatch import ScriptBatch
from wsapp import sessionrows
from wsapp.stalljudge import StallJudge

logger = logging.getLogger("kaiwa.auth")


class AuthUnavailable(DatabaseError):
    """The session is not cached and the database cannot say whether it is valid now."""


# KEYS: rev, record, user's record set  ARGV: rev read before the database, record, ttl
_WRITE = """
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('SADD', KEYS[3], KEYS[2])
if redis.call('TTL', KEYS[3]) < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
return 1
"""


# -- the record ---------------------------------------------------------------------------


def _cached_fields() -> list[Any]:
    return [f for f in get_user_model()._meta.concrete_fields if f.attname != "password"]


def _plain(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def encode_record(user: Any, expires: float) -> str:
    fields = {f.attname: f.value_from_object(user) for f in _cached_fields()}
    return json.dumps({"e": expires, "f": fields}, default=_plain, separators=(",", ":"))


def decode_record(raw: bytes) -> Any | None:
    """The user of a record, or None when it expired or no longer fits the user model."""
    try:
        data = json.loads(raw)
        if float(data["e"]) <= time.time():
            return None
        stored = data["f"]
        model = get_user_model()
        names, values = [], []
        for f in _cached_fields():
            names.append(f.attname)
            values.append(f.to_python(stored[f.attname]))
        if len(stored) != len(names):
            return None
        # The password stays deferred: read only if someone asks for it.
        return model.from_db(router.db_for_read(model), names, values)
    except (ValueError, KeyError, TypeError, ValidationError):
        return None


# -- the database check (in a thread) ------------------------------------------------------------


def check_in_db(session_key: str) -> tuple[Any | None, float]:
    """Django's rules against the database: (user or None, when the session expires as a timestamp)."""
    engine = import_module(settings.SESSION_ENGINE)
    store = engine.SessionStore(session_key=session_key)
    from_db = getattr(store, "_get_session_from_db", None)
    if from_db is not None:
        # The row, not the session cache: it carries the real expiry date.
        handled, row = sessionrows.session_row(store)
        if not handled:
            row = from_db()
        if row is None:
            return None, 0.0
        data = store.decode(row.session_data)
        expires = row.expire_date.timestamp()
    else:
        data = store.load()
        expires = time.time() + store.get_expiry_age()
    raw_id = data.get(SESSION_KEY)
    backend_path = data.get(BACKEND_SESSION_KEY)
    if raw_id is None or backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None, 0.0
    try:
        user_id = get_user_model()._meta.pk.to_python(raw_id)
    except ValidationError:
        return None, 0.0
    backend = load_backend(backend_path)
    handled, user = sessionrows.backend_user(backend, get_user_model(), user_id)
    if not handled:
        user = backend.get_user(user_id)
    if user is None:
        return None, 0.0
    if hasattr(user, "get_session_auth_hash"):
        # Read-only, unlike aget_user: a mismatch must not flush a session that
        # update_session_auth_hash is about to rewrite, and a fallback match
        # cannot cycle the key (a WebSocket cannot hand out the new cookie).
        session_hash = data.get(HASH_SESSION_KEY)
        if not session_hash:
            return None, 0.0
        if not constant_time_compare(session_hash, user.get_session_auth_hash()) and not any(
            constant_time_compare(session_hash, h) for h in user.get_session_auth_fallback_hash()
        ):
            return None, 0.0
    return user, expires


@dataclass(eq=False)
class _Job:
    session_key: str
    abandoned: bool = False


_running: dict[int, float] = {}  # id(job) -> when it started, written by the threads
_last_done = float("-inf")  # when a check last finished, whatever its answer
_failed_at = float("-inf")
_executor: ThreadPoolExecutor | None = None


def _run_job(job: _Job) -> tuple[Any | None, float]:
    global _last_done
    if job.abandoned:
        return None, 0.0
    _running[id(job)] = time.monotonic()
    try:
        return check_in_db(job.session_key)
    except DatabaseError:
        connection.close()  # the next check reconnects
        raise
    finally:
        _last_done = time.monotonic()
        _running.pop(id(job), None)
        if connection.vendor != "sqlite":
            connection.close()  # back to the pool


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=settings.KAIWA_AUTH_DB_THREADS, thread_name_prefix="kaiwa-auth")
    return _executor


# -- per event loop: the Redis client, the read batch, the stall watchdog ---------------------------


@dataclass(eq=False)
class _LoopState:
    client: Any  # redis.asyncio.Redis, or RedisCluster in cluster mode
    write: Any
    # A storm's cache writes go out as one pipeline per loop iteration: one by
    # one on the single connection, they queued past the pool's wait limit,
    # failed, and left those sessions to the database at the next reconnect.
    writes: ScriptBatch
    batch: dict[str, list[asyncio.Future[tuple[bytes | None, bytes | None]]]] = field(default_factory=dict)
    waiters: set[asyncio.Future[None]] = field(default_factory=set)
    watchdog: asyncio.Task[None] | None = None


_states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
_closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncIterator[None]] = weakref.WeakKeyDictionary()


async def _closer(client: Any) -> AsyncIterator[None]:
    # An async generator the loop finalises in shutdown_asyncgens() (asyncio.run,
    # asyncio.Runner, uvicorn): the client's connections close with their loop.
    try:
        yield
    finally:
        await client.aclose()


async def _state() -> _LoopState:
    loop = asyncio.get_running_loop()
    state = _states.get(loop)
    if state is None:
        # One connection: checks of a loop iteration share one MGET, so more
        # would only add sockets (the process's own pool is the hub's).
        client = make_async_client(pool_size=1)
        state = _LoopState(client=client, write=client.register_script(_WRITE), writes=ScriptBatch(client))
        _states[loop] = state
        closer = _closer(client)
        await closer.__anext__()
        _closers[loop] = closer
    return state


async def _flush(state: _LoopState) -> None:
    batch, state.batch = state.batch, {}
    keys = list(batch)
    try:
        values = await state.client.mget([*keys, REV_KEY])
    except (RedisError, OSError) as exc:
        logger.debug("auth cache read failed (%r); checking the database", exc)
        values = [None] * (len(keys) + 1)
    rev = _bytes(values[-1])
    for key, value in zip(keys, map(_bytes, values), strict=False):
        for fut in batch[key]:
            if not fut.done():
                fut.set_result((value, rev))


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


async def _cached(state: _LoopState, key: str) -> tuple[bytes | None, bytes | None]:
    """(record, auth revision): every check of one loop iteration shares one MGET."""
    fut: asyncio.Future[tuple[bytes | None, bytes | None]] = asyncio.get_running_loop().create_future()
    if not state.batch:
        asyncio.get_running_loop().create_task(_flush(state))
    state.batch.setdefault(key, []).append(fut)
    return await fut


async def _watch(state: _LoopState) -> None:
    global _failed_at
    judge = StallJudge(settings.KAIWA_AUTH_DB_TIMEOUT_SECONDS)
    try:
        while state.waiters:
            slept_at = time.monotonic()
            await asyncio.sleep(judge.period)
            now = time.monotonic()
            judge.woke(slept_at=slept_at, asked=judge.period, now=now)
            # Stuck, not busy: a check has run longer than the limit and none
            # finished meanwhile. In a connect storm the threads are slow but
            # keep finishing checks.
            running = list(_running.values())
            stuck_for = now - max(min(running), _last_done) if running else 0.0
            if judge.stuck(stuck_for=stuck_for, now=now):
                _failed_at = now
                for waiter in list(state.waiters):
                    if not waiter.done():
                        waiter.set_result(None)
    finally:
        state.watchdog = None


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _from_db(state: _LoopState, session_key: str) -> tuple[Any | None, float]:
    global _failed_at
    limit = settings.KAIWA_AUTH_DB_TIMEOUT_SECONDS
    if time.monotonic() - _failed_at < 2 * limit:
        raise AuthUnavailable("the database failed a moment ago")
    loop = asyncio.get_running_loop()
    job = _Job(session_key)
    fut = loop.run_in_executor(_pool(), _run_job, job)
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object) -> None:
        if not waiter.done():
            waiter.set_result(None)

    fut.add_done_callback(wake)
    state.waiters.add(waiter)
    if state.watchdog is None:
        state.watchdog = loop.create_task(_watch(state))
    try:
        await waiter
    finally:
        state.waiters.discard(waiter)
        if not fut.done():
            job.abandoned = True
            fut.add_done_callback(_consume)
    if not fut.done():
        raise AuthUnavailable(f"the database did not answer within {limit} s")
    try:
        return fut.result()
    except DatabaseError as exc:
        _failed_at = time.monotonic()
        raise AuthUnavailable(f"the database failed: {exc}") from exc


async def session_user(session_key: str | None) -> Any | None:
    """The active user of a session, or None; raises ``AuthUnavailable`` when it cannot tell."""
    if not session_key:
        return None
    state = await _state()
    key = session_record_key(session_key)
    raw, rev = await _cached(state, key)
    if raw is not None:
        user = decode_record(raw)
        if user is not None:
            return user
    user, expires = await _from_db(state, session_key)
    if user is None:
        return None
    ttl = int(min(settings.KAIWA_AUTH_CACHE_SECONDS, expires - time.time()))
    if ttl >= 1:
        try:
            await state.writes.call(
                state.write,
                [REV_KEY, key, user_set_key(user.pk)],
                [(rev or b"0").decode(), encode_record(user, expires), ttl],
            )
        except (RedisError, OSError) as exc:
            logger.debug("could not cache the auth of a session (%r)", exc)
    return user
