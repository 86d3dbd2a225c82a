"""``ingest-fleet reconcile``: re-enqueue jobs that are in progress but that nothing will run.

A job in progress normally has exactly one live dispatch: a message waiting in its queue, a
message held by a worker (kombu's ``unacked`` hash), an entry in the schedule (a wait, a
backoff, an outbox), a place among the slot waiters, or a worker holding its lease right now.
After a Redis that lost writes (restarted without AOF, restored from an older snapshot,
failed over to a replica that lagged) some jobs can be left with none of these. This finds
them and puts their current dispatch back in the schedule, due now: the scheduler publishes
it and the job goes on from its current step with what its record says was done.

The scheduler runs the same check every ``INGEST_RECONCILE_SECONDS`` (:class:`Reconciler`),
so a message that a killed worker took with it (kombu's window between BRPOP and its write
to ``unacked``) costs a job a minute or two, never the job. It is safe to run any time, and
more than once: a dispatch that turns out to be alive after all only gives a duplicate
message, which the task-id check drops (ARCHITECTURE.md §3).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any

from tasks import keys
from tasks.dispatch import next_dispatch
from tasks.jobstore import SCHEDULE_CLAIMED_KEY, SCHEDULE_KEY, Job
from tasks.logs import get_logger
from tasks.queues import priority_lists, queue_length
from tasks.runtime import Runtime, runtime

log = get_logger("ingest.reconcile")

UNACKED = "unacked"


#: The scheduler's sweep leaves a queue unread above this many messages: its quiet jobs are
#: most likely waiting in it, and reading it every period would cost Redis more than a job
#: lost in it costs (``ingest-fleet reconcile`` reads every queue, whatever its length).
AUTO_SCAN_LIMIT = 20_000


def _queued_task_ids(rt: Runtime, queues: Iterable[str], *, limit: int | None = None) -> tuple[set[str], set[str]]:
    """Task ids of every message waiting in ``queues`` or held by a worker, and the queues
    left unread because they hold more than ``limit`` messages."""
    ids: set[str] = set()
    unread: set[str] = set()

    def add(raw: bytes | str) -> None:
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # unacked entries are [message, exchange, routing_key]
                message = message[0]
            ids.add(message["headers"]["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            pass

    for queue in queues:
        if limit is not None and queue_length(rt.redis, queue) > limit:
            unread.add(queue)
            continue
        for name in priority_lists(queue):
            for start in range(0, rt.redis.llen(name), 1000):
                for raw in rt.redis.lrange(name, start, start + 999):
                    add(raw)
    for _tag, raw in rt.redis.hscan_iter(UNACKED):
        add(raw)
    return ids, unread


def _in_progress(rt: Runtime, *, quiet: float = 0.0) -> Iterator[Job]:
    """Unfinished jobs; with ``quiet``, only those whose record did not change for that long."""
    now = rt.clock.now()  # updated_at was written by other hosts: compared on Redis's clock
    for provider, account in rt.served():
        active = rt.store.active_key(provider, account)
        for start in itertools.count(0, 500):
            ids = rt.redis.zrange(active, start, start + 499)
            if not ids:
                break
            for job in rt.store.get_many(ids):
                if not job.terminal and now - job.updated_at >= quiet:
                    yield job


def orphans(rt: Runtime, *, quiet: float = 0.0, scan_limit: int | None = None) -> list[Job]:
    """Jobs in progress with no live message, schedule entry, slot place or lease (with
    ``scan_limit``: except those in a queue too long to read, see :data:`AUTO_SCAN_LIMIT`)."""
    found = []
    for job in _in_progress(rt, quiet=quiet):
        member = job.dispatch.get("member")
        if member and (rt.redis.zscore(SCHEDULE_KEY, member) is not None
                       or rt.redis.zscore(SCHEDULE_CLAIMED_KEY, member) is not None):
            continue
        if rt.redis.exists(keys.lease(job.id)):
            continue
        if job.waiting == "slot" and rt.redis.zscore(rt.slots(job.provider, job.account).keys[1], job.id) is not None:
            continue
        found.append(job)
    if not found:
        return []
    # Only now read the queues of these jobs (the costly part): a message that moves from a
    # queue to a worker meanwhile is in ``unacked`` (read last) or its job's lease is taken.
    queued, unread = _queued_task_ids(rt, sorted({j.dispatch["queue"] for j in found if j.dispatch.get("queue")}),
                                      limit=scan_limit)
    return [job for job in found
            if job.dispatch.get("task_id") not in queued and job.dispatch.get("queue") not in unread]


def _requeue(rt: Runtime, job: Job) -> None:
    """Put the job's current dispatch back in the schedule, due now (or give it one)."""
    if job.dispatch.get("member"):
        rt.store.schedule(job.dispatch["member"], 0)
        return
    # No dispatch recorded at all: a new one, under the job's lease.
    lease = rt.store.acquire(job.id, ttl=30, force=True)
    member = next_dispatch(job, job.step)
    rt.store.save(job, lease, release=True, schedule=(member, 0))  # type: ignore[arg-type]


def _entry(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "provider": job.provider, "account": job.account, "state": job.state,
            "step": job.step}


def reconcile(*, rt: Runtime | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Re-enqueue every orphaned job from its current step; returns what was (or would be) done."""
    rt = rt or runtime()
    done = []
    for job in orphans(rt):
        entry = _entry(job)
        if not dry_run:
            _requeue(rt, job)
            log.warning("job.reconciled", **entry)
        done.append(entry)
    return done


class Reconciler:
    """The scheduler's periodic reconcile (``INGEST_RECONCILE_SECONDS``).

    A job is re-enqueued only when two sweeps in a row find it orphaned with the same
    dispatch and an unchanged record, and it has been quiet for a whole period: a job caught
    in passing (a message between a worker's BRPOP and its ``unacked`` entry) is never
    touched, and one whose message a killed worker took with it goes on within two periods.
    Several schedulers may each run one: a second re-enqueue only gives a duplicate message,
    which the task-id check drops.

    Example::

        sweep = Reconciler(runtime())
        sweep()  # -> how many jobs it re-enqueued
    """

    def __init__(self, rt: Runtime, *, quiet: float | None = None):
        self.rt = rt
        self.quiet = rt.settings.reconcile_seconds if quiet is None else quiet
        self._suspects: dict[str, tuple[str | None, float]] = {}

    def __call__(self) -> int:
        found = orphans(self.rt, quiet=self.quiet, scan_limit=AUTO_SCAN_LIMIT)
        marks = {job.id: (job.dispatch.get("task_id"), job.updated_at) for job in found}
        confirmed = [job for job in found if self._suspects.get(job.id) == marks[job.id]]
        for job in confirmed:
            _requeue(self.rt, job)
            log.warning("job.reconciled", automatic=True, **_entry(job))
            del marks[job.id]
        self._suspects = marks
        return len(confirmed)
