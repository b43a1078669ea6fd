"""Rooms, private-room membership and the persisted message history."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

if TYPE_CHECKING:
    from django.contrib.auth.models import User

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
slug_validator = RegexValidator(
    SLUG_PATTERN,
    "Use 1 to 64 lowercase letters, digits or hyphens, not starting or ending with a hyphen.",
)


class Room(models.Model):
    slug = models.SlugField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    private = models.BooleanField(default=False, help_text="Only members can see and join a private room.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
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


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    seq = models.BigIntegerField(help_text="Position in the room, 1, 2, 3, ... assigned by the server.")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    # The author's name when the message was sent, so history stays readable
    # after an account is deleted.
    author_username = models.CharField(max_length=150)
    body = models.TextField()
    client_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(help_text="When the server accepted the message (UTC).")
    persisted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "seq"]
        constraints = [models.UniqueConstraint(fields=["room", "seq"], name="chat_message_room_seq_unique")]
        indexes = [
            # Admin: newest first, filtered by date, without scanning.
            models.Index(fields=["-created_at"], name="chat_message_created_idx"),
            models.Index(fields=["author", "-created_at"], name="chat_message_author_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.room_id}#{self.seq}"
