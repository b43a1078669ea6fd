"""Telling a database that does not answer from an event loop that could not look.

Two places refuse rather than wait when the database hangs: the session check
of a handshake (``wsapp.sessioncheck``) and a join's room lookup
(``wsapp.dbthread.db_call``). Both watch the threads that do the work, and
call them stuck when nothing finished for ``KAIWA_AUTH_DB_TIMEOUT_SECONDS``.

That verdict is only as good as the clock the loop looked at. While the loop
is starved (a connect storm's iterations, or a garbage collection of a process
with 10,000 sockets pausing every thread), the workers are starved with it:
they need the GIL the loop holds. A watchdog that woke more than a quarter of
the limit later than it asked has learned nothing about the database, so the
threads get a whole limit of responsive time again before a verdict. Without
that, a healthy SQLite refused joins of an idle-connection run with
``unavailable`` (``DatabaseStuck``) and a 10,000-client storm got 1013.

However starved the loop, work that ran ``STARVED_LIMIT_FACTOR`` times the
limit is stuck: a real outage under load is still answered in seconds.
"""

from __future__ import annotations

STARVED_LIMIT_FACTOR = 10


class StallJudge:
    """One watcher's verdict: call ``woke()`` after each nap, then ask ``stuck()``."""

    __slots__ = ("_grace_until", "limit", "period")

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.period = limit / 4  # the shortest nap, and how late a nap may end before it counts as starved
        self._grace_until = float("-inf")

    def woke(self, *, slept_at: float, asked: float, now: float) -> None:
        """A nap of ``asked`` s that began at ``slept_at`` ended at ``now``: late means the loop was starved."""
        if now - slept_at > asked + self.period:
            self._grace_until = now + self.limit

    def stuck(self, *, stuck_for: float, now: float) -> bool:
        """Whether work that finished nothing for ``stuck_for`` s is stuck, not starved."""
        if stuck_for <= self.limit:
            return False
        return now >= self._grace_until or stuck_for > STARVED_LIMIT_FACTOR * self.limit
