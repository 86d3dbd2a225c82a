"""What happens when a job ends, whoever ends it (a step, an operator's cancel, the reaper):
its provider-side slot is given back, the next waiters are woken, it leaves the backlog."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from tasks import completion, keys
from tasks.errors import StepError
from tasks.intent import IntentError, intent_of
from tasks.jobstore import Job, Lease
from tasks.providers import ADAPTERS, StepContext
from tasks.queues import PRIORITY
from tasks.runtime import Runtime
from tasks.transfer.s3 import forget_credentials


def step_context(rt: Runtime, job: Job, lease: Lease, *, seconds: float, log: Any = None) -> StepContext:
    """What an adapter gets to work on ``job`` for at most ``seconds`` under ``lease``."""
    return StepContext(
        job=job, settings=rt.settings, account=rt.settings.account(job.provider, job.account),
        http=lambda kind: rt.client(job.provider, job.account, kind).bound(job.id, fence=lambda: rt.store.check(lease)),
        checkpoint=lambda: rt.store.save(job, lease), deadline=time.monotonic() + seconds, log=log,
        redis=rt.redis, sealer=lambda: rt.sealer, clock=rt.clock,
    )


def slot_score(job: Job) -> float:
    """Waiters are served by priority, then oldest first."""
    return PRIORITY[job.priority] * 1e10 + job.created_at


def release_holdings(rt: Runtime, job: Job) -> None:
    """Give back the job's slot (or its place in line) and wake whoever may take it."""
    for woken in rt.slots(job.provider, job.account, job).release(job.id):
        rt.store.schedule(woken, 0)
    rt.redis.zrem(rt.store.active_key(job.provider, job.account), job.id)
    forget_credentials(rt.redis, job.id)


def cancel_now(rt: Runtime, job: Job, lease: Lease) -> None:
    """Cancel the job under ``lease``: what it has at the provider is cancelled (best effort),
    then it ends as cancelled, releasing what it holds."""
    try:
        ADAPTERS[job.provider].cancel(step_context(rt, job, lease, seconds=30))
    except StepError as exc:  # the job is cancelled on our side in any case
        job.note("cancel.provider_error", error=str(exc))
    finish(rt, job, lease, "cancelled", step=job.step)
    rt.redis.delete(keys.cancel(job.id))


def admit(rt: Runtime, job: Job) -> str | None:
    """Check a job a client stored as the fleet's door would have (tasks.intent): the source
    roots, each provider's rules, the account's settings. Returns the refusal, or None (and
    the job carries what the door records: its mode, size and the file's fingerprint)."""
    try:
        valid = intent_of(asdict(job)).validate(rt.settings)
    except IntentError as exc:
        return str(exc)
    if job.source_stat and valid.source_stat and job.source_stat != valid.source_stat:
        return "source: the file changed between submit and its first step; submit it again"
    job.mode, job.bytes_total, job.admitted = valid.mode, valid.size, True
    job.source_stat = job.source_stat or dict(valid.source_stat)
    job.note("admitted")
    return None


def finish(rt: Runtime, job: Job, lease: Lease, state: str, *, event: str | None = None, **detail: object) -> None:
    """Write a terminal state (fenced), release the lease, then what the job held."""
    job.state, job.finished_at, job.dispatch, job.waiting = state, rt.clock.now(), {}, None
    job.note(event or state, **detail)
    rt.store.save(job, lease, release=True, schedule=completion.schedule_first(job))
    release_holdings(rt, job)


#: Members of a set read per page by :func:`reap` (one ZSCAN and one MGET a page).
REAP_PAGE = 500


def reap(rt: Runtime) -> int:
    """Give back slots, places in line and backlog entries of jobs that ended without doing
    it themselves (lost records, a crash between the terminal write and the release).
    Returns how many entries it reclaimed; the scheduler runs it periodically.

    Each set is read in pages, and each page's records with one MGET: a backlog of any size
    costs the memory of one page and two round trips per page (the whole set and a read per
    job held 100,000 ids and made 100,000 round trips on the scheduler's loop)."""
    reclaimed = 0
    for provider, account in rt.served():
        pools = rt.slot_pools(provider, account)
        active = rt.store.active_key(provider, account)
        gone: set[str] = set()  # reclaimed in this pass (a job may be in several of the sets)
        for key in [active, *(k for slots in pools for k in slots.keys[:2])]:
            for page in rt.store.member_pages(key, REAP_PAGE):
                for job_id, raw in zip(page, rt.redis.mget([rt.store.key(i) for i in page]), strict=True):
                    if job_id in gone or (raw and not Job.from_json(raw).terminal):
                        continue
                    for slots in pools:
                        for woken in slots.release(job_id):
                            rt.store.schedule(woken, 0)
                    rt.redis.zrem(active, job_id)
                    gone.add(job_id)
                    reclaimed += 1
    return reclaimed
