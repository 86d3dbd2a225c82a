"""Redis answers as text: the fleet's clients return bytes (no ``decode_responses``, so Lua
scripts and binary-safe values stay bytes), and redis-py types every answer as a union."""

from __future__ import annotations

from collections.abc import Iterable


def text(value: object) -> str:
    """One answer (bytes or str) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def texts(values: Iterable[object]) -> list[str]:
    """Every answer of a list reply as text."""
    return [text(v) for v in values]
