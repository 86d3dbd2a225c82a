"""Completion callbacks are signed: ``X-Ingest-Fleet-Signature: t=<unix seconds>,v1=<hex>``,
where the hex is HMAC-SHA256 of ``"<t>.<body>"`` under ``INGEST_CALLBACK_SECRET``. The receiver
checks it with :func:`verify_signature` (constant-time, with a tolerance against replays)::

    from ingest_fleet import verify_signature
    if not verify_signature(request.body, request.headers["X-Ingest-Fleet-Signature"], SECRET):
        return 401
"""

from __future__ import annotations

import hashlib
import hmac
import time

HEADER = "X-Ingest-Fleet-Signature"


def sign(body: bytes, secret: str, *, at: int | None = None) -> str:
    """The header value for ``body`` signed now (or at ``at``, unix seconds)."""
    t = int(time.time()) if at is None else int(at)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(body: bytes, header: str | None, secret: str, tolerance: float = 300) -> bool:
    """True when ``header`` signs ``body`` under ``secret`` and is at most ``tolerance``
    seconds old (or ahead); any malformed header is simply not valid."""
    if not header or not secret:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))
