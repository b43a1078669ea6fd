"""Direct conversations (protocol.md 7.5): ``POST /api/dms`` opens the one with a user.

201 when this call created the conversation, 200 when it existed; both
answer ``{"room": {...}}`` in the room list's shape. The other person's
connections get ``room_added`` (``chat.signals``) when it is created.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from chat import dms, roomevents
from wsapp.api.deps import CurrentUser
from wsapp.api.errors import NOT_FOUND, ApiError, error_responses
from wsapp.api.models import Room

router = APIRouter(tags=["rooms"])


class DmRequest(BaseModel):
    # Django's username characters: anything else (a NUL, a space) names nobody, and is refused with 400.
    user: str = Field(min_length=1, max_length=150, pattern=r"^[\w.@+-]+$", description="The other person's username.")


class DmOpened(BaseModel):
    room: Room


@router.post(
    "/dms",
    status_code=201,
    response_model=DmOpened,
    response_model_exclude_none=True,
    responses={**error_responses(400, 404), 200: {"model": DmOpened, "description": "It existed already."}},
)
async def dm_open(body: DmRequest, user: CurrentUser, response: Response) -> DmOpened:
    """The direct conversation between the logged-in user and ``user``, created on first use."""
    try:
        room, created = await dms.adm_open(user=user, username=body.user)
    except dms.DmUserUnknown as exc:
        raise ApiError(404, NOT_FOUND, exc.messages[0]) from None
    if not created:
        response.status_code = 200
    data = await sync_to_async(roomevents.room_dict)(room)
    return DmOpened(room=Room.model_validate(data))
