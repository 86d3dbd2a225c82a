"""The five steps of the chain; each dispatch names a job id and nothing else (the Celery
tasks that run them are registered by the worker process: ``workers.steps``).

    create entity -> obtain upload target -> upload slice (xN) -> submit ingest -> await status

Every run of a step:

1. reads the job record and drops the message unless the record names this very task id
   as its current dispatch (a redelivered, duplicated or stale message is harmless);
2. takes the job's lease with a fencing token (another live holder -> come back when its
   lease ends; a stale holder can never overwrite newer progress);
3. calls the provider adapter for the step, which re-uses whatever the record says was
   already done (idempotent), and checkpoints progress under the lease;
4. decides what runs next and writes it with the record in one atomic step: the next
   step now, the same step again (next upload slice), a later poll or a deferral (in the
   Redis schedule, never an ETA message), or a terminal state.

What a failure leads to is decided in one place, :func:`tasks.retry.plan`: throttling defers
without counting an attempt; transient errors are retried with exponential backoff and full
jitter up to ``INGEST_MAX_ATTEMPTS`` per step (progress renews the budget); a permanent error
fails the job at once with the provider's message.
"""

from __future__ import annotations

import random
import time
from typing import Any

import structlog
from celery.exceptions import SoftTimeLimitExceeded

from tasks import retry, tracing
from tasks.dispatch import OUTBOX_GRACE, next_dispatch, publish
from tasks.errors import ConfigError, NotReplicated, PermanentError, StepError
from tasks.jobstore import STALE, STEP_STATE, STEPS, Job, Lease, StaleLease
from tasks.lifecycle import admit, cancel_now, finish, slot_score, step_context
from tasks.logs import get_logger
from tasks.providers import ADAPTERS, StepContext
from tasks.runtime import runtime

log = get_logger("ingest.steps")

#: A job waiting for a provider slot is woken by the release; this recheck is the safety net.
SLOT_RECHECK = 60.0
#: A dispatch whose runs are all killed (its message comes back each time) fails after this many.
MAX_STARTS = 5


class _Next:
    """Outcome: go on to ``step`` after ``delay`` seconds (0 = now)."""

    def __init__(self, step: str, delay: float = 0.0):
        self.step, self.delay = step, delay


def _following(job: Job, step: str) -> str | None:
    adapter = ADAPTERS[job.provider]
    for later in STEPS[STEPS.index(step) + 1:]:
        if adapter.needs(later, job):
            return later
    return None


def _poll_delay(settings: Any, polls: int) -> float:
    base = min(settings.poll_max, settings.poll_initial * 1.5 ** max(0, polls - 1))
    return float(base * random.uniform(0.8, 1.2))


def _run_step(step: str, job: Job, ctx: StepContext) -> _Next | str:
    """Call the adapter for ``step``; returns what comes next, or a terminal state."""
    adapter = ADAPTERS[job.provider]
    if step == "create":
        adapter.create_entity(ctx)
    elif step == "target":
        adapter.obtain_upload_target(ctx)
    elif step == "upload":
        if not adapter.upload_slice(ctx):
            return _Next("upload")  # the next slice, on any worker
        job.note("upload.complete", bytes=job.bytes_done)
    elif step == "submit":
        adapter.submit_ingest(ctx)
    elif step == "await":
        job.provider_ids.setdefault("awaiting_since", ctx.now())
        status = adapter.poll_status(ctx)
        job.polls += 1
        if status.state == "ready":
            job.progress = 100
            return "ready"
        if status.state == "failed":
            raise PermanentError(status.message or "the provider reported a failure", provider=job.provider)
        if status.progress is not None:
            job.progress = status.progress
        if status.provider_state and status.provider_state != job.provider_ids.get("status"):
            job.provider_ids["status"] = status.provider_state
            job.note("provider.status", status=status.provider_state, progress=status.progress)
        waited = ctx.now() - job.provider_ids["awaiting_since"]
        if waited > ctx.settings.await_deadline:
            raise PermanentError(f"no terminal state from the provider after {waited:.0f} s "
                                 f"(INGEST_AWAIT_DEADLINE={ctx.settings.await_deadline:g})")
        return _Next("await", _poll_delay(ctx.settings, job.polls))
    retry.renew(job, step)
    following = _following(job, step)
    if following is None:
        raise RuntimeError(f"no step after {step!r} for provider {job.provider}")
    return _Next(following)


def run(tid: str, job_id: str, step: str) -> None:
    """Run one dispatch (Celery task id ``tid``) of ``step`` for ``job_id``."""
    rt = runtime()
    store, settings = rt.store, rt.settings
    # The lease is taken only while the record names this dispatch and is not terminal, checked
    # atomically with taking it (issue 13: a duplicate that stalled after a check of its own
    # must not run the step again on an old record); the record read by that check comes back
    # with the answer, so a run reads it once.
    try:
        lease = store.acquire(job_id, ttl=settings.lease_seconds, dispatch=tid)
    except NotReplicated as exc:  # the replicas lag: try again soon rather than run unreplicated
        log.warning("lease.not_replicated", error=str(exc))
        job = store.get(job_id)
        if job is not None:
            store.schedule(job.dispatch["member"], settings.backoff_base * 5)
        return
    if not isinstance(lease, Lease):
        job = lease.job
        if job is None:
            log.warning("job.missing")
        elif lease.wait == STALE:
            log.info("dispatch.stale", current=job.dispatch.get("task_id"), state=job.state)
        else:
            # Another worker still drives this job (e.g. a redelivery while the first run is
            # alive): look again when its lease ends; the task-id check then settles it.
            wait = lease.wait + 1.0
            store.schedule(job.dispatch["member"], wait)
            log.info("lease.busy", retry_in=round(wait, 1))
        return
    assert lease.job is not None  # taken for a dispatch: the record comes with it
    job = lease.job
    try:
        with tracing.step_span(job_id, job.provider, job.account, step):
            _run_leased(rt, tid, job, step, lease)
    except NotReplicated as exc:
        # Written on the primary, next dispatch included; only its replication is unconfirmed.
        log.warning("write.not_replicated", error=str(exc))
    finally:
        # Ended in this process (whatever the outcome): only runs killed outright are counted.
        store.forget_starts(tid, lease)


def _run_leased(rt: Any, tid: str, job: Job, step: str, lease: Lease) -> None:
    """The rest of :func:`run`, under the dispatch's lease, on the record as the lease found it."""
    store, settings = rt.store, rt.settings
    if lease.starts > MAX_STARTS:
        # Every run of this dispatch was killed before it could record anything (the hard time
        # limit, a lost pool process): its message comes back each time, so stop here.
        _fail_at_once(rt, job, lease, step, f"step {step} was started {lease.starts - 1} times and never "
                      "finished (its worker process was killed each time: the hard time limit, or out of memory)")
        return
    structlog.contextvars.bind_contextvars(provider=job.provider, account=job.account)
    if lease.cancel:  # an application asked to cancel it (ingest_fleet.Client.cancel)
        cancel_now(rt, job, lease)
        log.info("job.cancelled")
        return
    if not job.admitted:  # stored by a client: the checks only the fleet can make, before anything else
        refusal = admit(rt, job)
        if refusal is not None:
            _fail_at_once(rt, job, lease, step, f"refused at the fleet's door: {refusal}")
            return
    if not _slot_held(rt, job, step):
        # No provider-side slot: wait in line without a worker. A release wakes this very
        # dispatch; the late recheck only covers a wake-up lost to a crash.
        if job.waiting != "slot":
            job.waiting = "slot"
            job.note("waiting", reason="provider slots all in use", step=step)
        store.save(job, lease, release=True, schedule=(job.dispatch["member"], SLOT_RECHECK))
        log.info("slot.waiting")
        return
    job.waiting = None
    if job.state != STEP_STATE[step]:
        job.note("state", state=STEP_STATE[step])
        job.state = STEP_STATE[step]
    try:
        ctx = step_context(rt, job, lease, seconds=settings.slice_seconds, log=log)
    except ConfigError as exc:
        # e.g. the account was configured where the job was submitted, not on this worker:
        # no retry can fix that, and the message names the variable to set.
        _fail_at_once(rt, job, lease, step, str(exc))
        return
    try:
        _drive(rt, job, lease, step, ctx)
    except StaleLease:
        # Taken over (an operator's cancel or retry, or a lease that expired while this
        # worker stalled): the newer holder owns the job; write nothing more.
        log.warning("lease.lost")


def _drive(rt: Any, job: Job, lease: Lease, step: str, ctx: StepContext) -> None:
    """Run the step and record what follows: the next dispatch, a retry or a terminal state."""
    try:
        outcome = _run_step(step, job, ctx)
    except StaleLease:
        raise
    except Exception as exc:  # SoftTimeLimitExceeded is one too
        if not isinstance(exc, (StepError, ConfigError, SoftTimeLimitExceeded)):
            log.exception("step.crashed")
        then = retry.plan(exc, job, step, rt.settings)
        if then.failure is not None:
            _fail(job, lease, step, then.failure, ctx)
            return
        if then.event:
            job.note(then.event, **dict(then.detail))
        _advance(job, lease, _Next(then.step, then.delay), waiting=then.waiting)
        return
    if isinstance(outcome, str):  # "ready"
        job.error = None
        finish(rt, job, lease, "ready")
        log.info("job.ready")
        return
    _advance(job, lease, outcome, waiting="poll" if outcome.step == "await" and outcome.delay else None)


def _slot_held(rt: Any, job: Job, step: str) -> bool:
    """True when ``step`` needs no provider-side slot, or the job holds (or just took) one."""
    slot_step = ADAPTERS[job.provider].slot_step(job)
    if STEPS.index(step) < STEPS.index(slot_step):
        return True
    return bool(rt.slots(job.provider, job.account, job).acquire(job.id, score=slot_score(job),
                                                                 wake_with=job.dispatch["member"]))


def _fail_at_once(rt: Any, job: Job, lease: Lease, step: str, message: str) -> None:
    """Fail the job, permanent, before its step could run (nothing at the provider to release)."""
    job.error = {"step": step, "message": message, "status": None, "kind": "permanent", "at": time.time()}
    job.failed_step = step
    finish(rt, job, lease, "failed", step=step, error=message)
    log.warning("job.failed", error=message, kind="permanent")


def _fail(job: Job, lease: Lease, step: str, exc: StepError, ctx: StepContext) -> None:
    kind = (retry.Outcome.PERMANENT if isinstance(exc, PermanentError) else retry.Outcome.TRANSIENT).value
    adapter = ADAPTERS[job.provider]
    if adapter.cancel_on_failure:
        if not runtime().store.holds(lease):
            raise StaleLease(f"job {job.id}: taken over before it could fail")  # e.g. an operator's cancel
        try:  # leave nothing half-done at the provider (e.g. an open multipart upload)
            adapter.cancel(ctx)
        except Exception as cleanup:  # best effort: the job fails with its own error in any case
            job.note("cleanup.provider_error", error=str(cleanup))
    job.error = {"step": step, "message": str(exc), "status": exc.status, "kind": kind,
                 "attempts": job.attempts.get(step, 0), "at": time.time()}
    job.failed_step = step
    finish(runtime(), job, lease, "failed", step=step, error=str(exc))
    log.warning("job.failed", error=str(exc), kind=kind)


def _advance(job: Job, lease: Lease, nxt: _Next, *, waiting: str | None = None) -> None:
    """Write the record with its next dispatch, release the lease, then publish."""
    store = runtime().store
    job.state, job.waiting = STEP_STATE[nxt.step], waiting
    schedule_member = next_dispatch(job, nxt.step)
    if nxt.delay > 0:
        store.save(job, lease, release=True, schedule=(schedule_member, nxt.delay))
        return
    store.save(job, lease, release=True, schedule=(schedule_member, OUTBOX_GRACE))
    publish(schedule_member)
    store.unschedule(schedule_member)
