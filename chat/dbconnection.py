"""A long-lived thread's database connection: kept while it is healthy.

Django closes a request's connection when the request ends (``CONN_MAX_AGE``
is 0: under ASGI each request runs on a thread of its own, so a kept
connection would leak). Kaiwa's long-lived threads (the persistence worker's,
the async ORM's) call :func:`release_connection` around their work instead.
"""

from __future__ import annotations

from django.db import close_old_connections, connection


def release_connection() -> None:
    """Close this thread's database connection, unless it is a healthy SQLite one.

    Closing is what lets a long-lived thread survive a database restart: a
    broken connection is dropped (PostgreSQL: returned to the pool, which checks
    it on checkout). A SQLite connection is a file handle with no server to
    restart, and opening one costs a file open, three PRAGMAs and registering
    Django's SQL functions: per worker batch a measurable cost, and in a
    10,000-client reconnect storm 3.5% of the server's samples (py-spy;
    docs/architecture.md, "Measured reasons").
    """
    if connection.vendor == "sqlite":
        if connection.connection is not None and (connection.errors_occurred and not connection.is_usable()):
            connection.close()
        return
    close_old_connections()
