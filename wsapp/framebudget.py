"""Inbound limits of one connection: frames per second (a token bucket) and bad frames per minute.

Checked before any parsing work, so a flood costs the server little; past
either limit the endpoint closes the socket with 1008.
"""

from __future__ import annotations

import time
from collections import deque

from django.conf import settings


class FrameBudget:
    """Inbound limits of one connection: a token bucket for frames, a window for bad frames."""

    __slots__ = ("bad", "bad_limit", "burst", "rate", "stamp", "tokens")

    def __init__(self) -> None:
        self.burst = float(settings.KAIWA_FRAME_RATE_BURST)
        self.rate = float(settings.KAIWA_FRAME_RATE_PER_SECOND)
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.bad_limit = settings.KAIWA_BAD_FRAMES_PER_MINUTE
        self.bad: deque[float] | None = None  # created by the first bad frame

    def take_frame(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def bad_frame(self) -> bool:
        """Count a bad frame; False once more than the per-minute allowance arrived."""
        now = time.monotonic()
        if self.bad is None:
            self.bad = deque()
        while self.bad and now - self.bad[0] > 60:
            self.bad.popleft()
        self.bad.append(now)
        return len(self.bad) <= self.bad_limit
