"""The rooms a user may see, and a room's stored history (protocol.md section 5).

These two routes are the version 1 read API: their answers, refusals
included, keep the JSON they had when Django served them (``V1ErrorRoute``).
"""

from __future__ import annotations

from typing import Annotated, Any

from asgiref.sync import sync_to_async
from fastapi import APIRouter, Depends, Query, Request

from chat import paging, roomevents, selectors
from chat.models import Room as RoomRow
from wsapp.api.deps import CurrentUser
from wsapp.api.errors import BAD_REQUEST, NOT_FOUND, ApiError, V1ErrorRoute, error_responses
from wsapp.api.models import MemberList, Message, MessagePage, Room, RoomList, User

router = APIRouter(route_class=V1ErrorRoute, tags=["rooms"], responses=error_responses(403, "4XX", v1=True))


@router.get("/rooms/", response_model=RoomList, response_model_exclude_none=True)
async def room_list(user: CurrentUser) -> RoomList:
    """The rooms the user may see (public ones and private ones they belong to), with their last stored seq."""
    rooms = await sync_to_async(selectors.room_list_for_user)(user=user)
    # last_seq is the database's: the live sequence (Redis) may be ahead until
    # the worker has stored the newest messages; a client closes that gap by
    # joining with since=last_seq.
    dicts = await sync_to_async(roomevents.room_dicts)(rooms)
    return RoomList(rooms=[Room.model_validate(d) for d in dicts])


@router.get("/rooms/{slug}/members", response_model=MemberList, responses=error_responses(404, v1=True))
async def member_list(slug: str, user: CurrentUser) -> MemberList:
    """Who is in a room and what the user may do there: what the page needs when it opens the room in place.

    ``members``: a private room's (or direct conversation's) members, for the
    people panel; a public room has none. ``mentionable``, ``moderator`` and
    ``can_manage`` are what the room page embeds for the room it was loaded
    for (``chat.views``).
    """
    room = await selectors.aroom_get_for_user(user=user, slug=slug)
    if room is None:
        raise ApiError(
            404, NOT_FOUND, f"No room {slug!r} that you can see. Check the address; private rooms need an invitation."
        )
    users, mentionable = await sync_to_async(_members_and_mentionable)(room)
    return MemberList(
        members=[User(id=u.pk, username=u.get_username()) for u in users],
        mentionable=[User.model_validate(u) for u in mentionable],
        **selectors.room_rights(room=room, user=user),
    )


def _members_and_mentionable(room: RoomRow) -> tuple[list[Any], list[dict[str, Any]]]:
    # Both reads in one thread hop: the answer needs both.
    return (selectors.room_members(room=room) if room.private else []), selectors.room_mentionable(room=room)


def strict_paging(request: Request) -> None:
    """``before`` and ``limit`` exactly as the room page reads them: plain digits, given at most once.

    The typed parameters of the route describe them in the schema; this check
    runs first and refuses what they would let through ("+5", " 5", a
    repeated parameter) with the words of ``chat.paging``.
    """
    try:
        paging.parse_before(request.query_params)
        paging.parse_limit(request.query_params)
    except paging.BadParameter as exc:
        raise ApiError(400, BAD_REQUEST, str(exc)) from None


@router.get(
    "/rooms/{slug}/messages",
    response_model=MessagePage,
    dependencies=[Depends(strict_paging)],
    responses=error_responses(400, 404, v1=True),
)
async def message_list(
    slug: str,
    user: CurrentUser,
    before: Annotated[int | None, Query(ge=1, le=paging.MAX_SEQ, description=paging.BEFORE_HINT)] = None,
    limit: Annotated[int, Query(ge=1, le=paging.MAX_LIMIT, description=paging.LIMIT_HINT)] = paging.DEFAULT_LIMIT,
) -> MessagePage:
    """The latest ``limit`` stored messages with ``seq < before`` (all without ``before``), oldest first."""
    room = await selectors.aroom_get_for_user(user=user, slug=slug)
    if room is None:
        raise ApiError(
            404, NOT_FOUND, f"No room {slug!r} that you can see. Check the address; private rooms need an invitation."
        )
    messages, has_more = await sync_to_async(selectors.message_page)(room=room, before=before, limit=limit)
    return MessagePage(
        messages=[Message.model_validate(selectors.message_frame(m, slug=room.slug)) for m in messages],
        has_more=has_more,
    )
