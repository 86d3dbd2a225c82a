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

import json
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

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


def _queued_task_ids(rt: Runtime, queues: Iterable[str]) -> set[str]:
    """Task ids of every message waiting in ``queues`` or held by a worker."""
    ids: set[str] = set()

    def add(raw: bytes | str) -> None:
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # unacked entries are [message, exchange, routing_key]
                message = message[0]
            ids.add(message["headers"]["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            pass

    for queue in queues:
        for name in priority_lists(queue):
            for start in range(0, rt.redis.llen(name), 1000):
                for raw in rt.redis.lrange(name, start, start + 999):
                    add(raw)
    for _tag, raw in rt.redis.hscan_iter(UNACKED):
        add(raw)
    return ids


class Suspect(NamedTuple):
    """What a sweep keeps of a job that may be orphaned until it has read the queues: a
    backlog of any size costs a sweep one page of records, not every record at once."""

    job_id: str
    task_id: str | None
    queue: str | None
    updated_at: float


#: Jobs read per page of each account's backlog (one ZSCAN, one MGET and one pipeline a page).
PAGE = 500


def _suspects(rt: Runtime, *, quiet: float, scan_limit: int | None, unread: set[str]) -> Iterator[Suspect]:
    """Unfinished jobs, quiet for ``quiet`` seconds, with no schedule entry, lease or slot
    place: a page at a time, checked with one pipeline a page. A job whose queue is longer
    than ``scan_limit`` is left out at once (its queue is added to ``unread``)."""
    now = rt.clock.now()  # updated_at was written by other hosts: compared on Redis's clock
    lengths: dict[str, int] = {}
    for provider, account in rt.served():
        for page in rt.store.member_pages(rt.store.active_key(provider, account), PAGE):
            jobs = [job for job in rt.store.get_many(page) if not job.terminal and now - job.updated_at >= quiet]
            if scan_limit is not None:
                for queue in {j.dispatch["queue"] for j in jobs if j.dispatch.get("queue")} - lengths.keys():
                    lengths[queue] = queue_length(rt.redis, queue)
                    if lengths[queue] > scan_limit:
                        unread.add(queue)
                jobs = [j for j in jobs if j.dispatch.get("queue") not in unread]
            if not jobs:
                continue
            # Per job, in one pipeline: its schedule entry, its claimed entry, its lease and,
            # for a job waiting for a slot, its place in line; any of them means it is alive.
            pipe = rt.redis.pipeline(transaction=False)
            for job in jobs:
                member = job.dispatch.get("member") or ""
                pipe.zscore(SCHEDULE_KEY, member)
                pipe.zscore(SCHEDULE_CLAIMED_KEY, member)
                pipe.exists(keys.lease(job.id))
                if job.waiting == "slot":
                    pipe.zscore(rt.slots(job.provider, job.account, job).keys[1], job.id)
            answers = iter(pipe.execute())
            for job in jobs:
                scheduled, claimed, leased = next(answers), next(answers), next(answers)
                in_line = next(answers) is not None if job.waiting == "slot" else False
                if (job.dispatch.get("member") and (scheduled is not None or claimed is not None)) or leased or in_line:
                    continue
                yield Suspect(job.id, job.dispatch.get("task_id"), job.dispatch.get("queue"), job.updated_at)


def orphans(rt: Runtime, *, quiet: float = 0.0, scan_limit: int | None = None) -> list[Job]:
    """Jobs in progress with no live message, schedule entry, slot place or lease (with
    ``scan_limit``: except those in a queue too long to read, see :data:`AUTO_SCAN_LIMIT`).

    Memory: a page of records, and a small tuple per suspect (a job with no live dispatch
    found outside its queue) until the queues are read; then the records of the orphans."""
    unread: set[str] = set()
    suspects = list(_suspects(rt, quiet=quiet, scan_limit=scan_limit, unread=unread))
    if not suspects:
        return []
    # Only now read the queues of these jobs (the costly part): a message that moves from a
    # queue to a worker meanwhile is in ``unacked`` (read last) or its job's lease is taken.
    queued = _queued_task_ids(rt, sorted({s.queue for s in suspects if s.queue} - unread))
    lost = {s.job_id: s for s in suspects if s.task_id not in queued and s.queue not in unread}
    del suspects
    # The orphans' records, read again: one that changed meanwhile has moved on.
    found, ids = [], list(lost)
    for start in range(0, len(ids), PAGE):
        for job in rt.store.get_many(ids[start:start + PAGE]):
            seen = lost[job.id]
            if not job.terminal and (job.dispatch.get("task_id"), job.updated_at) == (seen.task_id, seen.updated_at):
                found.append(job)
    return found


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
