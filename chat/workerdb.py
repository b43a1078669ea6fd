"""The persistence worker's database thread: one batch per call, with Django's connection cleanup around it.

Database work runs on the worker's own executor thread (never the event loop,
never the async ORM's shared thread), so a slow batch stalls nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from django.db import connections

from chat import persistconflicts, services
from chat.dbconnection import release_connection
from chat.events import Entry

logger = logging.getLogger("kaiwa.worker")

DB_STATEMENT_TIMEOUT_MS = 30_000  # a batch statement that waits longer (a lock, a stuck server) is retried


def persist_batch(entries: Sequence[Entry]) -> int:
    # Runs on the worker's DB thread.
    release_connection()
    try:
        own = persistconflicts.keep_foreign_epochs(entries)
        written = services.message_bulk_persist(entries=own, statement_timeout_ms=DB_STATEMENT_TIMEOUT_MS)
        return written + len(entries) - len(own)  # the foreign ones are kept: done with, like the written ones
    finally:
        release_connection()


def close_db() -> None:
    connections.close_all()


def executor() -> ThreadPoolExecutor:
    """The worker's one database thread: a restarted database heals there (``release_connection``)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaiwa-worker-db")


async def shutdown(pool: ThreadPoolExecutor) -> None:
    """Close the thread's database connection (at most 5 s), then let the thread go."""
    try:
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(pool, close_db), timeout=5)
    except (Exception, asyncio.CancelledError):
        logger.debug("closing the worker's database connection failed", exc_info=True)
    pool.shutdown(wait=False)
