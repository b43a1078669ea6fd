"""The database side of a room's epochs, and acked messages the worker could not store (protocol.md 7.1).

Imported by ``chat.models`` (the app's model registry); kept apart because
these two tables are about Redis's relation to the database, not about chat.
"""

from __future__ import annotations

from django.db import models


class RoomEpoch(models.Model):
    """An epoch this database issued for a room: the Redis state named by it continues this history.

    A process seeding a room's Redis state writes the row first, so a Redis
    state whose epoch has no row here belongs to another database (or to a
    restored older one) and is re-seeded before anything is appended to it.
    A row whose seed lost the race to another process's is never used.
    """

    room = models.ForeignKey("chat.Room", on_delete=models.CASCADE, related_name="epochs")
    epoch = models.CharField(max_length=64)
    base_seq = models.BigIntegerField(help_text="The epoch's first seq is above this one.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["room", "epoch"], name="chat_roomepoch_unique")]

    def __str__(self) -> str:
        return f"{self.room_id} epoch {self.epoch} (above {self.base_seq})"


class UnstoredMessage(models.Model):
    """An acked message the worker could not store without contradicting the history.

    Another message already holds its ``(room, seq)``, or the sender's
    ``client_id`` is held by another stored message. Kept here (with the
    whole relay event, so nothing of it is lost) until an operator acts;
    ``manage.py chatworker --status`` lists them.
    """

    room = models.ForeignKey("chat.Room", on_delete=models.CASCADE, related_name="+")
    seq = models.BigIntegerField()
    epoch = models.CharField(max_length=64, blank=True, default="")
    author_id = models.BigIntegerField(null=True, blank=True)
    author_username = models.CharField(max_length=150)
    body = models.TextField()
    client_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(help_text="When the server accepted (and acked) the message (UTC).")
    reason = models.TextField(help_text="What the stored history holds instead.")
    event = models.TextField(help_text="The message as the relay carried it (JSON), every field included.")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-recorded_at"]
        constraints = [
            # A replayed batch records a conflict once: within an epoch a seq names one message.
            models.UniqueConstraint(fields=["room", "epoch", "seq"], name="chat_unstored_unique")
        ]

    def __str__(self) -> str:
        return f"unstored {self.room_id}#{self.seq} ({self.reason})"
