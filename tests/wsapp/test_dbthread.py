"""The async ORM's thread: its connection around each call."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.db import connection

from chat.models import Room
from wsapp.dbthread import db_call

TIMEOUT = 10.0


def _connection_at_start_and_after_a_query() -> tuple[int | None, int]:
    at_start = None if connection.connection is None else id(connection.connection)
    Room.objects.filter(slug="nowhere").exists()
    return at_start, id(connection.connection)


@pytest.mark.django_db(transaction=True)
def test_sqlite_keeps_its_connection_and_postgresql_returns_it_between_calls():
    """SQLite: the second call finds the connection the first one opened (no file open, no PRAGMAs per call).
    PostgreSQL: each call starts without one (it went back to the pool, which checks it on checkout)."""

    async def two_calls() -> list[tuple[int | None, int]]:
        return [await db_call(_connection_at_start_and_after_a_query) for _ in range(2)]

    (_, first), (second_at_start, _) = asyncio.run(asyncio.wait_for(two_calls(), 10))
    if connection.vendor == "sqlite":
        assert second_at_start == first
    else:
        assert second_at_start is None


@pytest.mark.django_db(transaction=True)
def test_a_call_starved_with_its_event_loop_is_waited_for_not_called_stuck():
    """The loop blocked past the limit while a call runs (a garbage collection, a storm holding the GIL): once
    the loop runs again the call gets a whole limit of responsive time and its answer is used; no DatabaseStuck
    (a healthy SQLite refused joins with unavailable that way)."""
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(TIMEOUT)
        return "answer"

    async def starved() -> str:
        async with asyncio.timeout(TIMEOUT):
            call = asyncio.ensure_future(db_call(slow, stuck_after=0.4))
            await asyncio.to_thread(started.wait, TIMEOUT)
            time.sleep(3 * 0.4)  # noqa: ASYNC251 - the load under test: a loop that runs nothing else
            await asyncio.sleep(0.4 / 2)  # the watcher wakes late, then runs on time
            release.set()
            return await call

    assert asyncio.run(starved()) == "answer"
