"""``ingest-fleet reconcile``: re-enqueue jobs that are in progress but that nothing will run.

A job in progress normally has exactly one live dispatch: a message waiting in its queue, a
message held by a worker (kombu's ``unacked`` hash), an entry in the schedule (a wait, a
backoff, an outbox), a place among the slot waiters, or a worker holding its lease right now.
After a Redis that lost writes (restarted without AOF, restored from an older snapshot,
failed over to a replica that lagged) some jobs can be left with none of these. This finds
them and puts their current dispatch back in the schedule, due now: the scheduler publishes
it and the job goes on from its current step with what its record says was done.

It is safe to run any time, and more than once: a dispatch that turns out to be alive after
all only gives a duplicate message, which the task-id check drops (ARCHITECTURE.md §3).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from tasks.jobstore import SCHEDULE_KEY, Job
from tasks.runtime import Runtime, runtime
from workers.logging import get_logger
from workers.queues import priority_lists, queues_of_kind

log = get_logger("ingest.reconcile")

UNACKED = "unacked"


def _queued_task_ids(rt: Runtime) -> set[str]:
    """Task ids of every message waiting in a queue or held by a worker."""
    ids: set[str] = set()

    def add(raw: bytes) -> None:
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # unacked entries are [message, exchange, routing_key]
                message = message[0]
            ids.add(message["headers"]["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            pass

    for kind in ("api", "upload", "poll"):
        for queue in queues_of_kind(kind, rt.settings):
            for name in priority_lists(queue):
                for start in range(0, rt.redis.llen(name), 1000):
                    for raw in rt.redis.lrange(name, start, start + 999):
                        add(raw)
    for _tag, raw in rt.redis.hscan_iter(UNACKED):
        add(raw)
    return ids


def _in_progress(rt: Runtime) -> Iterator[Job]:
    for provider, account in rt.settings.accounts:
        for job_id in rt.redis.zrange(rt.store.active_key(provider, account), 0, -1):
            job = rt.store.get(job_id.decode())
            if job is not None and not job.terminal:
                yield job


def orphans(rt: Runtime) -> list[Job]:
    """Jobs in progress with no live message, schedule entry, slot place or lease."""
    queued = _queued_task_ids(rt)
    found = []
    for job in _in_progress(rt):
        member = job.dispatch.get("member")
        if member and rt.redis.zscore(SCHEDULE_KEY, member) is not None:
            continue
        if job.dispatch.get("task_id") in queued or rt.redis.exists(f"if:lease:{job.id}"):
            continue
        if job.waiting == "slot" and rt.redis.zscore(rt.slots(job.provider, job.account).keys[1], job.id) is not None:
            continue
        found.append(job)
    return found


def reconcile(*, rt: Runtime | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Re-enqueue every orphaned job from its current step; returns what was (or would be) done."""
    rt = rt or runtime()
    done = []
    for job in orphans(rt):
        entry = {"job_id": job.id, "provider": job.provider, "account": job.account, "state": job.state,
                 "step": job.step}
        if not dry_run:
            if job.dispatch.get("member"):
                rt.store.schedule(job.dispatch["member"], 0)
            else:  # no dispatch recorded at all: give it a new one under its lease
                from tasks.dispatch import next_dispatch

                lease = rt.store.acquire(job.id, ttl=30, force=True)
                member = next_dispatch(job, job.step)
                rt.store.save(job, lease, release=True, schedule=(member, 0))  # type: ignore[arg-type]
            log.warning("job.reconciled", **entry)
        done.append(entry)
    return done
