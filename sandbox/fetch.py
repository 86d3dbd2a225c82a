"""Fetching a source URL the way a provider's ingest does (an emulated pull), for every emulator."""

from __future__ import annotations

import http.client
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .web import BLOCK_SIZE


class FetchFailed(Exception):
    """The source could not be fetched; ``str()`` is the reason the emulated provider reports."""


def download(url: str, path: Path, *, timeout: float, alive: Callable[[], bool], stopping: threading.Event,
             headers: dict[str, str] | None = None, on_start: Callable[[int | None], None] | None = None,
             on_block: Callable[[bytes], None] | None = None) -> int:
    """GET ``url`` into ``path`` block by block; the bytes written, or FetchFailed.

    Stops ("cancelled") once ``alive()`` is false (the entity was deleted or reset) or the
    sandbox stops. ``on_start(length)`` gets the announced Content-Length (None if absent),
    ``on_block(block)`` each block (a pull's progress, a digest).
    """
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as resp:
            if resp.status != 200:
                raise FetchFailed(f"HTTP {resp.status}")
            if on_start is not None:
                length = resp.headers.get("Content-Length")
                on_start(int(length) if length and length.isdigit() else None)
            path.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            with open(path, "wb") as f:
                while block := resp.read(BLOCK_SIZE):
                    if not alive() or stopping.is_set():
                        raise FetchFailed("cancelled")
                    f.write(block)
                    size += len(block)
                    if on_block is not None:
                        on_block(block)
            return size
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchFailed(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise FetchFailed(str(exc.reason)) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # ValueError: a malformed URL
        raise FetchFailed(str(exc) or type(exc).__name__) from None
