"""Orchestration cost (issue 16, items 1 and 2): the same work through the fleet and through a
bare Celery chain, and what each costs Redis.

In one run, on the same Redis and the same worker settings (one worker, 2 processes, acks
late, no prefetch, task events on):

* **fleet, all five steps**: N Brightcove push jobs of a 64 KiB file (create the video, get
  the upload target, upload to the S3 stand-in, submit the ingest, await ``ready``), budgets
  out of the way, the sandbox processing instantly;
* **fleet, pull**: N Gcore pull jobs (fewer tasks: the row says how many);
* **bare chain**: N chains of 5 no-op tasks (bench/bare_chain.py).

Each row: jobs per second, tasks per second (tasks counted as they ran), and Redis commands and
round trips per job: all of them from ``INFO commandstats`` deltas (every client), and by task
from the probe (bench/probe/sitecustomize.py) in the worker and scheduler processes. The
benchmark's own waiting (reading the finished count) is left out of the per-job figures; the
submission is counted (it is the job's cost).
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import redis
import requests

from bench.common import ROOT, cpu_seconds, environment, record, sandbox_exports
from workers.procs import scheduler_argv, worker_argv

PROBE = ROOT / "bench" / "probe"
CLIP = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 65536


def _commandstats(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}


def _probe_env(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return {"BENCH_PROBE_DIR": str(folder),
            "PYTHONPATH": os.pathsep.join(p for p in (str(PROBE), str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _run(name: str, n: int, r: redis.Redis, group: Any, procs: list[tuple[str, list[str]]],
         send: Any, finished: Any) -> dict[str, Any]:
    """Start ``procs`` with the probe, send ``n`` items, wait for ``finished() >= n``: the figures."""
    probe = sys.modules["sitecustomize"]
    folder = group.log_dir.parent / f"probe-{name}"
    started = [group.start(f"{name}-{label}", argv, env=_probe_env(folder)) for label, argv in procs]
    for proc in started:
        group.wait_for_line(proc, "scheduler.started" if "scheduler" in proc.name else "ready.", 60)
    time.sleep(1.0)
    roles = _roles(r, group, started)
    base_cpu = cpu_seconds(roles)
    base_probe, base_stats, base_own = probe.totals(str(folder)), _commandstats(r), probe.snapshot()
    t0 = time.monotonic()
    for i in range(n):
        send(i)
    submitted = time.monotonic() - t0
    own_submit = probe.snapshot()
    while finished() < n:
        time.sleep(0.1)
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(roles)
    own_wait = probe.snapshot()
    stats = _commandstats(r)
    time.sleep(1.2)  # every process has flushed its counts since the last task
    counts = probe.totals(str(folder))
    for proc in reversed(started):
        proc.stop()

    by_task = {task: {k: c[k] - base_probe.get(task, {}).get(k, 0) for k in c} for task, c in counts.items()}
    tasks = sum(c["tasks"] for c in by_task.values())
    commands = sum(stats.values()) - sum(base_stats.values())
    commands -= own_wait["commands"] - own_submit["commands"]  # the benchmark's own reads while waiting
    submit_cmds = own_submit["commands"] - base_own["commands"]
    submit_rt = own_submit["round_trips"] - base_own["round_trips"]
    per_command = {k: round((v - base_stats.get(k, 0)) / n, 2) for k, v in sorted(stats.items())
                   if v - base_stats.get(k, 0) >= n / 10}
    return {
        "items": n, "seconds": round(elapsed, 2), "submit_seconds": round(submitted, 2),
        "per_s": round(n / elapsed, 1), "tasks": tasks, "tasks_per_item": round(tasks / n, 2),
        "tasks_per_s": round(tasks / elapsed, 1),
        "commands_per_item": round(commands / n, 1),
        "round_trips_per_item": round((sum(c["round_trips"] for c in by_task.values()) + submit_rt) / n, 1),
        "by_task": {task: {"tasks": c["tasks"], "commands_per_item": round(c["commands"] / n, 2),
                           "round_trips_per_item": round(c["round_trips"] / n, 2)}
                    for task, c in sorted(by_task.items()) if c["commands"] or c["tasks"]},
        "submit": {"commands_per_item": round(submit_cmds / n, 2), "round_trips_per_item": round(submit_rt / n, 2)},
        "commands_by_name_per_item": per_command,
        "cpu_ms_per_item": {k: round((cpu[k] - base_cpu[k]) * 1000 / n, 2) for k in cpu},
    }


def _roles(r: redis.Redis, group: Any, started: list[Any]) -> dict[str, list[psutil.Process]]:
    """The processes whose CPU time a run is charged, by role."""
    roles: dict[str, list[psutil.Process]] = {
        "redis": [psutil.Process(int(r.info("server")["process_id"]))],
        "sandbox": [psutil.Process(p.pid) for p in group.procs if p.name == "sandbox"],
        "benchmark (submits)": [psutil.Process()],
    }
    for proc in started:
        parent = psutil.Process(proc.pid)
        role = "scheduler" if "scheduler" in proc.name else "worker"
        roles[role] = [parent]
        if role == "worker":
            roles["worker pool"] = parent.children(recursive=True)
    return roles


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 300
    os.environ["BENCH_PROBE_DIR"] = os.devnull  # this process counts in memory only (see snapshot)
    sys.path.insert(0, str(PROBE))
    probe = importlib.import_module("sitecustomize")
    extra = {"INGEST_BRIGHTCOVE_RATE": "100000", "INGEST_BRIGHTCOVE_BURST": "1000",
             "INGEST_BRIGHTCOVE_ENTITY_RATE": "0", "INGEST_GCORE_RATE": "100000", "INGEST_GCORE_BURST": "1000",
             "INGEST_POLL_INITIAL": "0.05", "INGEST_POLL_MAX": "0.5"}
    with environment("orchestration", processing_seconds=0, extra_env=extra) as (env, group, url):
        sandbox_exports(group, env, keep=extra)
        # The provider's own limits out of the way too (Brightcove's 20 req/s and its per-video limit).
        lifted = requests.put(f"{url}/_sandbox/faults", timeout=5,
                              json={"provider": "brightcove", "rate_limit_rps": 0, "per_video_per_minute": 0})
        lifted.raise_for_status()
        from tasks.producer import submit
        from tasks.stats import STATS

        r = redis.Redis.from_url(env["REDIS_URL"])
        sources = Path(env["INGEST_SOURCE_ROOTS"])
        (sources / "clip.mp4").write_bytes(CLIP)
        (group.log_dir.parent / "media" / "clip.mp4").write_bytes(CLIP)
        fleet_procs = [("scheduler", scheduler_argv()), ("worker", worker_argv(None, concurrency=2))]

        def finished(provider: str) -> Any:
            return lambda: sum(int(r.hget(STATS["finished"], f"{provider}:{s}") or 0) for s in ("ready", "failed"))

        push = _run("push", n, r, group, fleet_procs,
                    lambda i: submit({"provider": "brightcove", "source": str(sources / "clip.mp4"), "title": f"b{i}"}),
                    finished("brightcove"))
        pull = _run("pull", n, r, group, fleet_procs,
                    lambda i: submit({"provider": "gcore", "source": f"{url}/media/clip.mp4", "title": f"g{i}"}),
                    finished("gcore"))
        from bench import bare_chain

        bare = _run("bare", n, r, group,
                    [("worker", [sys.executable, "-m", "celery", "-A", "bench.bare_chain", "worker", "-Q", "bare",
                                 "-c", "2", "--loglevel", "INFO", "-n", "bare@%h", "--without-mingle",
                                 "--without-gossip"])],
                    lambda i: bare_chain.send(str(i)), lambda: int(r.get("bench:bare:done") or 0))
        failed = {p: int(r.hget(STATS["finished"], f"{p}:failed") or 0) for p in ("brightcove", "gcore")}
    del probe

    ratio = round(push["per_s"] / bare["per_s"], 2)
    task_ratio = round(push["tasks_per_s"] / bare["tasks_per_s"], 2)
    cmd_ratio = round(push["commands_per_item"] / bare["commands_per_item"], 2)
    rows = [("fleet, Brightcove push of 64 KiB (all five steps)", push),
            (f"fleet, Gcore pull ({pull['tasks_per_item']} tasks a job)", pull),
            ("bare Celery chain of 5 no-op tasks", bare)]
    lines = [
        f"{n} items per row; one worker, 2 processes; budgets out of the way; instant processing.", "",
        "| run | per second | tasks a job | tasks per second | Redis commands a job | round trips a job |",
        "|---|---|---|---|---|---|",
        *[f"| {label} | {r_['per_s']} | {r_['tasks_per_item']} | {r_['tasks_per_s']} | {r_['commands_per_item']} "
          f"| {r_['round_trips_per_item']} |" for label, r_ in rows],
        "", f"**same work: fleet / bare chain = {ratio} jobs per second** (goal >= 0.8); tasks per second "
        f"{task_ratio}; Redis commands a job {cmd_ratio}x the bare chain's (goal <= 2); failed jobs: {failed}", "",
        "Redis commands and round trips a job, by task (the probe in the worker and scheduler processes; "
        "`\"\"` is what runs outside a task: the consumer's fetch, acks, events, the scheduler):", "",
        "| run | task | tasks | commands a job | round trips a job |", "|---|---|---|---|---|",
    ]
    for label, r_ in (("push", push), ("pull", pull), ("bare", bare)):
        lines += [f"| {label} | submit | | {r_['submit']['commands_per_item']} | {r_['submit']['round_trips_per_item']} |"]
        lines += [f"| {label} | `{t}` | {c['tasks']} | {c['commands_per_item']} | {c['round_trips_per_item']} |"
                  for t, c in r_["by_task"].items()]
    roles = sorted({k for r_ in (push, pull, bare) for k in r_["cpu_ms_per_item"]})
    lines += ["", "CPU milliseconds a job, by process (user + system; the profile of the gap):", "",
              "| role | push | pull | bare |", "|---|---|---|---|",
              *[f"| {k} | {push['cpu_ms_per_item'].get(k, '')} | {pull['cpu_ms_per_item'].get(k, '')} "
                f"| {bare['cpu_ms_per_item'].get(k, '')} |" for k in roles],
              f"| total | {round(sum(push['cpu_ms_per_item'].values()), 1)} "
              f"| {round(sum(pull['cpu_ms_per_item'].values()), 1)} | {round(sum(bare['cpu_ms_per_item'].values()), 1)} |"]
    push_cpu, bare_cpu = sum(push["cpu_ms_per_item"].values()), sum(bare["cpu_ms_per_item"].values())
    provider_cpu = push["cpu_ms_per_item"].get("sandbox", 0.0)
    derived = {"ratio_predicted_by_cpu": round(bare_cpu / push_cpu, 2),
               "ceiling_with_the_provider_on_these_cores": round(bare_cpu / (bare_cpu + provider_cpu), 2),
               "fleet_own_cpu_ms_per_job": round(push_cpu - provider_cpu, 1),
               "fleet_own_cpu_vs_bare": round((push_cpu - provider_cpu) / bare_cpu, 2)}
    lines += ["", f"On two shared cores jobs per second follow CPU per job: bare / push CPU = "
              f"{derived['ratio_predicted_by_cpu']} (measured ratio {ratio}). The emulated provider runs on the same "
              f"cores ({provider_cpu} ms a job; a real one does not), which alone caps the ratio at "
              f"{derived['ceiling_with_the_provider_on_these_cores']} here, with a fleet costing no more than the bare "
              f"chain. The fleet's own CPU a job (every process but the provider's) is "
              f"{derived['fleet_own_cpu_ms_per_job']} ms, {derived['fleet_own_cpu_vs_bare']}x the bare chain's."]
    lines += ["", "Commands a job by name (`INFO commandstats`), push / bare:", "",
              "| command | push | bare |", "|---|---|---|",
              *[f"| {k} | {push['commands_by_name_per_item'].get(k, '')} | {bare['commands_by_name_per_item'].get(k, '')} |"
                for k in sorted(set(push["commands_by_name_per_item"]) | set(bare["commands_by_name_per_item"]))]]
    record("orchestration", {"push": push, "pull": pull, "bare_chain": bare, "ratio": ratio,
                             "tasks_per_s_ratio": task_ratio, "commands_ratio": cmd_ratio, "failed": failed, **derived},
           lines)


if __name__ == "__main__":
    main(sys.argv[1:])
