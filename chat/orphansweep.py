"""Deleting unused uploads from a long-running process (the persistence worker), now and then.

Every ``KAIWA_ATTACHMENT_SWEEP_SECONDS`` the sweep deletes the uploads no
message used within ``KAIWA_ATTACHMENT_ORPHAN_HOURS``
(``services.attachment_delete_orphans``; ``manage.py attachmentorphans`` does
the same once). It runs on a thread of its own, not the worker's batch
thread, and closes its database connection after each run. Several server
processes sweeping at once is safe: a row is deleted only by the sweep that
marked it; the first run of each process is put off by a random part of the
interval so they rarely meet.

The same run purges what the admin kept of messages deleted more than
``KAIWA_DELETED_RETENTION_DAYS`` ago (``services.message_purge_deleted``;
``manage.py purgedeleted`` does it once).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections

from chat import services

logger = logging.getLogger("kaiwa.attachments")


def sweep_once() -> int:
    """Delete the orphans now (blocking; for a thread); returns how many were deleted."""
    close_old_connections()
    try:
        purged = services.message_purge_deleted()
        if purged:
            logger.info("purged %d messages deleted more than KAIWA_DELETED_RETENTION_DAYS ago", purged)
        return services.attachment_delete_orphans()
    finally:
        connections.close_all()


class OrphanSweep:
    def __init__(self, interval: float | None = None) -> None:
        self.interval = settings.KAIWA_ATTACHMENT_SWEEP_SECONDS if interval is None else interval
        self.next_at = time.monotonic() + random.uniform(0.1, 1.0) * self.interval

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    async def run(self) -> int:
        """One sweep on its own thread; a failure is logged and retried at the next interval."""
        self.next_at = time.monotonic() + self.interval
        try:
            deleted = await asyncio.to_thread(sweep_once)
        except (DatabaseError, OSError) as exc:
            logger.warning("could not delete unused uploads (retried in %.0f s): %s", self.interval, exc)
            return 0
        if deleted:
            logger.info(
                "deleted %d uploads no message used within %s hours",
                deleted,
                f"{settings.KAIWA_ATTACHMENT_ORPHAN_HOURS:g}",
            )
        return deleted
