"""Outbound notifications from an emulated provider (Brightcove callbacks, Ittybit and
Ingest.io webhooks): one JSON POST with a few attempts, reported back for the sandbox's state."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Delivery:
    status: int | None
    error: str | None
    attempts: int
    no_retry: bool = False  # the receiver's answer carried the ``no_retry_header``


def post_json(url: str, payload: Any, *, timeout: float, backoff: tuple[float, ...],
              stopping: threading.Event, headers: Callable[[int, str | None], dict[str, str]] | None = None,
              no_retry_header: str | None = None) -> Delivery | None:
    """POST ``payload``; retry after each of ``backoff``'s waits. None if the sandbox stopped.

    ``payload`` is sent as JSON; ``bytes`` are taken as JSON already encoded, so a caller
    can sign the exact body. ``headers(attempt, previous_error)`` adds headers to each
    attempt (``attempt`` counts from 1; ``previous_error`` is None on the first). A failed
    answer carrying ``no_retry_header`` ends the attempts.
    """
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status: int | None = None
    error: str | None = None
    attempts = 0
    for delay in (0.0, *backoff):
        if delay and stopping.wait(delay):
            return None
        attempts += 1
        extra = headers(attempts, error) if headers is not None else {}
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", **extra})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                status, error = resp.status, None
        except urllib.error.HTTPError as exc:
            exc.close()
            status, error = exc.code, f"HTTP {exc.code}"
            if no_retry_header is not None and exc.headers.get(no_retry_header) is not None:
                return Delivery(status, error, attempts, no_retry=True)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            status, error = None, str(getattr(exc, "reason", exc)) or type(exc).__name__
        if error is None:
            break
    return Delivery(status, error, attempts)
