"""Writes: every change to rooms, memberships, accounts, messages and attachments goes through here.

Functions take keyword-only arguments and raise
``django.core.exceptions.ValidationError`` (or the refusal named in their
docstring) with a message that says how to fix the problem; async twins carry
Django's ``a`` prefix. Callers use ``from chat import services`` and
``services.<name>``: the submodules only keep each part under about 400 lines.
"""

from chat.services.attachments import (
    AttachmentsInvalid,
    UploadRefused,
    aattachment_create,
    aattachments_claim,
    attachment_create,
    attachment_delete_orphans,
    attachments_link,
)
from chat.services.messages import (
    MessageBodyEmpty,
    MessageBodyTooLong,
    MessageUnavailable,
    amessage_delete,
    amessage_edit,
    amessage_send,
    message_body_validate,
    message_delete_as_staff,
    message_purge_deleted,
)
from chat.services.persistence import message_bulk_persist
from chat.services.rooms import ROOM_NAME_MAX, SLUG_MAX, room_create, room_member_add, room_member_remove, user_signup

__all__ = [
    "ROOM_NAME_MAX",
    "SLUG_MAX",
    "AttachmentsInvalid",
    "MessageBodyEmpty",
    "MessageBodyTooLong",
    "MessageUnavailable",
    "UploadRefused",
    "aattachment_create",
    "aattachments_claim",
    "amessage_delete",
    "amessage_edit",
    "amessage_send",
    "attachment_create",
    "attachment_delete_orphans",
    "attachments_link",
    "message_body_validate",
    "message_bulk_persist",
    "message_delete_as_staff",
    "message_purge_deleted",
    "room_create",
    "room_member_add",
    "room_member_remove",
    "user_signup",
]
