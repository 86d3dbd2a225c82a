"""Redis memory per job (issue 14, item 5): N Gcore pull jobs through the fleet, with Redis's
``used_memory`` read (after a settle) at three points against the empty fleet:

* queued: submitted, no worker yet (record, idempotency key, indexes, schedule entry, message);
* finished: every job ``ready`` (records kept for INGEST_JOB_RETENTION, the events stream);
* live: a second batch, every job waiting at the provider in ``processing`` (its poll in the
  schedule), measured against the first batch finished.

``MEMORY USAGE`` of one job's own keys is reported beside, so the per-job figure can be read
as "what one job holds" and "what the shared structures cost per job".
"""

from __future__ import annotations

import sys
import time

import redis
import requests

from bench.common import environment, record
from workers.procs import scheduler_argv, worker_argv


def _used(r: redis.Redis) -> int:
    time.sleep(1.0)  # let lazy frees and the allocator settle
    return int(r.info("memory")["used_memory"])


def _wait(r: redis.Redis, ids: list[str], states: set[str], timeout: float) -> None:
    from tasks.producer import status

    deadline = time.monotonic() + timeout
    pending = list(ids)
    while pending:
        pending = [i for i in pending if status(i)["state"] not in states]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} jobs not in {states} after {timeout} s")
        time.sleep(0.2)


def _own_keys(r: redis.Redis, job_id: str, key: str = "if:idem:gcore:default:bytes-0") -> dict[str, int]:
    names = {"record": f"if:job:{job_id}", "fence": f"if:fence:{job_id}", "idempotency": key}
    return {what: int(r.memory_usage(name) or 0) for what, name in names.items()}


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 2000
    # Polls at the shipped pace (1 s, then up to 30 s apart): 2,000 jobs polled every 2 s would
    # keep the workers from taking the rest of the batch to the provider.
    extra = {"INGEST_GCORE_RATE": "100000", "INGEST_GCORE_BURST": "1000",
             "INGEST_SECRET_KEY": "Q2Nhbm5vdC1ndWVzcy10aGlzLXRlc3Qta2V5LTAwMDE="}
    with environment("redis_bytes", processing_seconds=0, extra_env=extra) as (env, group, url):
        from tasks.producer import submit

        r = redis.Redis.from_url(env["REDIS_URL"])
        (group.log_dir.parent / "media" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 65536)

        def batch(name: str) -> list[str]:
            return [submit({"provider": "gcore", "source": f"{url}/media/clip.mp4", "title": f"bench {i}",
                            "idempotency_key": f"{name}-{i}", "metadata": {"team": "bench"}}) for i in range(n)]

        sched = group.start("scheduler", scheduler_argv())
        group.wait_for_line(sched, "scheduler.started", 30)
        empty = _used(r)
        first = batch("bytes")  # 1. queued: no worker yet
        queued = _used(r)
        own_queued = _own_keys(r, first[0])

        worker = group.start("worker", worker_argv(None, concurrency=4, loglevel="WARNING"))
        group.wait_for_line(worker, "ready.", 60)
        _wait(r, first, {"ready"}, 900)  # 2. finished (the provider processes at once)
        finished = _used(r)
        own_finished = _own_keys(r, first[0])

        requests.put(f"{url}/_sandbox/faults", json={"provider": "gcore", "processing_seconds": 3600}, timeout=5)
        second = batch("live")  # 3. live: a second batch, held at the provider
        _wait(r, second, {"processing"}, 900)
        live = _used(r)
        own_live = _own_keys(r, second[0], key="if:idem:gcore:default:live-0")
        worker.stop()
        sched.stop()

    per = {"queued": round((queued - empty) / n), "live_processing": round((live - finished) / n),
           "finished": round((finished - empty) / n)}
    results = {"jobs": n, "bytes_per_job": per, "one_job_keys": {"queued": own_queued, "live": own_live,
                                                                   "finished": own_finished},
               "used_memory": {"empty": empty, "queued": queued, "finished": finished, "finished_and_live": live}}
    record("redis_bytes", results, [
        f"{n} Gcore pull jobs per point (64 KiB source by URL, a title, one metadata entry, an idempotency key).",
        "", "| point | Redis bytes per job (used_memory delta / jobs) | one job's own keys (MEMORY USAGE) |",
        "|---|---|---|",
        f"| queued (no worker yet) | {per['queued']} | {sum(own_queued.values())} |",
        f"| live, waiting at the provider (a second batch) | {per['live_processing']} | {sum(own_live.values())} |",
        f"| finished (kept for INGEST_JOB_RETENTION) | {per['finished']} | {sum(own_finished.values())} |",
        "", "The difference between the two columns is the shared structures: the jobs index, the "
        "account's backlog, the schedule, queued messages, the events stream (capped at 100,000 "
        "entries) and the counters.",
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
