"""Outbound notifications from an emulated provider (Brightcove callbacks, Ittybit webhooks):
one JSON POST with a few attempts, reported back for the sandbox's state."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Delivery:
    status: int | None
    error: str | None
    attempts: int


def post_json(url: str, payload: Any, *, timeout: float, backoff: tuple[float, ...],
              stopping: threading.Event) -> Delivery | None:
    """POST ``payload``; retry after each of ``backoff``'s waits. None if the sandbox stopped."""
    data = json.dumps(payload).encode()
    status: int | None = None
    error: str | None = None
    attempts = 0
    for delay in (0.0, *backoff):
        if delay and stopping.wait(delay):
            return None
        attempts += 1
        request = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                status, error = resp.status, None
        except urllib.error.HTTPError as exc:
            exc.close()
            status, error = exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            status, error = None, str(getattr(exc, "reason", exc)) or type(exc).__name__
        if error is None:
            break
    return Delivery(status, error, attempts)
