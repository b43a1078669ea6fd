"""``python manage.py purgedeleted``: remove what the admin kept of messages deleted long enough ago.

A deleted message's body (its previous versions) and attachments are kept
for the admin for ``KAIWA_DELETED_RETENTION_DAYS`` (protocol.md 7.4). The
persistence worker purges them every ``KAIWA_ATTACHMENT_SWEEP_SECONDS``; the
command is for a cron job when the worker runs elsewhere, or to do it now.
The rows stay, empty, with who deleted them and when.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from chat import services


class Command(BaseCommand):
    help = "Purge the bodies and attachments of messages deleted more than KAIWA_DELETED_RETENTION_DAYS ago."

    def handle(self, *args: Any, **options: Any) -> None:
        purged = services.message_purge_deleted()
        days = f"{settings.KAIWA_DELETED_RETENTION_DAYS:g}"
        self.stdout.write(f"Purged {purged} messages deleted more than {days} days ago.")
