"""Live messages: validate and append a send; edits and deletions (chat.messageedits does the work)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chat import messageedits, selectors
from chat.clusterlog import message_log
from chat.messagelog import AppendResult, FloorNeeded, Log, RateLimit, TargetGone
from chat.models import Message
from chat.redisclient import make_async_client
from chat.selectors import amessage_max_seq
from chat.services.attachments import aattachments_claim

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser


# Live messages (the real-time path) -------------------------------------------


class MessageBodyEmpty(ValueError):
    """The body is empty or only whitespace."""


class MessageBodyTooLong(ValueError):
    """The body has more characters than ``KAIWA_MAX_BODY_CHARS``."""


class MessageUnavailable(Exception):
    """The message could not be accepted now (Redis unreachable); nothing was stored."""


# Redis errors that mean "the append may not have run": retried with the same
# dedup token, so a retry of an append that did run returns the original seq.
_APPEND_RETRIES = 2
_SERVER_TOKEN_SECONDS = 30


def message_body_validate(*, body: str, attachments: bool = False) -> None:
    """Raise ``MessageBodyEmpty`` / ``MessageBodyTooLong`` for a body the server refuses.

    A message with attachments may have an empty body (protocol.md 7.3).
    """
    if not body.strip() and not attachments:
        raise MessageBodyEmpty("The message is empty: type some text before sending.")
    limit = settings.KAIWA_MAX_BODY_CHARS
    if len(body) > limit:
        raise MessageBodyTooLong(
            f"The message has {len(body)} characters; the limit is {limit}. Split it into several messages."
        )


async def amessage_send(
    *,
    log: Log,
    room_id: int,
    slug: str,
    user_id: int,
    username: str,
    body: str,
    client_id: str | None,
    known_last: int | None = None,
    rate: RateLimit | None = None,
    attachments: Sequence[str] = (),
    reply_to: int | None = None,
) -> AppendResult:
    """Accept one message: append it to the room's Redis log (durable, ordered, published).

    With ``rate`` the user's token bucket is charged in the same step, and
    ``RateLimited`` raised when it is empty (nothing is appended then).

    ``client_id`` (when given) is the dedup token for ``KAIWA_DEDUP_SECONDS``:
    re-sending returns the original seq. Without it a server-made token guards
    this call's own retries. When Redis has no sequence for the room (new
    room, or a Redis that lost its data) the sequence resumes above
    ``max(highest stored seq, known_last)``, ``known_last`` being the highest
    seq this process has delivered. Raises ``MessageUnavailable`` when Redis
    cannot be reached.

    ``attachments`` (upload ids) are claimed for this message first
    (``AttachmentsInvalid`` if one is not the user's unused upload to the
    room); the message carries their ``A`` objects.

    ``reply_to`` must name a message of the room that is not deleted
    (``messageedits.TargetNotFound``); ``@username`` mentions are resolved
    (``messageedits.amentions_resolve``). A plain send costs no query.
    """
    message_body_validate(body=body, attachments=bool(attachments))
    if reply_to is not None:
        await messageedits.atarget_get(log=log, room_id=room_id, seq=reply_to)
    mentions = await messageedits.amentions_resolve(room_id=room_id, body=body) if "@" in body else ()
    token = client_id or uuid.uuid4().hex
    token_seconds = None if client_id else _SERVER_TOKEN_SECONDS
    objects: list[dict[str, Any]] = []
    if attachments:
        try:
            await aattachments_claim(ids=attachments, room_id=room_id, user_id=user_id, token=token)
            objects = await selectors.aattachment_dicts(ids=attachments)
        except DatabaseError as exc:
            raise MessageUnavailable(f"the database is unreachable ({exc})") from exc
    floor: int | None = None
    failures = 0
    while True:
        try:
            return await log.append(
                room_id=room_id,
                slug=slug,
                user_id=user_id,
                username=username,
                body=body,
                client_id=client_id,
                token=token,
                token_seconds=token_seconds,
                floor=floor,
                known_last=known_last or 0,
                rate=rate,
                attachments=objects,
                reply_to=reply_to,
                mentions=mentions,
            )
        except TargetGone as exc:
            raise messageedits.TargetNotFound(exc.seq) from None
        except FloorNeeded:
            if floor is not None:
                # The sequence vanished again between two calls: Redis is being flushed.
                raise MessageUnavailable("Redis lost the room's sequence twice in a row.") from None
            try:
                stored = await amessage_max_seq(room_id=room_id)
            except DatabaseError as exc:
                raise MessageUnavailable(f"the database is unreachable ({exc})") from exc
            floor = max(stored, known_last or 0)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            failures += 1
            if failures > _APPEND_RETRIES:
                raise MessageUnavailable(f"Redis is unreachable ({exc})") from exc


# Edits and deletions (protocol.md 7.4): chat.messageedits does the work ---------------

amessage_edit = messageedits.amessage_edit
amessage_delete = messageedits.amessage_delete
message_purge_deleted = messageedits.message_purge_deleted


def message_delete_as_staff(*, messages: Sequence[Message], user: AbstractBaseUser) -> int:
    """Delete messages as ``user`` (staff) from sync code (the admin): each through its room's log.

    Members see ``deleted`` live and the worker empties the rows, as for a
    user's deletion. The dedup token is the message's, so deleting again (a
    double click, a retry) is harmless. Returns how many were deleted now;
    ``MessageUnavailable`` when Redis is unreachable (those not yet deleted stay).
    """
    targets = [(m.room_id, m.room.slug, m.seq) for m in messages]

    async def run() -> int:
        client = make_async_client()
        log = message_log(client, dedup_seconds=settings.KAIWA_DEDUP_SECONDS, stream_keep=settings.KAIWA_STREAM_KEEP)
        done = 0
        try:
            for room_id, slug, seq in targets:
                try:
                    result = await amessage_delete(
                        log=log,
                        room_id=room_id,
                        slug=slug,
                        user_id=int(user.pk),
                        username=user.get_username(),
                        target=seq,
                        client_id=f"admin-delete-{seq}",
                    )
                except messageedits.TargetNotFound:
                    continue  # deleted meanwhile
                done += not result.duplicate
        except messageedits.Unavailable as exc:
            raise MessageUnavailable(str(exc)) from exc
        finally:
            await client.aclose()
        return done

    return async_to_sync(run)()
