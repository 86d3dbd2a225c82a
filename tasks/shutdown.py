"""Whether this process was told to finish up: a running upload slice then ends at its next
chunk, checkpoints and hands the job on (the worker process sets it: ``workers.health``)."""

from __future__ import annotations

import threading

_stopping = threading.Event()


def stopping() -> bool:
    """True once this process was told the worker is shutting down."""
    return _stopping.is_set()


def request_stop() -> None:
    _stopping.set()
