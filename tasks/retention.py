"""How long the fleet keeps what it knows about a job, and how it is listed (issue 14, item 5).

A terminal job's record, its fencing counter, its idempotency key and the notifications kept
for it expire ``INGEST_JOB_RETENTION`` seconds (30 days) after its last write: the job write
sets those TTLs (``lua/job_write.lua``). What no TTL reaches is the index of every job by
creation time (``if:jobs``): :func:`prune` drops the entries whose record is gone, and, asked
to, removes terminal jobs older than a given age at once. The scheduler runs it every hour;
``ingest-fleet prune`` is the operator's.

:func:`page` lists jobs newest first, in pages with a cursor, so ``ingest-fleet jobs`` costs
the same at a million jobs as at ten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tasks import keys
from tasks.jobstore import Job
from tasks.redis_text import text
from tasks.runtime import Runtime

BATCH = 500


@dataclass(frozen=True)
class Pruned:
    removed: int  # terminal jobs removed now (older than asked)
    dangling: int  # index entries whose record had already expired


def _forget(rt: Runtime, job: Job) -> None:
    pipe = rt.redis.pipeline(transaction=True)
    pipe.delete(rt.store.key(job.id), keys.fence(job.id), keys.webhook_events(job.id), keys.cancel(job.id),
                rt.store.idem_key(job.provider, job.account, job.idempotency_key))
    pipe.zrem(keys.JOBS, job.id)
    pipe.execute()


def prune(rt: Runtime, *, older_than: float | None = None, dry_run: bool = False) -> Pruned:
    """Drop index entries of expired records; with ``older_than`` (seconds), also remove
    terminal jobs that ended longer ago than that. Jobs in progress are never touched."""
    now = rt.clock.now()
    horizon = now - older_than if older_than is not None else None
    removed = dangling = 0
    start = 0
    while True:
        # Oldest first, every entry: a record may have expired early (a shorter retention on
        # the workers that wrote it), and reading 500 at a time keeps an hourly pass cheap.
        ids = rt.redis.zrangebyscore(keys.JOBS, "-inf", now, start=start, num=BATCH)
        if not ids:
            break
        names = [text(i) for i in ids]
        raws = rt.redis.mget([rt.store.key(i) for i in names])
        kept = 0
        for job_id, raw in zip(names, raws, strict=True):
            if raw is None:
                dangling += 1
                if not dry_run:
                    rt.redis.zrem(keys.JOBS, job_id)
                continue
            job = Job.from_json(raw)
            if horizon is not None and job.terminal and (job.finished_at or job.updated_at) < horizon:
                removed += 1
                if not dry_run:
                    _forget(rt, job)
                continue
            kept += 1
        start += kept if not dry_run else len(names)
    return Pruned(removed, dangling)


def page(rt: Runtime, *, limit: int = 100, cursor: str | None = None, since: float | None = None,
         keep: Callable[[Job], bool] = lambda job: True) -> tuple[list[dict[str, Any]], str | None]:
    """Up to ``limit`` public records, newest first, created after ``since`` (unix time) and
    kept by ``keep``; and the cursor of the next page (None at the end)."""
    high: str = f"({cursor}" if cursor else "+inf"
    low: str = str(since) if since is not None else "-inf"
    out: list[dict[str, Any]] = []
    while len(out) < limit:
        rows: list[Any] = list(rt.redis.zrevrangebyscore(keys.JOBS, high, low, start=0, num=BATCH, withscores=True))
        if not rows:
            return out, None
        for job_id, score in rows:
            high = f"({score!r}"
            raw = rt.redis.get(rt.store.key(text(job_id)))
            if raw is None:
                continue
            job = Job.from_json(raw)
            if keep(job):
                out.append(job.public())
                if len(out) == limit:
                    return out, repr(score)
    return out, None
