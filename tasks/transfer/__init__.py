"""Upload protocols (TUS, S3 multipart, signed parts, ranged PUT) and what they share."""

from __future__ import annotations

from typing import Any


def single_put_max(settings: Any, configured: int) -> int:
    """The largest file sent as one request: ``configured``, but never more than one slice
    carries at the slowest uplink the fleet promises to work over
    (``INGEST_SLICE_SECONDS`` x ``INGEST_MIN_UPLOAD_RATE``). A single PUT cannot be cut at a
    slice's end or resumed, so anything larger goes chunked and resumable (issue 11)."""
    return max(0, min(int(configured), int(settings.slice_seconds * settings.min_upload_rate)))
