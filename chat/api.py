"""The JSON history API (protocol.md section 5).

* ``GET /api/rooms/``: the rooms the user may see, with the last stored seq.
* ``GET /api/rooms/<slug>/messages?before=&limit=``: a page of stored history.

Errors are JSON ``{"error": "<what went wrong and how to fix it>"}``: 403 for
an anonymous request (never a redirect to the login page: API clients cannot
follow it), 404 for a room the user may not see (unknown and private rooms are
indistinguishable), 400 for a bad parameter, 405 for a method other than GET.
Unknown query parameters are ignored, as unknown frame fields are on the socket.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict

from chat import selectors

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
# seq is a signed 64-bit integer in the database.
MAX_SEQ = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


class BadParameter(ValueError):
    """A query parameter is missing its shape; the message says how to fix it."""


def json_error(status: int, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for name, value in headers.items():
        response.headers[name] = value
    return response


def parse_int_param(
    query: QueryDict, name: str, *, minimum: int, maximum: int, default: int | None, hint: str
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


def parse_before(query: QueryDict) -> int | None:
    return parse_int_param(
        query,
        "before",
        minimum=1,
        maximum=MAX_SEQ,
        default=None,
        hint="use a seq of 1 or more (the oldest seq you have), or leave 'before' out for the latest messages.",
    )


def parse_limit(query: QueryDict) -> int:
    value = parse_int_param(
        query,
        "limit",
        minimum=1,
        maximum=MAX_LIMIT,
        default=DEFAULT_LIMIT,
        hint=f"use 1 to {MAX_LIMIT}, or leave 'limit' out for {DEFAULT_LIMIT}.",
    )
    assert value is not None
    return value


ApiView = Callable[..., HttpResponse]


def api_view(view: ApiView) -> ApiView:
    """GET only, logged-in users only, answers never cached by shared caches."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return json_error(405, f"{request.method} is not allowed here: use GET.", Allow="GET, HEAD")
        if not request.user.is_authenticated:
            response: HttpResponse = json_error(
                403,
                "You are not logged in. Log in at /accounts/login/ and send the session cookie with the request.",
            )
        else:
            response = view(request, *args, **kwargs)
        response.headers["Cache-Control"] = "private, no-store"
        return response

    return wrapper


@api_view
def room_list(request: HttpRequest) -> HttpResponse:
    rooms = selectors.room_list_for_user(user=request.user)
    # last_seq is the highest seq in the database. The live sequence (Redis)
    # may be ahead until the worker has persisted the newest messages; a
    # client closes that gap by joining with since=last_seq.
    last = selectors.room_last_seqs(room_ids=[room.pk for room in rooms])
    return JsonResponse(
        {
            "rooms": [
                {"slug": room.slug, "name": room.name, "private": room.private, "last_seq": last.get(room.pk, 0)}
                for room in rooms
            ]
        }
    )


@api_view
def message_list(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        before = parse_before(request.GET)
        limit = parse_limit(request.GET)
    except BadParameter as exc:
        return json_error(400, str(exc))
    room = selectors.room_get_for_user(user=request.user, slug=slug)
    if room is None:
        return json_error(
            404, f"No room {slug!r} that you can see. Check the address; private rooms need an invitation."
        )
    messages, has_more = selectors.message_page(room=room, before=before, limit=limit)
    return JsonResponse(
        {"messages": [selectors.message_frame(m, slug=room.slug) for m in messages], "has_more": has_more}
    )


def not_found(request: HttpRequest, rest: str) -> HttpResponse:
    """Any other path under /api/: a JSON 404 that lists the endpoints."""
    return json_error(
        404,
        f"No API endpoint at {request.path!r}. The endpoints are GET /api/rooms/ and "
        "GET /api/rooms/<slug>/messages?before=<seq>&limit=<1..100>.",
    )
