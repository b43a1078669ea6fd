"""Rooms, private-room membership and the persisted message history."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import JSONField, Value
from django.db.models.signals import post_delete
from django.dispatch import receiver

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# \Z, not $: $ also matches before a final newline, and "lobby\n" must be refused as malformed.
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\Z"
slug_validator = RegexValidator(
    SLUG_PATTERN,
    "Use 1 to 64 lowercase letters, digits or hyphens, not starting or ending with a hyphen.",
)


class RoomKind(models.TextChoices):
    ROOM = "room", "room"
    DM = "dm", "direct conversation"


class Room(models.Model):
    slug = models.SlugField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    private = models.BooleanField(default=False, help_text="Only members can see and join a private room.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # A direct conversation (protocol.md 7.5) is a private room of two members;
    # dm_key ("<smaller user id>:<larger user id>") is unique, so two first
    # uses at the same moment make one room.
    kind = models.CharField(max_length=8, choices=RoomKind.choices, default=RoomKind.ROOM, db_default=RoomKind.ROOM)
    dm_key = models.CharField(max_length=64, null=True, blank=True, editable=False, unique=True)
    members: models.ManyToManyField[User, Membership] = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="chat_rooms"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_memberships")
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "user"], name="chat_membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.room}"


class MessageKind(models.IntegerChoices):
    MESSAGE = 0, "message"
    EDIT = 1, "edit"
    DELETE = 2, "delete"


class Message(models.Model):
    # No index of their own on room and author: (room, seq) and (author, created_at)
    # serve every lookup by them, and each index is written by every insert
    # (about a fifth of the worker's CPU per row on SQLite, docs/architecture.md).
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages", db_index=False)
    seq = models.BigIntegerField(help_text="Position in the room, 1, 2, 3, ... assigned by the server.")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # The author's name when the message was sent, so history stays readable
    # after an account is deleted.
    author_username = models.CharField(max_length=150)
    body = models.TextField()
    client_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(help_text="When the server accepted the message (UTC).")
    persisted_at = models.DateTimeField(auto_now_add=True)
    # Every event of the room's sequence is a row (protocol.md 7.4): a message,
    # or an edit or deletion of the message ``target_seq``. Event rows keep the
    # (room, seq) uniqueness that makes the worker's insert exactly-once, and a
    # resume read from the database replays them in order; the history shows
    # only messages, in their current state (the fields below).
    # Database defaults: the worker's hand-written insert names only the columns every message has.
    kind = models.PositiveSmallIntegerField(
        choices=MessageKind.choices, default=MessageKind.MESSAGE, db_default=MessageKind.MESSAGE
    )
    target_seq = models.BigIntegerField(null=True, blank=True, help_text="Edit/delete events: the message's seq.")
    reply_to = models.BigIntegerField(null=True, blank=True, help_text="The seq of the message this one answers.")
    mentions = models.JSONField(
        default=list, db_default=Value([], JSONField()), blank=True, help_text="Ids of the users named as @username."
    )
    edited_at = models.DateTimeField(null=True, blank=True, help_text="When the body was last edited.")
    deleted_at = models.DateTimeField(null=True, blank=True)
    deleted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    # The seq of the last edit/delete event applied: applying an event is idempotent (exactly once).
    version_seq = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["room", "seq"], name="chat_message_room_seq_unique"),
            # Dedup that survives Redis (protocol.md 7.1): one message per sender's client_id in a room.
            models.UniqueConstraint(
                fields=["room", "author", "client_id"],
                condition=~models.Q(client_id=""),
                name="chat_message_client_id_unique",
            ),
        ]
        indexes = [
            # Admin: newest first, filtered by date, without scanning.
            models.Index(fields=["-created_at"], name="chat_message_created_idx"),
            models.Index(fields=["author", "-created_at"], name="chat_message_author_idx"),
            # The edit and delete events of a message (the worker applies them, a deletion blanks the edits').
            models.Index(fields=["room", "target_seq"], name="chat_message_event_idx", condition=models.Q(kind__gt=0)),
            # Only deleted messages have deleted_by: the others need no entry (deleting a user looks them up).
            models.Index(
                fields=["deleted_by"], name="chat_message_deleted_by_idx", condition=models.Q(deleted_by__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.seq}"


class MessageVersion(models.Model):
    """A body a message no longer shows: replaced by an edit, or removed by a deletion.

    The admin lists them on the message's page. A deleted message's versions
    (and attachments) are purged ``KAIWA_DELETED_RETENTION_DAYS`` after the
    deletion (``chat.services.message_purge_deleted``).
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="versions")
    body = models.TextField(blank=True)
    replaced_at = models.DateTimeField(help_text="When the edit or deletion that replaced it was accepted.")
    replaced_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    event_seq = models.BigIntegerField(help_text="The seq of the edit or delete event.")
    deletion = models.BooleanField(default=False)

    class Meta:
        ordering = ["message", "event_seq"]
        constraints = [
            models.UniqueConstraint(fields=["message", "event_seq"], name="chat_messageversion_event_unique")
        ]
        indexes = [
            # The purge: deletions past their retention, oldest first.
            models.Index(
                fields=["replaced_at"], name="chat_messageversion_purge_idx", condition=models.Q(deletion=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message} before #{self.event_seq}"


def _attachment_id() -> str:
    return uuid.uuid4().hex


class Attachment(models.Model):
    """An uploaded file (protocol.md 7.3), stored in the "attachments" storage.

    A message's attachments are found by ``(room, message_seq)``: the
    persistence worker sets ``message_seq`` in the transaction that writes the
    message row, and only on an attachment still unused or already its own, so
    a replayed batch changes nothing (exactly once, like the message). A
    ``send`` first claims the ids with its dedup token (``claim``): two sends
    cannot both take one upload, and a re-send of the same message can.
    """

    id = models.CharField(primary_key=True, max_length=32, default=_attachment_id, editable=False)
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="attachments")
    uploader = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    name = models.CharField(max_length=255, help_text="The file name shown to users (a HEIC photo's ends in .jpg).")
    content_type = models.CharField(max_length=100, help_text="Found from the content, as served.")
    size = models.BigIntegerField(help_text="Bytes of the served file.")
    file = models.CharField(max_length=255, help_text="Name of the served file in the attachments storage.")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    thumbnail = models.CharField(max_length=255, blank=True, default="")
    thumbnail_content_type = models.CharField(max_length=100, blank=True, default="")
    thumbnail_width = models.PositiveIntegerField(null=True, blank=True)
    thumbnail_height = models.PositiveIntegerField(null=True, blank=True)
    thumbnail_size = models.BigIntegerField(default=0, help_text="Bytes of the thumbnail.")
    message_seq = models.BigIntegerField(
        null=True, blank=True, help_text="The message (room, seq) it belongs to; empty while unused."
    )
    claim = models.CharField(max_length=100, blank=True, default="", help_text="Dedup token of the send using it.")
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["room", "message_seq"], name="chat_attachment_message_idx"),
            # The orphan sweep: unused uploads, oldest first.
            models.Index(
                fields=["created_at"], name="chat_attachment_unused_idx", condition=models.Q(message_seq__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"

    @property
    def is_image(self) -> bool:
        return bool(self.thumbnail)


@receiver(post_delete, sender=Attachment)
def _attachment_files_delete(sender: type[Attachment], instance: Attachment, **kwargs: object) -> None:
    """An attachment's files go with its row (the admin, a deleted room or user, the orphan sweep).

    After the commit: a delete that is rolled back keeps its files.
    """
    from chat import attachmentstore

    names = [instance.file, instance.thumbnail]
    transaction.on_commit(lambda: attachmentstore.delete_files(names))


# The epoch and unstored-message tables (chat.epochmodels) register with this app from here.
from chat.epochmodels import RoomEpoch, UnstoredMessage  # noqa: E402, F401
