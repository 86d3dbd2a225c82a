"""Orchestration overhead: N pull jobs through the fleet against a bare 5-task Celery chain.

Same machine, same Redis, 2 worker processes (one worker, concurrency 2) in both runs; the
sandbox processes instantly, so what is measured is the fleet's own cost per job (job
records, leases, budget tokens, the schedule, 3 HTTP calls and 3 tasks per pull job).
"""

from __future__ import annotations

import sys
import time

import redis

from bench.common import environment, record
from workers.procs import scheduler_argv, worker_argv


def _fleet(n: int, env: dict, group, url: str) -> dict:
    from tasks.producer import status, submit

    (group.log_dir.parent / "media" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 65536)
    sched = group.start("scheduler", scheduler_argv())
    worker = group.start("worker", worker_argv(None, concurrency=2, loglevel="WARNING"))
    group.wait_for_line(worker, "ready.", 60)
    group.wait_for_line(sched, "scheduler.started", 30)
    started = time.monotonic()
    ids = [submit({"provider": "gcore", "source": f"{url}/media/clip.mp4", "title": f"bench {i}"}) for i in range(n)]
    submitted = time.monotonic() - started
    pending = set(ids)
    while pending:
        pending = {i for i in pending if status(i)["state"] not in ("ready", "failed")}
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    failed = sum(1 for i in ids if status(i)["state"] != "ready")
    worker.stop()
    sched.stop()
    return {"jobs": n, "seconds": round(elapsed, 2), "jobs_per_s": round(n / elapsed, 1),
            "submit_seconds": round(submitted, 2), "failed": failed}


def _bare(n: int, env: dict, group) -> dict:
    from bench import bare_chain

    r = redis.Redis.from_url(env["REDIS_URL"])
    r.delete("bench:bare:done")
    worker = group.start("bare-worker", [sys.executable, "-m", "celery", "-A", "bench.bare_chain", "worker",
                                         "-Q", "bare", "-c", "2", "--loglevel", "INFO", "-n", "bare@%h",
                                         "--without-mingle", "--without-gossip"])
    group.wait_for_line(worker, "ready.", 60)
    started = time.monotonic()
    for i in range(n):
        bare_chain.send(str(i))
    while int(r.get("bench:bare:done") or 0) < n:
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    worker.stop()
    return {"chains": n, "seconds": round(elapsed, 2), "chains_per_s": round(n / elapsed, 1)}


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 500
    extra = {"INGEST_GCORE_RATE": "100000", "INGEST_GCORE_BURST": "1000", "INGEST_POLL_INITIAL": "0.05",
             "INGEST_POLL_MAX": "0.5"}
    with environment("orchestration", processing_seconds=0, extra_env=extra) as (env, group, url):
        fleet = _fleet(n, env, group, url)
        bare = _bare(n, env, group)
    ratio = round(fleet["jobs_per_s"] / bare["chains_per_s"], 2)
    record("orchestration", {"fleet": fleet, "bare_chain": bare, "ratio": ratio}, [
        "| run | items | seconds | per second |", "|---|---|---|---|",
        f"| fleet, {n} pull jobs to Gcore (sandbox, instant processing) | {n} | {fleet['seconds']} | "
        f"{fleet['jobs_per_s']} jobs/s |",
        f"| bare Celery chain of 5 no-op tasks | {n} | {bare['seconds']} | {bare['chains_per_s']} chains/s |",
        "", f"**ratio fleet / bare chain: {ratio}** (target >= 0.5 now, goal >= 0.8); failed jobs: {fleet['failed']}",
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
