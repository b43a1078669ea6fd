"""The async ORM's thread, kept healthy.

Django runs every ``a*`` ORM call (``sync_to_async``) on one long-lived thread
outside any request, where it never calls ``close_old_connections()``: a
database connection that broke (a database restart) would stay broken for
the life of the process. Code of wsapp calls ``db_ready()`` before its
database work.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.db import close_old_connections


async def db_ready() -> None:
    await sync_to_async(close_old_connections)()
