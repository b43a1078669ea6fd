"""Logging an outage once when it starts and once when it ends, never per attempt, with backoff delays."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("kaiwa.worker")

BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0
FLAP_SECONDS = 5.0


class Outage:
    """Log an outage once when it starts and once when it ends, never per attempt.

    A failure soon after a recovery (another pooled connection to the old
    server going stale) counts as the same outage and is logged at debug level.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.recovered_at: float | None = None
        self.quiet = False
        self.delay = BACKOFF_FIRST_SECONDS

    def failed(self, exc: BaseException, detail: str) -> float:
        now = time.monotonic()
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no detail'}"
        if self.since is None:
            self.since = now
            self.quiet = self.recovered_at is not None and now - self.recovered_at < FLAP_SECONDS
            if self.quiet:
                logger.debug("%s failed again right after recovering (%s)", self.what, reason)
            else:
                logger.warning("%s unavailable (%s); %s; retrying with backoff", self.what, reason, detail)
        else:
            logger.debug("%s still unavailable: %s", self.what, reason)
        delay = self.delay
        self.delay = min(self.delay * 2, BACKOFF_MAX_SECONDS)
        return delay

    def ok(self) -> None:
        if self.since is not None:
            now = time.monotonic()
            level = logging.DEBUG if self.quiet else logging.WARNING
            logger.log(level, "%s is back after %.1f s", self.what, now - self.since)
            self.recovered_at = now
        self.since = None
        self.delay = BACKOFF_FIRST_SECONDS
