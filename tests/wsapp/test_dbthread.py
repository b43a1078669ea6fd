"""The async ORM's thread: its connection around each call."""

from __future__ import annotations

import asyncio

import pytest
from django.db import connection

from chat.models import Room
from wsapp.dbthread import db_call


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
