"""The sandbox's request log: one entry per request a provider emulator received.

Tests and benchmarks read it (``GET /_sandbox/log``) to assert what the fleet actually did
on the wire: how many calls per endpoint, which were throttled, how many body bytes an
upload cost. An entry::

    {"seq": 12, "t": 1767000000.123, "provider": "gcore", "method": "PATCH",
     "path": "/upload/ab12…", "endpoint": "gcore.tus_patch", "status": 204,
     "bytes_in": 5242880, "entity": "2500001", "fault": null, "client": "127.0.0.1"}

``t`` is when the request arrived; entries are appended when it ends, so they are in
completion order and ``seq`` numbers them in that order. ``status`` is null when no
answer was sent (the client went away, or a ``drop``/``hang`` fault closed the
connection). Requests to ``/_sandbox/`` itself are not logged, nor are requests that
arrived before the last reset (one a ``hang`` held through a reset belongs to the test
before). Entries of the S3 proxy (:mod:`sandbox.s3`, provider ``s3``) also carry
``part_number`` (an ``s3.upload_part``'s ``partNumber``, else null) and have the object
``bucket/key`` as ``entity``. ``client`` is the address the request came from (which host
of a multi-host test sent it); the S3 proxy's entries have none.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any


class RequestLog:
    """Thread-safe, in-memory, bounded (the oldest entries go first)."""

    def __init__(self, maxlen: int = 200_000):
        self._entries: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._seq = 0
        self._cleared_at = 0.0

    def record(self, *, t: float, provider: str | None, method: str, path: str, endpoint: str | None,
               status: int | None, bytes_in: int, entity: str | None, fault: str | None, **extra: Any) -> None:
        """Append one entry; ``extra`` holds a source's own fields (e.g. the S3 proxy's ``part_number``)."""
        with self._lock:
            if t < self._cleared_at:
                return
            self._seq += 1
            self._entries.append({
                "seq": self._seq, "t": t, "provider": provider, "method": method, "path": path,
                "endpoint": endpoint, "status": status, "bytes_in": bytes_in, "entity": entity, "fault": fault,
                **extra,
            })

    def entries(self, *, since: float | None = None, endpoint: str | None = None,
                provider: str | None = None) -> list[dict[str, Any]]:
        """Entries that arrived after ``since`` (epoch seconds), optionally of one endpoint/provider."""
        with self._lock:
            snapshot = list(self._entries)
        return [
            dict(e) for e in snapshot
            if (since is None or e["t"] > since)
            and (endpoint is None or e["endpoint"] == endpoint)
            and (provider is None or e["provider"] == provider)
        ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._cleared_at = time.time()
