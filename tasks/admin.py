"""Operator actions: retry a failed job from its failed step, cancel a job, read the budgets.

An operator action takes the job's lease by force: that bumps the fencing token, so a worker
still running a step of the job can write nothing more and stops at its next checkpoint.

Example::

    retry(job_id)          # a failed job goes on from the step that failed, not from the start
    cancel(job_id)         # stops it, closes its open upload, frees its provider slot
    report()               # per provider and account: limit, rate, cooldown, slots, backlog
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ingest_fleet.urls import redacted
from tasks.config import declared
from tasks.dispatch import OUTBOX_GRACE, next_dispatch, publish
from tasks.errors import ConfigError, StepError
from tasks.intent import IntentError
from tasks.jobstore import STEP_STATE, Job, Lease
from tasks.lifecycle import cancel_now, step_context
from tasks.producer import JobNotFound
from tasks.providers import ADAPTERS
from tasks.queues import STEP_KIND, queue_for, queue_length
from tasks.retry import renew
from tasks.runtime import Runtime, runtime


def _load(rt: Runtime, job_id: str) -> Job:
    job = rt.store.get(job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def _take(rt: Runtime, job_id: str) -> tuple[Job, Lease]:
    lease = rt.store.acquire(job_id, ttl=rt.settings.lease_seconds, force=True)
    assert isinstance(lease, Lease)
    return _load(rt, job_id), lease


def retry(job_id: str, *, rt: Runtime | None = None) -> dict[str, Any]:
    """Restart a failed job from the step that failed, with that step's attempts reset."""
    rt = rt or runtime()
    if (state := _load(rt, job_id).state) != "failed":
        raise IntentError("job_id", f"job {job_id} is {state}; only a failed job can be retried")
    job, lease = _take(rt, job_id)
    step = job.failed_step or (job.error or {}).get("step") or "create"
    renew(job, step)
    job.note("retry.requested", step=step, previous_error=(job.error or {}).get("message"))
    job.error, job.finished_at, job.waiting = None, None, None
    job.state = STEP_STATE[step]
    rt.redis.zadd(rt.store.active_key(job.provider, job.account), {job.id: job.created_at})
    member = next_dispatch(job, step)
    rt.store.save(job, lease, release=True, schedule=(member, OUTBOX_GRACE))
    publish(member, rt)
    rt.store.unschedule(member)
    return job.public()


def cancel(job_id: str, *, rt: Runtime | None = None) -> dict[str, Any]:
    """Stop a job wherever it is and release what it holds (lease, provider slot, open upload)."""
    rt = rt or runtime()
    if (state := _load(rt, job_id).state) in ("ready", "failed", "cancelled"):
        raise IntentError("job_id", f"job {job_id} is already {state}; nothing to cancel")
    job, lease = _take(rt, job_id)
    cancel_now(rt, job, lease)
    return job.public()


def report(*, rt: Runtime | None = None) -> list[dict[str, Any]]:
    """For each provider account the fleet serves (tasks.served): limit, rate of the last minute, cooldown,
    slots used/total, backlog (non-terminal jobs) and the age of its oldest job."""
    rt = rt or runtime()
    sec, usec = rt.redis.time()
    now = sec + usec / 1e6
    rows = []
    for (provider, account), cfg in rt.served().items():
        stats = rt.budget(provider, account).stats()
        slots = rt.slots(provider, account)
        active = rt.store.active_key(provider, account)
        oldest = rt.redis.zrange(active, 0, 0, withscores=True)
        queues = {queue_for(provider, step, account) for step in STEP_KIND}
        rows.append({
            "provider": provider, "account": account,
            "limit": {"rate": cfg.rate, "burst": cfg.burst, "entity_rate": cfg.entity_rate},
            "rate_last_minute": stats["rate_last_minute"],
            "cooldown_s": stats["cooldown_s"],
            "observed": stats["observed"],
            "slots": {"used": len(slots.holders()), "total": cfg.slots or None, "waiting": len(slots.waiters())},
            "backlog": rt.redis.zcard(active),
            "oldest_age_s": round(now - float(oldest[0][1]), 1) if oldest else None,
            "queued_messages": sum(queue_length(rt.redis, q) for q in queues),
            "adapter": provider in ADAPTERS,
        })
    return rows


def config_check(*, rt: Runtime | None = None) -> dict[str, Any]:
    """``ingest-fleet config check``: the resolved settings (secrets masked), Redis, and each
    account configured here checked with one cheap authenticated call at its provider."""
    rt = rt or runtime()
    settings = {}
    for f in dataclasses.fields(rt.settings):
        if f.name == "accounts":
            continue
        value = getattr(rt.settings, f.name)
        settings[f.name] = ("***" if value else "") if not f.repr else (
            redacted(value) if f.name == "redis_url" else [str(v) for v in value] if isinstance(value, tuple) else value)
    out: dict[str, Any] = {"settings": settings, "redis": {}, "accounts": []}
    try:
        info = rt.redis.info("server") | rt.redis.info("memory")
        out["redis"] = {"ok": True, "version": info.get("redis_version"),
                        "maxmemory_policy": info.get("maxmemory_policy")}
        if info.get("maxmemory_policy") not in (None, "noeviction"):
            out["redis"]["warning"] = "maxmemory-policy should be noeviction: Redis may drop job records"
    except Exception as exc:  # reported, not raised: the rest of the check still runs
        out["redis"] = {"ok": False, "error": str(exc)}
    for (provider, account), cfg in sorted(rt.settings.accounts.items()):
        row: dict[str, Any] = {"provider": provider, "account": account, "base_url": cfg.base_url,
                               "settings": {k: ("***" if declared(provider)[k].secret else v)
                                            for k, v in sorted(cfg.extra.items())}}
        job = Job(id="0" * 32, provider=provider, account=account, source="", mode="pull", title="config check")
        try:
            ctx = step_context(rt, job, Lease(job.id, 0, 30), seconds=30)
            row.update(ok=True, checked=ADAPTERS[provider].probe(ctx))
        except NotImplementedError as exc:
            row.update(ok=None, checked=str(exc))
        except (StepError, ConfigError) as exc:
            row.update(ok=False, error=str(exc))
        out["accounts"].append(row)
    return out
