"""Fleet-wide provider budget: does the fleet keep to a provider's limit, and use it?

4 worker processes (4 Celery nodes, concurrency 1 each: Celery's ``rate_limit`` is per node),
the sandbox enforcing 10 req/s on the Gcore REST API (429 + Retry-After above it) and counting,
N pull jobs (default 300), the fleet configured for the same 10 req/s (``INGEST_GCORE_RATE=10``,
burst 1, default headroom). Measured at the sandbox, from its request log:

* the most requests in any 1-second window (target <= 10);
* 429s received (target 0: the sandbox's limit equals the configured one);
* utilization = achieved rate / 10 while a backlog exists (target >= 0.9).

In the same run, on the same Redis and sandbox, the same number of calls through Celery's own
``rate_limit="10/s"`` on 4 nodes (``bench/celery_rate_limit.py``) as the reference: its
overshoot = most requests in any 1-second window / 10.
"""

from __future__ import annotations

import math
import sys
import time

import redis
import requests

from bench.common import environment, record
from sandbox.media import make_video_file
from workers.procs import scheduler_argv, worker_argv

LIMIT = 10  # req/s, at the sandbox and in the fleet's configuration
NODES = 4  # worker processes, one Celery node each, concurrency 1
#: The Gcore REST API the limit applies to (not TUS uploads, not the media origin).
API_ENDPOINTS = ["gcore.create_video", "gcore.list_videos", "gcore.get_video", "gcore.delete_video",
                 "gcore.upload_params"]
CLIP_SIZE = 256 * 1024
TERMINAL = ("ready", "failed", "cancelled")


def _limit_sandbox(url: str) -> None:
    requests.put(f"{url}/_sandbox/faults", json={"provider": "gcore", "rate_limit_rps": LIMIT,
                                                  "rate_limit_endpoints": API_ENDPOINTS}, timeout=5).raise_for_status()


def _api_calls(url: str) -> list[dict]:
    entries = requests.get(f"{url}/_sandbox/log", params={"provider": "gcore"}, timeout=60).json()["entries"]
    return sorted((e for e in entries if e["endpoint"] in API_ENDPOINTS), key=lambda e: e["t"])


def max_window(times: list[float], width: float = 1.0) -> tuple[int, float]:
    """The most timestamps in any window ``[t, t + width)``, and where that window starts."""
    best, at, j = 0, times[0] if times else 0.0, 0
    for i, t in enumerate(times):  # times sorted; window starts at each call
        while j < len(times) and times[j] < t + width:
            j += 1
        if j - i > best:
            best, at = j - i, t
    return best, at


def measure(calls: list[dict]) -> dict:
    """The figures of one run from its API calls at the sandbox (sorted by arrival)."""
    times = [e["t"] for e in calls]
    n = len(times)
    if n < 2:
        return {"calls": n}
    peak, peak_at = max_window(times)
    seconds = times[-1] - times[0]
    # Backlog period: first call to the call at the 95th percentile of the sequence (the last
    # 5 % are the tail, when few jobs are left and their polls are spaced by the poll interval).
    # Rate over it = calls after the first / elapsed (n calls span n - 1 intervals).
    p95 = math.ceil(0.95 * n) - 1
    backlog_seconds = times[p95] - times[0]
    backlog_rate = p95 / backlog_seconds if backlog_seconds > 0 else 0.0
    statuses: dict[str, int] = {}
    for e in calls:
        statuses[str(e["status"])] = statuses.get(str(e["status"]), 0) + 1
    by_endpoint: dict[str, int] = {}
    for e in calls:
        by_endpoint[e["endpoint"]] = by_endpoint.get(e["endpoint"], 0) + 1
    in_peak = [e for e in calls if peak_at <= e["t"] < peak_at + 1]
    return {
        "calls": n, "seconds": round(seconds, 2), "max_in_1s": peak,
        "max_in_1s_window_start": round(peak_at - times[0], 3),
        "status_429": sum(1 for e in calls if e["status"] == 429),
        "achieved_rate": round((n - 1) / seconds, 2) if seconds > 0 else 0.0,
        "backlog_seconds": round(backlog_seconds, 2), "backlog_rate": round(backlog_rate, 2),
        "utilization": round(backlog_rate / LIMIT, 3),
        "statuses": statuses, "by_endpoint": by_endpoint,
        "peak_window": [{"dt": round(e["t"] - peak_at, 4), "endpoint": e["endpoint"], "status": e["status"]}
                        for e in in_peak],
    }


def _fleet(n: int, env: dict, group, url: str) -> dict:
    from tasks.producer import status, submit

    make_video_file(group.log_dir.parent / "media" / "clip.mp4", CLIP_SIZE)
    sched = group.start("scheduler", scheduler_argv())
    workers = [group.start(f"worker{i}", worker_argv(None, concurrency=1, name=f"w{i}")) for i in range(NODES)]
    for w in workers:
        group.wait_for_line(w, "ready.", 60)
    group.wait_for_line(sched, "scheduler.started", 30)
    _limit_sandbox(url)
    started, wall_started = time.monotonic(), time.time()
    ids = [submit({"provider": "gcore", "source": f"{url}/media/clip.mp4", "title": f"budget {i}"})
           for i in range(n)]
    deadline = started + 120 + n * 2
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        pending = {i for i in pending if status(i)["state"] not in TERMINAL}
        time.sleep(0.1)
    elapsed = time.monotonic() - started
    states: dict[str, int] = {}
    for i in ids:
        s = status(i)["state"]
        states[s] = states.get(s, 0) + 1
    failed = [status(i) for i in ids if status(i)["state"] == "failed"]
    for w in workers:
        w.stop()
    sched.stop()
    calls = _api_calls(url)
    return {"jobs": n, "job_seconds": round(elapsed, 2), "states": states, "timed_out": len(pending),
            "failed_errors": sorted({str(j.get("error")) for j in failed})[:5],
            "first_call_after_submit_s": round(calls[0]["t"] - wall_started, 3) if calls else None,
            **measure(calls)}


def _reference(n_calls: int, env: dict, group, url: str) -> dict:
    from bench import celery_rate_limit

    r = redis.Redis.from_url(env["REDIS_URL"])
    r.delete("bench:ratelimited:done", "bench:ratelimited:status")
    workers = [group.start(f"rl-worker{i}", [sys.executable, "-m", "celery", "-A", "bench.celery_rate_limit",
                                             "worker", "-Q", "ratelimited", "-c", "1", "--loglevel", "INFO",
                                             "-n", f"rl{i}@%h", "--without-mingle", "--without-gossip"])
               for i in range(NODES)]
    for w in workers:
        group.wait_for_line(w, "ready.", 60)
    requests.post(f"{url}/_sandbox/reset", timeout=5).raise_for_status()
    _limit_sandbox(url)
    started = time.monotonic()
    for _ in range(n_calls):
        celery_rate_limit.send()
    deadline = started + 60 + n_calls
    while int(r.get("bench:ratelimited:done") or 0) < n_calls and time.monotonic() < deadline:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    done = int(r.get("bench:ratelimited:done") or 0)
    for w in workers:
        w.stop()
    return {"tasks": n_calls, "tasks_done": done, "task_seconds": round(elapsed, 2), **measure(_api_calls(url))}


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 300
    extra = {"INGEST_GCORE_RATE": str(LIMIT), "INGEST_GCORE_BURST": "1", "INGEST_POLL_INITIAL": "0.5",
             "INGEST_POLL_MAX": "2"}
    with environment("budget", processing_seconds=0, extra_env=extra) as (env, group, url):
        from tasks.config import Settings

        headroom = Settings.from_env(env).budget_headroom
        fleet = _fleet(n, env, group, url)
        reference = _reference(fleet["calls"], env, group, url)
    aim = LIMIT * (1 - headroom)
    overshoot = round(reference["max_in_1s"] / LIMIT, 2)
    verdicts = {
        "max_in_1s_le_10": fleet["max_in_1s"] <= LIMIT,
        "no_429": fleet["status_429"] == 0,
        "utilization_ge_0.9": fleet["utilization"] >= 0.9,
        "all_jobs_ready": fleet["states"].get("ready", 0) == n,
    }
    results = {"limit_rps": LIMIT, "nodes": NODES, "headroom": headroom, "fleet_aim_rps": round(aim, 2),
               "fleet": fleet, "celery_rate_limit": reference, "reference_overshoot": overshoot,
               "verdicts": verdicts}

    def ok(v: bool) -> str:
        return "**pass**" if v else "**FAIL**"

    def row(label: str, m: dict) -> str:
        return (f"| {label} | {m['calls']} | {m['seconds']} | {m['max_in_1s']} | {m['status_429']} | "
                f"{m['achieved_rate']} | {m['backlog_rate']} | {m['utilization']} |")

    record("budget", results, [
        f"{NODES} worker processes ({NODES} Celery nodes x concurrency 1); the sandbox enforces {LIMIT} req/s "
        f"(burst of one second's worth, 429 + Retry-After above it) on the Gcore REST API "
        f"({', '.join(f'`{e}`' for e in API_ENDPOINTS)}) and logs every request's arrival time. "
        f"The fleet is configured for {LIMIT} req/s, burst 1, headroom {headroom:g}, so it aims at "
        f"{aim:g} req/s (utilization ceiling {aim / LIMIT:g}).",
        "",
        "| run | API calls | seconds | max in any 1-s window | 429s | achieved rate (req/s) | "
        "backlog rate (req/s) | utilization |",
        "|---|---|---|---|---|---|---|---|",
        row(f"fleet: {n} pull jobs, GCRA budget in Redis", fleet),
        row(f"reference: {fleet['calls']} tasks, Celery `rate_limit=\"10/s\"`", reference),
        "",
        "- max in any 1-s window: the most requests whose arrival time at the sandbox falls in "
        "`[t, t + 1)`, over every call's `t` (every request counts, 429s included).",
        "- achieved rate: (calls - 1) / (last call - first call).",
        "- backlog rate: the calls after the first up to the call at the 95th percentile of the "
        "sequence, divided by the time from the first call to that call (the last 5 % are the tail, "
        "when few jobs are left and their polls are spaced by the poll interval). "
        f"Utilization = backlog rate / {LIMIT}.",
        "",
        f"- fleet: max in any 1-s window {fleet['max_in_1s']} (target <= {LIMIT}): "
        f"{ok(verdicts['max_in_1s_le_10'])}",
        f"- fleet: 429s {fleet['status_429']} (target 0): {ok(verdicts['no_429'])}",
        f"- fleet: utilization {fleet['utilization']} (target >= 0.9; ceiling with headroom "
        f"{headroom:g}: {aim / LIMIT:g}): {ok(verdicts['utilization_ge_0.9'])}",
        f"- fleet: jobs {fleet['states']} in {fleet['job_seconds']} s: {ok(verdicts['all_jobs_ready'])}",
        f"- **reference overshoot: {overshoot}x** the limit (max {reference['max_in_1s']} requests in one "
        f"second from {NODES} nodes at `rate_limit=\"10/s\"` each), {reference['status_429']} of "
        f"{reference['calls']} calls answered 429.",
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
