"""The API's answers as pydantic models: what ``/api/openapi.json`` publishes.

Every route declares its answer with one of these and its refusals with the
error bodies below, so the schema and the wire cannot drift apart.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class User(BaseModel):
    id: int
    username: str


class Room(BaseModel):
    slug: str
    name: str
    private: bool
    last_seq: int = Field(
        description="The highest stored seq (0: none). The live stream may be ahead by the worker's delay."
    )
    kind: Literal["room", "dm"] = Field("room", description='"dm": a direct conversation (protocol.md 7.5).')
    members: list[User] | None = Field(
        None, description="A direct conversation's two members (one, for a conversation with oneself)."
    )


class RoomList(BaseModel):
    rooms: list[Room] = Field(description="Every room the user may see, by name.")


class MemberList(BaseModel):
    members: list[User] = Field(description="A private room's members by username; empty for a public room.")
    mentionable: list[User] = Field(
        description="Who the composer's \"@\" offers: a private room's members, or a public room's latest authors."
    )
    moderator: bool = Field(description="The user may delete anyone's message here (staff, or the room's creator).")
    can_manage: bool = Field(description="The user manages this private room's members (its creator).")


class Message(BaseModel):
    """A stored message, in the shape of the WebSocket ``message`` frame (protocol.md section 2)."""

    # Fields later contract versions add to the frame pass through unchanged
    # until they are declared here.
    model_config = ConfigDict(extra="allow")

    type: Literal["message"]
    room: str
    seq: int
    ts: str = Field(description="ISO-8601 UTC with milliseconds, e.g. 2026-11-21T12:01:11.123Z")
    user: User
    body: str = Field(description="Empty for a deleted message.")
    client_id: str | None
    # protocol.md 7.4: the message in its current state.
    reply_to: int | None = Field(description="The seq of the message this one answers.")
    mentions: list[int] = Field(description="Ids of the users it names as @username (only users who can see the room).")
    edited_ts: str | None = Field(description="When it was last edited (null: never).")
    deleted: bool = Field(description="Deleted: the body is empty and there are no attachments; seq and user stay.")


class MessagePage(BaseModel):
    messages: list[Message] = Field(description="Oldest first.")
    has_more: bool = Field(description="Older messages exist: ask again with before= the first seq of this page.")


class ErrorDetail(BaseModel):
    code: str = Field(
        description="bad_request, forbidden, not_found, method_not_allowed, unavailable, server_error, ..."
    )
    message: str = Field(description="What went wrong and how to fix it.")


class ErrorBody(BaseModel):
    """A refusal (protocol.md section 7.3)."""

    error: ErrorDetail


class V1ErrorBody(BaseModel):
    """A refusal of the version 1 read API (``GET /api/rooms/...``), which v1 clients read as a string."""

    error: str = Field(description="What went wrong and how to fix it.")
