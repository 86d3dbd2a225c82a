"""A fleet across hosts (issue 16, item 4, the benchmark): jobs per second with one and with
two worker hosts.

Hosts are network namespaces on a private bridge (bench/hosts.py): Redis, the scheduler and
the sandbox on one, a worker (2 processes) on each worker host; every call crosses the bridge.
N Gcore pull jobs (budgets and the provider's limits out of the way, instant processing) are
submitted on the server host, then timed until all are ready: first with one worker host,
then with two. All of it shares this machine's cores: a second host adds processes, not CPU,
so the figure shows that work spreads across hosts without loss, not a speed-up that more
machines would give.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from typing import Any

from bench.common import ROOT, WORK, record
from bench.hosts import Hosts, unavailable
from workers.procs import ProcessGroup, sandbox_argv, scheduler_argv, worker_argv

KEY = "bench-hosts-gcore-key-7a1"


SUBMIT_AND_WAIT = """
import json, sys, time
import redis
from tasks.producer import submit
from tasks.stats import STATS
n, source = int(sys.argv[1]), sys.argv[2]
r = redis.Redis.from_url(__import__('os').environ['REDIS_URL'])
before = int(r.hget(STATS['finished'], 'gcore:ready') or 0)
t0 = time.monotonic()
for i in range(n):
    submit({'provider': 'gcore', 'source': source, 'title': f'h{i}'})
submitted = time.monotonic() - t0
while int(r.hget(STATS['finished'], 'gcore:ready') or 0) - before < n:
    time.sleep(0.05)
print(json.dumps({'seconds': time.monotonic() - t0, 'submit_seconds': submitted}))
"""


def _measure(hosts: Hosts, env: dict[str, str], n: int, source: str) -> dict[str, Any]:
    out = json.loads(hosts.python("server", SUBMIT_AND_WAIT, str(n), source, env=env, timeout=900, cwd=ROOT))
    return {"jobs": n, "seconds": round(out["seconds"], 2), "jobs_per_s": round(n / out["seconds"], 1)}


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 300
    why = unavailable()
    if why is not None:
        raise SystemExit(f"across_hosts: {why}")
    work = WORK / "across_hosts"
    shutil.rmtree(work, ignore_errors=True)
    (work / "media").mkdir(parents=True)
    (work / "media" / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 65536)
    results: dict[str, Any] = {}
    with Hosts(f"ifb{uuid.uuid4().hex[:4]}", ["server", "w1", "w2"]) as hosts:
        server = hosts.ip("server")
        url = f"http://{server}:8900"
        env = {**os.environ, "REDIS_URL": f"redis://{server}:6390/0", "INGEST_GCORE_BASE_URL": url,
               "INGEST_GCORE_API_KEY": KEY, "INGEST_GCORE_RATE": "100000", "INGEST_GCORE_BURST": "1000",
               "INGEST_POLL_INITIAL": "0.05", "INGEST_POLL_MAX": "0.5", "INGEST_SOURCE_ROOTS": str(work / "media")}
        group = ProcessGroup(env, work / "logs")
        try:
            group.start("redis", hosts.argv("server", [shutil.which("redis-server") or "redis-server", "--bind", server,
                                                       "--port", "6390", "--save", "", "--appendonly", "no",
                                                       "--protected-mode", "no"]))
            sandbox = group.start("sandbox", hosts.argv("server", [
                *sandbox_argv(8900, work / "sandbox", work / "media", 0), "--host", server, "--gcore-api-key", KEY]))
            group.wait_for_line(sandbox, "sandbox listening on", 30)
            group.wait_for_line(group.start("scheduler", hosts.argv("server", scheduler_argv())),
                                "scheduler.started", 30)
            source = f"{url}/media/clip.mp4"
            for label, worker_hosts in (("one worker host", ["w1"]), ("two worker hosts", ["w1", "w2"])):
                started = [group.start(f"{h}-{len(worker_hosts)}", hosts.argv(h, worker_argv(
                    None, concurrency=2, name=f"{h}x{len(worker_hosts)}", loglevel="WARNING")))
                    for h in worker_hosts]
                for proc in started:
                    group.wait_for_line(proc, "ready.", 60)
                _measure(hosts, env, 20, source)  # warm-up: connections, the first token
                since = time.time()
                results[label] = _measure(hosts, env, n, source)
                calls = json.loads(hosts.python("server", (
                    f"import json, requests; print(json.dumps(requests.get({url!r} + '/_sandbox/log', "
                    f"params={{'since': {since}}}, timeout=30).json()['entries']))"), env=env, timeout=600, cwd=ROOT))
                results[label]["provider_calls_by_host"] = {
                    h: sum(1 for c in calls if c.get("client") == hosts.ip(h)) for h in worker_hosts}
                for proc in started:
                    proc.stop()
        finally:
            group.stop_all()
    ratio = round(results["two worker hosts"]["jobs_per_s"] / results["one worker host"]["jobs_per_s"], 2)
    record("across_hosts", {"results": results, "two_over_one": ratio}, [
        f"{n} Gcore pull jobs; hosts are network namespaces on one bridge, all on this machine's cores.", "",
        "| worker hosts (2 processes each) | seconds | jobs/s | provider calls made by each host |", "|---|---|---|---|",
        *[f"| {k} | {v['seconds']} | {v['jobs_per_s']} | {v['provider_calls_by_host']} |" for k, v in results.items()],
        "",
        f"**two hosts / one host: {ratio}** (the same cores: this shows the work spreads across hosts "
        "without loss, not the speed-up of more machines)",
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
