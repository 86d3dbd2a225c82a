"""The fleet's clock (issue 13): times that one host writes and another compares (a record's
``updated_at`` and ``created_at``, when a wait began, a lock's start) are read from Redis's
clock, not the local one, so hosts whose clocks disagree still agree on how long ago that was.

A process reads ``TIME`` from Redis at most once a minute and keeps the offset of its own clock
from it; :meth:`FleetClock.now` is the local clock plus that offset (no round trip per call).
"""

from __future__ import annotations

import time
from typing import Any

REFRESH_SECONDS = 60.0


class FleetClock:
    def __init__(self, redis: Any, refresh: float = REFRESH_SECONDS):
        self._redis, self._refresh = redis, refresh
        self._offset: float | None = None
        self._read_at = 0.0

    def now(self) -> float:
        """Seconds since the epoch by Redis's clock."""
        if self._offset is None or time.monotonic() - self._read_at > self._refresh:
            before = time.time()
            sec, usec = self._redis.time()
            after = time.time()
            self._offset = sec + usec / 1e6 - (before + after) / 2
            self._read_at = time.monotonic()
        return time.time() + self._offset
