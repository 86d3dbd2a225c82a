"""The URLs the fleet gives providers for their notifications, and what it keeps of them.

Each job has its own callback URL, authenticated by a token derived from
``INGEST_WEBHOOK_SECRET`` (``{INGEST_WEBHOOK_URL}/{provider}/{job_id}/{token}``); providers
whose hooks are registered per account get one URL per account and sign with a secret the
fleet derives the same way. The receiver process (``workers.webhooks``) checks them; the
adapters build them here, so the domain never imports the receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from tasks import keys
from tasks.redis_text import text

#: A notification is kept whole or refused (413), never stored cut: every provider's is far smaller.
MAX_BODY = 65536
REF_TTL = 30 * 86400


EVENTS_KEPT = 20
EVENT_MAX = MAX_BODY  # characters of one kept notification (JSON)


def webhook_events(redis: Any, job_id: str) -> list[dict[str, Any]]:
    """The notifications received for a job, oldest first (for providers without a status API)."""
    return [json.loads(raw) for raw in redis.lrange(keys.webhook_events(job_id), 0, -1)]


def token_for(secret: str, provider: str, job_id: str) -> str:
    return hmac.new(secret.encode(), f"{provider}:{job_id}".encode(), hashlib.sha256).hexdigest()[:32]


def callback_url(settings: Any, provider: str, job_id: str) -> str | None:
    """The URL to give ``provider`` for ``job_id``'s notifications, or None without a receiver."""
    if not settings.webhook_url:
        return None
    return f"{settings.webhook_url}/{provider}/{job_id}/{token_for(settings.webhook_secret, provider, job_id)}"


def account_callback_url(settings: Any, provider: str, account: str) -> str | None:
    """The one URL an account-wide hook of ``provider`` posts to, or None without a receiver."""
    if not settings.webhook_url:
        return None
    token = token_for(settings.webhook_secret, provider, "account:" + account)
    return f"{settings.webhook_url}/{provider}/accounts/{account}/{token}"


def derived_secret(settings: Any, provider: str, account: str) -> str:
    """The signing secret the fleet gives an account-wide hook (derived, so never stored)."""
    return hmac.new(settings.webhook_secret.encode(), f"hook-secret:{provider}:{account}".encode(),
                    hashlib.sha256).hexdigest()


def remember_ref(redis: Any, provider: str, account: str, ref: str, job_id: str) -> None:
    """Record that the provider's id ``ref`` belongs to ``job_id`` (for account-wide hooks)."""
    redis.set(keys.webhook_ref(provider, account, ref), job_id, ex=REF_TTL)


def job_for_ref(redis: Any, provider: str, account: str, refs: list[str]) -> str | None:
    for ref in refs:
        job_id = redis.get(keys.webhook_ref(provider, account, ref))
        if job_id:
            return text(job_id)
    return None
