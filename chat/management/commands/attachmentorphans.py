"""``python manage.py attachmentorphans``: delete the uploads no message used in time.

An upload that no message used within ``KAIWA_ATTACHMENT_ORPHAN_HOURS``
(protocol.md 7.3) is deleted, its files first, then its row. The persistence
worker does this every ``KAIWA_ATTACHMENT_SWEEP_SECONDS``; the command is for
a cron job when the worker runs elsewhere, or to do it now. ``--dry-run``
only counts.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from chat import selectors, services


class Command(BaseCommand):
    help = "Delete uploads that no message used within KAIWA_ATTACHMENT_ORPHAN_HOURS (files and rows)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Only print how many would be deleted.")

    def handle(self, *args: Any, **options: Any) -> None:
        hours = f"{settings.KAIWA_ATTACHMENT_ORPHAN_HOURS:g}"
        if options["dry_run"]:
            count = selectors.attachment_orphan_count()
            self.stdout.write(f"{count} unused uploads older than {hours} hours would be deleted.")
            return
        deleted = services.attachment_delete_orphans()
        self.stdout.write(f"Deleted {deleted} unused uploads older than {hours} hours.")
        left = selectors.attachment_orphan_count()
        if left:
            self.stderr.write(
                f"{left} could not be deleted (the storage refused; see the log); run the command again later."
            )
