"""What the client and the fleet agree on in Redis: key names, queue names, dispatch ids, the
job record's first form and the script that stores it. The fleet's own modules (``tasks.keys``,
``tasks.queues``, ``tasks.jobstore``) take these from here, so the two cannot drift apart.

A job is stored once per idempotency key by ``lua/job_create.lua``, with its first dispatch
(the ``create`` step) in the schedule, due now: the fleet's scheduler publishes it to the
step's queue. The client therefore needs Redis only, never the broker's message format.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from importlib import resources
from typing import Any

PREFIX = "if"
JOBS = f"{PREFIX}:jobs"
SCHEDULE = f"{PREFIX}:schedule"
STATS = f"{PREFIX}:stats"
STATES_STAT = f"{STATS}:states"  # jobs by provider:state, moved on every state change
#: The accounts the workers serve, without secrets (tasks.served): "<provider>/<account>" -> JSON.
SERVED = f"{PREFIX}:served"
#: What each provider accepts (tasks.served): "<provider>" -> JSON of its capabilities.
SERVED_PROVIDERS = f"{PREFIX}:served:providers"
#: The queues each live worker consumes (tasks.served): "<worker name>" -> JSON.
WORKERS = f"{PREFIX}:workers"
#: Fleet-wide facts a client needs (tasks.served): "min_replicas".
FLEET = f"{PREFIX}:fleet"
#: Every state change of every job, capped (XADD ... MAXLEN ~): applications read it with
#: consumer groups (``Client.events``).
EVENTS = f"{PREFIX}:events"
EVENTS_MAXLEN = 100_000

TERMINAL = frozenset({"ready", "failed", "cancelled"})
#: The chain's steps by kind of worker; "callback" (a completion callback to the application) is
#: no step of the chain but runs on the poll workers.
STEP_KIND = {"create": "api", "target": "api", "upload": "upload", "submit": "api", "await": "poll", "callback": "poll"}
#: Message priority per intent priority; on Redis a lower number is served first.
PRIORITY = {"high": 0, "normal": 3, "low": 6}
HISTORY_LIMIT = 40


def job_key(job_id: str) -> str:
    return f"{PREFIX}:job:{job_id}"


def active_key(provider: str, account: str) -> str:
    return f"{PREFIX}:active:{provider}:{account}"


def idempotency_key(provider: str, account: str, key: str) -> str:
    return f"{PREFIX}:idem:{provider}:{account}:{key}"


def cancel_key(job_id: str) -> str:
    """Set by ``Client.cancel``: the job's next step cancels it instead of running."""
    return f"{PREFIX}:cancel:{job_id}"


CANCEL_TTL = 7 * 86400.0


def queue_for(provider: str, step: str, account: str = "default") -> str:
    base = f"{provider}.{STEP_KIND[step]}"
    return base if account == "default" else f"{base}.{account}"


def task_id(job_id: str, seq: int, step: str) -> str:
    return f"{job_id}.{seq}.{step}"


def member(queue: str, tid: str, priority: int = PRIORITY["normal"]) -> str:
    """The schedule's entry for one dispatch: where to publish it, under which id, how urgent."""
    return f"{queue} {tid} {priority}"


def new_job_id() -> str:
    return uuid.uuid4().hex


def intent_digest(fields: dict[str, Any]) -> str:
    """What makes two intents "the same" for their idempotency key: a hash of the normalised
    intent's fields (the same function on both sides of the door)."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def create_script() -> str:
    return resources.files("ingest_fleet").joinpath("lua", "job_create.lua").read_text()


def first_dispatch(job_id: str, provider: str, account: str, priority: str) -> tuple[dict[str, Any], str]:
    """The record's ``dispatch`` for the job's first step and its schedule member."""
    tid = task_id(job_id, 1, "create")
    queue = queue_for(provider, "create", account)
    entry = member(queue, tid, PRIORITY[priority])
    return {"task_id": tid, "step": "create", "seq": 1, "queue": queue, "member": entry}, entry
