"""Small helpers that put rows in the database for the chat tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from chat.models import Message, Room

BASE_TIME = datetime(2026, 11, 21, 12, 0, 0, 123000, tzinfo=UTC)


def add_messages(room: Room, count: int, *, author: Any, start: int = 1, body: str = "message {seq}") -> list[Message]:
    """Store ``count`` messages with seq ``start``, ``start + 1``, ... one second apart."""
    rows = [
        Message(
            room=room,
            seq=seq,
            author=author,
            author_username=author.username,
            body=body.format(seq=seq),
            client_id=f"c{seq}",
            created_at=BASE_TIME + timedelta(seconds=seq),
        )
        for seq in range(start, start + count)
    ]
    return Message.objects.bulk_create(rows, batch_size=2000)
