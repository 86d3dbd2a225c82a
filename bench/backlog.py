"""A large backlog (issue 16, item 3): N pull jobs (100,000 by default) waiting on slow
provider processing, across two Gcore accounts, each served by a sandbox of its own (so each
sandbox's request log counts one account's calls).

Measured, with one worker (2 processes) and the scheduler:

* the submit rate (one producer process, ``tasks.producer.submit``);
* scheduler lag while polls are due: every second, how long the most overdue entry of the
  schedule has been due (``ZRANGEBYSCORE if:schedule -inf now``), p50 / p99 / max;
* RSS over time of the worker (parent and pool), the scheduler and Redis, every 5 s;
* calls in any one second at each account's sandbox, against the account's budget
  (``INGEST_GCORE_RATE``): never above it;
* at full size: the latency of ``ingest-fleet jobs``, ``budgets``, ``status`` and a metrics
  scrape.

The sandbox's processing outlasts the run, so every created job keeps polling (at
``INGEST_POLL_MAX``) and the budget, not the fleet, sets the pace: most jobs wait their turn
in the schedule or the queue, without a worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import psutil
import redis
import requests

from bench.common import SANDBOX_KEY, environment, record, wait_healthy
from workers.embedded_redis import free_port
from workers.procs import sandbox_argv, scheduler_argv, worker_argv

RATE = 40  # each account's budget, calls per second (Gcore's shipped default is 4)
WINDOW = int(os.environ.get("BENCH_BACKLOG_WINDOW", "240"))  # seconds the fleet works on the backlog once it is submitted


class Sampler(threading.Thread):
    """Every second: the schedule's oldest overdue age; every 5 s: the processes' RSS."""

    def __init__(self, r: redis.Redis, procs: dict[str, psutil.Process]):
        super().__init__(daemon=True)
        self.r, self.procs = r, procs
        self.lag: list[float] = []
        self.due: list[int] = []
        self.rss: list[dict[str, float]] = []
        self.running = True

    def run(self) -> None:
        started = time.monotonic()
        last_rss = -5.0
        while self.running:
            sec, usec = self.r.time()
            now = sec + usec / 1e6
            oldest = self.r.zrangebyscore("if:schedule", "-inf", now, start=0, num=1, withscores=True)
            self.lag.append(round(now - oldest[0][1], 3) if oldest else 0.0)
            self.due.append(int(self.r.zcount("if:schedule", "-inf", now)))
            if time.monotonic() - last_rss >= 5:
                last_rss = time.monotonic()
                row = {"t": round(last_rss - started, 1)}
                for name, proc in self.procs.items():
                    try:
                        row[name] = round(proc.memory_info().rss / 1e6, 1)
                        if name == "worker":
                            row["worker pool"] = round(max(c.memory_info().rss for c in proc.children()) / 1e6, 1)
                    except (psutil.Error, ValueError):
                        pass
                self.rss.append(row)
            time.sleep(1.0)


def _timed(argv: list[str]) -> float:
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{argv}: {done.stderr[-500:]}")
    return round(time.monotonic() - started, 2)


def _calls_per_second(url: str) -> Counter[int]:
    entries = requests.get(f"{url}/_sandbox/log", params={"provider": "gcore"}, timeout=120).json()["entries"]
    return Counter(int(e["t"]) for e in entries)


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 100_000
    extra = {"INGEST_GCORE_RATE": str(RATE), "INGEST_GCORE_BURST": "1", "INGEST_GCORE__TEAMB__RATE": str(RATE),
             "INGEST_GCORE__TEAMB__BURST": "1", "INGEST_GCORE__TEAMB__API_KEY": SANDBOX_KEY,
             "INGEST_POLL_INITIAL": "5", "INGEST_POLL_MAX": "30"}
    with environment("backlog", processing_seconds=100_000, extra_env=extra) as (env, group, url):
        media = group.log_dir.parent / "media"
        (media / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 65536)
        port_b = free_port()
        url_b = f"http://127.0.0.1:{port_b}"
        sandbox_b = group.start("sandbox-b", sandbox_argv(port_b, group.log_dir.parent / "sandbox-b", media, 100_000)
                                + ["--gcore-api-key", SANDBOX_KEY])
        wait_healthy(url_b, sandbox_b)
        for where in (env, group.env, os.environ):
            where["INGEST_GCORE__TEAMB__BASE_URL"] = url_b
        from tasks.producer import submit

        r = redis.Redis.from_url(env["REDIS_URL"])
        scheduler = group.start("scheduler", scheduler_argv())
        group.wait_for_line(scheduler, "scheduler.started", 30)
        worker = group.start("worker", worker_argv(None, concurrency=2, loglevel="WARNING"))
        group.wait_for_line(worker, "ready.", 60)
        metrics_port = free_port()
        group.start("metrics", [sys.executable, "-m", "workers.cli", "metrics", "--port", str(metrics_port)])
        procs = {"worker": psutil.Process(worker.pid), "scheduler": psutil.Process(scheduler.pid),
                 "redis": psutil.Process(int(r.info("server")["process_id"]))}
        sampler = Sampler(r, procs)
        sampler.start()

        t0 = time.monotonic()
        ids = []
        for i in range(n):
            account = "default" if i % 2 == 0 else "teamb"
            ids.append(submit({"provider": "gcore", "account": account, "source": f"{url if account == 'default' else url_b}"
                               f"/media/clip.mp4", "title": f"backlog {i}"}))
        submit_s = time.monotonic() - t0
        # The window, and at least 90 s with the whole backlog in place.
        time.sleep(max(WINDOW - (time.monotonic() - t0), 90.0))
        window = time.monotonic() - t0

        cli = [sys.executable, "-m", "workers.cli"]
        latency = {
            "jobs (first page of 100)": _timed([*cli, "jobs"]),
            "budgets": _timed([*cli, "budgets"]),
            "status (one job)": _timed([*cli, "status", ids[n // 2]]),
        }
        started = time.monotonic()
        scrape = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=120)
        scrape.raise_for_status()
        latency["metrics scrape"] = round(time.monotonic() - started, 2)
        sampler.running = False
        sampler.join()
        states = {k.decode(): int(v) for k, v in r.hgetall("if:stats:states").items()}
        per_second = {"default": _calls_per_second(url), "teamb": _calls_per_second(url_b)}
        worst = {k: max(v.values()) if v else 0 for k, v in per_second.items()}
        calls = {k: sum(v.values()) for k, v in per_second.items()}

    lag = sorted(sampler.lag)

    def pct(p: float) -> float:
        return lag[min(len(lag) - 1, int(p * len(lag)))] if lag else 0.0

    first, last = sampler.rss[1] if len(sampler.rss) > 1 else sampler.rss[0], sampler.rss[-1]
    results: dict[str, Any] = {
        "jobs": n, "submit_seconds": round(submit_s, 1), "submit_per_s": round(n / submit_s, 1),
        "window_s": round(window), "lag_p50_s": pct(0.5), "lag_p99_s": pct(0.99), "lag_max_s": lag[-1] if lag else 0,
        "due_max": max(sampler.due) if sampler.due else 0, "rss_samples": sampler.rss,
        "calls_max_per_s": worst, "calls": calls, "budget_per_s": RATE, "latency_s": latency, "states": states,
    }
    record("backlog", results, [
        f"{n} Gcore pull jobs over two accounts (a sandbox each, processing outlasting the run); budget "
        f"{RATE} calls/s per account; one worker (2 processes); {round(window)} s from the first submit.", "",
        "| figure | value |", "|---|---|",
        f"| submit rate (one producer) | {results['submit_per_s']} jobs/s ({results['submit_seconds']} s) |",
        f"| scheduler lag, oldest due entry, p50 / p99 / max | {results['lag_p50_s']} / {results['lag_p99_s']} / "
        f"{results['lag_max_s']} s (most due at once: {results['due_max']}) |",
        f"| most calls in one second at each account's sandbox (budget {RATE}) | {worst} |",
        f"| calls made in the window | {calls} |",
        *[f"| latency: {k} | {v} s |" for k, v in latency.items()],
        f"| jobs by state at the end | {states} |", "",
        "| RSS MB | at the first sample | at the end |", "|---|---|---|",
        *[f"| {k} | {first.get(k)} | {last.get(k)} |" for k in ("worker", "worker pool", "scheduler", "redis")],
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
