"""One background thread that runs callbacks at given times.

Emulated processing is a few state changes per video spread over some seconds. A timer
thread per video would not survive a 500-job benchmark gracefully; one heap does.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class Scheduler:
    """``call_later(delay, fn, *args)`` on a single daemon thread, in due-time order."""

    def __init__(self, name: str = "sandbox-scheduler"):
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._order = itertools.count()  # ties keep submission order and never compare callables
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._order), fn, args))
            self._cond.notify()

    def stop(self) -> None:
        """Stop the thread; callbacks not yet due are dropped."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                _, _, fn, args = heapq.heappop(self._heap)
            try:
                fn(*args)
            except Exception:  # a faulty callback must not stop every other video's processing
                log.exception("scheduled callback %r failed", fn)
