"""Every Redis key the fleet writes, named in one place (all under the ``if:`` prefix, so an
operator can see, size or wipe the fleet's own keys apart from the broker's).

    if:job:<id>                     a job record (JSON)
    if:jobs                         zset of every job by creation time
    if:active:<provider>:<account>  zset of unfinished jobs (the backlog)
    if:idem:<provider>:<account>:<key>   idempotency key -> "<job id> <intent digest>"
    if:lease:<id> / if:fence:<id>   the job's lease and its fencing counter
    if:cancel:<id>                  an application's request to cancel the job
    if:starts:<task id>             how often one dispatch took the lease (a day)
    if:schedule / if:schedule:claimed    dispatches by due time, and those being published
    if:budget:...                   budgets, cooldowns, slots, reservations (tasks.budget)
    if:stats:...                    counters for the metrics exporter (tasks.stats)
    if:secret:<id>:upload           temporary upload credentials of a job (expiring)
    if:webhook:events:<id>          notifications kept for a job
    if:webhook:ref:<provider>:<account>:<ref>   a provider's id -> job id (account-wide hooks)
    if:webhook:seen:<digest>        notifications already handled (duplicates)
    if:oauth:<provider>:<account>   the fleet's shared access token
    if:<provider>:hook:<account>    an account-wide hook registered at the provider
    if:<provider>:video_fields:<account>   cached custom-field definitions (Brightcove)
    if:served                       the accounts the workers serve, without secrets (tasks.served)
    if:served:providers / if:fleet  what each provider accepts, fleet-wide facts (tasks.served)
    if:events                       every job's state changes, capped (a stream)
"""

from __future__ import annotations

# The keys a client writes too are named in the client's wire module (one definition).
from ingest_fleet.wire import EVENTS, FLEET, JOBS, PREFIX, SCHEDULE, SERVED, SERVED_PROVIDERS, STATS, WORKERS
from ingest_fleet.wire import active_key as active
from ingest_fleet.wire import cancel_key as cancel
from ingest_fleet.wire import idempotency_key as idempotency
from ingest_fleet.wire import job_key as job

SCHEDULE_CLAIMED = f"{PREFIX}:schedule:claimed"
BUDGET = f"{PREFIX}:budget"

__all__ = ["BUDGET", "EVENTS", "FLEET", "JOBS", "PREFIX", "SCHEDULE", "SCHEDULE_CLAIMED", "SERVED",
           "SERVED_PROVIDERS", "STATS", "WORKERS", "active", "cancel", "idempotency", "job"]


def lease(job_id: str) -> str:
    return f"{PREFIX}:lease:{job_id}"


def fence(job_id: str) -> str:
    return f"{PREFIX}:fence:{job_id}"


def starts(task_id: str) -> str:
    return f"{PREFIX}:starts:{task_id}"


def upload_secret(job_id: str) -> str:
    return f"{PREFIX}:secret:{job_id}:upload"


def webhook_events(job_id: str) -> str:
    return f"{PREFIX}:webhook:events:{job_id}"


def webhook_ref(provider: str, account: str, ref: str) -> str:
    return f"{PREFIX}:webhook:ref:{provider}:{account}:{ref}"


def webhook_seen(digest: str) -> str:
    return f"{PREFIX}:webhook:seen:{digest}"


def oauth_token(provider: str, account: str) -> str:
    return f"{PREFIX}:oauth:{provider}:{account}"


def account_hook(provider: str, account: str) -> str:
    return f"{PREFIX}:{provider}:hook:{account}"


def video_fields(provider: str, account: str) -> str:
    return f"{PREFIX}:{provider}:video_fields:{account}"
