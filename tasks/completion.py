"""Completion callbacks to applications (issue 14, item 3): on each terminal state of a job
whose intent has a ``callback_url``, the fleet POSTs the public job record, signed with
``INGEST_CALLBACK_SECRET`` (``X-Ingest-Fleet-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of
"<t>.<body>">``, ingest_fleet.signature).

A delivery is a task on the job's poll queue, put in the schedule with the terminal write
itself (so it cannot be lost between the two). A failed delivery (no answer, or not 2xx) is
tried again with exponential backoff through the schedule, holding no worker, until
``INGEST_CALLBACK_RETRY_SECONDS`` (24 h) after the first try; then it is ``failed``. The
delivery's state is the record's ``callback``: ``{"state": "pending"|"delivered"|"failed",
"for": <terminal state>, "attempts", "status", "error", "next_at", "delivered_at"}``.
"""

from __future__ import annotations

import json
import random

import requests

from ingest_fleet.signature import HEADER, sign
from tasks.jobstore import Job, Lease
from tasks.logs import get_logger, scrub
from tasks.queues import PRIORITY, member, queue_for, task_id
from tasks.runtime import Runtime, runtime

log = get_logger("ingest.callback")

TIMEOUT = (5.0, 10.0)  # connect, read: an application's endpoint answers at once or is retried
BACKOFF_CAP = 3600.0
USER_AGENT = "ingest-fleet-callback/1"


def schedule_first(job: Job) -> tuple[str, float] | None:
    """Called with the terminal write: the job's delivery for this terminal state, due now
    (its schedule member), or None without a ``callback_url``."""
    if not job.callback_url:
        return None
    n = int((job.callback or {}).get("n", 0)) + 1
    tid = task_id(job.id, n, "callback")
    job.callback = {"state": "pending", "for": job.state, "n": n, "task_id": tid, "attempts": 0}
    return member(queue_for(job.provider, "callback", job.account), tid, PRIORITY[job.priority]), 0.0


def deliver(tid: str, job_id: str, *, rt: Runtime | None = None) -> None:
    """One try of the delivery ``tid``; schedules the next one if it failed and time is left."""
    rt = rt or runtime()
    job = rt.store.get(job_id)
    pending = (job.callback or {}) if job is not None else {}
    if job is None or pending.get("task_id") != tid or pending.get("state") != "pending":
        log.info("callback.stale")
        return
    this = member(queue_for(job.provider, "callback", job.account), tid, PRIORITY[job.priority])
    lease = rt.store.acquire(job_id, ttl=60)  # the job is terminal: no dispatch to check
    if not isinstance(lease, Lease):  # e.g. an operator's retry at this moment: look again later
        rt.store.schedule(this, lease.wait + 1.0)
        return
    job = rt.store.get(job_id)
    if job is None or (job.callback or {}).get("task_id") != tid:  # moved on meanwhile
        if job is not None:
            rt.store.save(job, lease, release=True)
        return
    _try(rt, job, lease, this)


def _try(rt: Runtime, job: Job, lease: Lease, this: str) -> None:
    callback = job.callback or {}
    url = job.callback_url or ""
    now = rt.clock.now()
    callback["attempts"] = int(callback.get("attempts", 0)) + 1
    callback.setdefault("first_at", now)
    body = json.dumps(job.public(), separators=(",", ":"), ensure_ascii=False).encode()
    error, status = "", None
    if not rt.settings.callback_secret:
        error = "INGEST_CALLBACK_SECRET is not set on this worker: set it on every worker (16+ characters)"
    else:
        try:
            resp = requests.post(url, data=body, timeout=TIMEOUT, allow_redirects=False, headers={
                "Content-Type": "application/json", "User-Agent": USER_AGENT,
                HEADER: sign(body, rt.settings.callback_secret)})
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except requests.RequestException as exc:
            error = scrub(f"{type(exc).__name__}: {exc}")[:300]
    callback["status"] = status
    schedule: tuple[str, float] | None = None
    if not error:
        callback.update(state="delivered", delivered_at=now, error=None, next_at=None)
        log.info("callback.delivered", status=status, attempts=callback["attempts"])
    elif now - float(callback["first_at"]) >= rt.settings.callback_retry_seconds or not rt.settings.callback_secret:
        callback.update(state="failed", error=error, next_at=None)
        log.warning("callback.failed", error=error, attempts=callback["attempts"])
    else:
        base = rt.settings.backoff_base * 2 ** (callback["attempts"] - 1)
        delay = min(BACKOFF_CAP, base) * random.uniform(0.5, 1.0)
        callback.update(error=error, next_at=round(now + delay, 3))
        schedule = (this, delay)
        log.info("callback.retry", error=error, retry_in=round(delay, 1))
    job.callback = callback
    rt.store.save(job, lease, release=True, schedule=schedule)

