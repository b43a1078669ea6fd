from django.conf import settings
from django.db import models


class ChatMessage(models.Model):
    """One saved message, shaped like Kaiwa's so the same lag query reads both."""

    room = models.CharField(max_length=64, db_index=True)
    seq = models.BigIntegerField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    body = models.TextField()
    client_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField()
    persisted_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.room}#{self.seq}"
