"""The async ORM's thread, kept healthy.

Django runs every ``a*`` ORM call (``sync_to_async``) on one long-lived thread
outside any request, where it never calls ``close_old_connections()``: a
database connection that broke (a database restart) would stay broken for
the life of the process. Code of wsapp calls ``db_ready()`` before its
database work, or ``db_call()`` for both in one thread hop.

Around each call the thread's connection is released the way the
persistence worker's is (``chat.dbconnection``): a healthy SQLite connection
is kept from call to call, anything else is closed as Django would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import DatabaseError

from chat.dbconnection import release_connection
from wsapp.stalljudge import StallJudge

T = TypeVar("T")


async def db_ready() -> None:
    await sync_to_async(release_connection)()


class DatabaseStuck(DatabaseError):
    """The ORM's thread finished no call for the limit: the database does not answer."""


_last_done = float("-inf")  # when a db_call last finished on the ORM's thread (written there)


def _ready_then(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    global _last_done
    try:
        release_connection()
        return fn(**kwargs)
    finally:
        _last_done = time.monotonic()


_call_on_orm_thread = sync_to_async(_ready_then)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def db_call(fn: Callable[..., T], /, *, stuck_after: float | None = None, **kwargs: Any) -> T:
    """``fn(**kwargs)`` on the ORM's thread after ``release_connection()``: one thread hop for both.

    ``stuck_after``: raise ``DatabaseStuck`` once the thread has finished no
    call for that long (a database that hangs), rather than wait behind it.
    A queue of calls that keep finishing (a connect storm) is busy, not stuck,
    and so is a thread that could not run because the loop starved it
    (``wsapp.stalljudge``).
    """
    call = asyncio.ensure_future(_call_on_orm_thread(fn, kwargs))
    if stuck_after is None:
        result: T = await call
        return result
    judge = StallJudge(stuck_after)
    waiting_since = time.monotonic()
    try:
        while True:
            slept_at = time.monotonic()
            # One wake-up per limit while nothing is wrong: a storm queues many calls here.
            asked = max(judge.period, stuck_after - (slept_at - max(_last_done, waiting_since)))
            done, _ = await asyncio.wait({call}, timeout=asked)
            if done:
                result = call.result()
                return result
            now = time.monotonic()
            judge.woke(slept_at=slept_at, asked=asked, now=now)
            if judge.stuck(stuck_for=now - max(_last_done, waiting_since), now=now):
                raise DatabaseStuck(f"the database did not answer within {stuck_after} s")
    finally:
        if not call.done():
            call.add_done_callback(_consume)
