"""The async ORM's thread, kept healthy.

Django runs every ``a*`` ORM call (``sync_to_async``) on one long-lived thread
outside any request, where it never calls ``close_old_connections()``: a
database connection that broke (a database restart) would stay broken for
the life of the process. Code of wsapp calls ``db_ready()`` before its
database work, or ``db_call()`` for both in one thread hop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import close_old_connections

T = TypeVar("T")


async def db_ready() -> None:
    await sync_to_async(close_old_connections)()


def _ready_then(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    close_old_connections()
    return fn(**kwargs)


_call_on_orm_thread = sync_to_async(_ready_then)


async def db_call(fn: Callable[..., T], /, **kwargs: Any) -> T:
    """``fn(**kwargs)`` on the ORM's thread after ``close_old_connections()``: one thread hop for both."""
    result: T = await _call_on_orm_thread(fn, kwargs)
    return result
