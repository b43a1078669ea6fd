"""The history paging parameters, ``before`` and ``limit`` (protocol.md section 5).

Parsed here once for the room page (``?before=``) and the JSON API
(``wsapp/api/rooms.py``), so both refuse the same values with the same words.
"""

from __future__ import annotations

import re
from typing import Protocol

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
# seq is a signed 64-bit integer in the database.
MAX_SEQ = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")

BEFORE_HINT = "use a seq of 1 or more (the oldest seq you have), or leave 'before' out for the latest messages."
LIMIT_HINT = f"use 1 to {MAX_LIMIT}, or leave 'limit' out for {DEFAULT_LIMIT}."


class Query(Protocol):
    """A parsed query string: Django's ``QueryDict`` and Starlette's ``QueryParams`` both fit."""

    def getlist(self, key: str) -> list[str]: ...


class BadParameter(ValueError):
    """A query parameter is missing its shape; the message says how to fix it."""


def parse_int_param(
    query: Query, name: str, *, minimum: int, maximum: int, default: int | None, hint: str
) -> int | None:
    """One optional whole-number query parameter, or ``BadParameter``.

    Only plain ASCII digits are accepted ("+5", " 5", "5.0", "1e3" and non-ASCII
    digits are refused), and the parameter may appear at most once.
    """
    values = query.getlist(name)
    if not values:
        return default
    if len(values) > 1:
        raise BadParameter(f"'{name}' was given {len(values)} times; give it at most once.")
    raw = values[0]
    if not _DIGITS.fullmatch(raw):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        if raw == "":
            raise BadParameter(f"'{name}' is empty; {hint}")
        raise BadParameter(f"'{name}' must be a whole number, got {shown!r}; {hint}")
    value = int(raw)
    if value < minimum or value > maximum:
        raise BadParameter(f"'{name}' is {value}, out of range; {hint}")
    return value


def parse_before(query: Query) -> int | None:
    return parse_int_param(query, "before", minimum=1, maximum=MAX_SEQ, default=None, hint=BEFORE_HINT)


def parse_limit(query: Query) -> int:
    value = parse_int_param(query, "limit", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT, hint=LIMIT_HINT)
    assert value is not None
    return value
