"""What every benchmark needs: a private Redis, the sandbox, fleet processes, a report."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import requests
from cryptography.fernet import Fernet

from workers.embedded_redis import EmbeddedRedis, free_port
from workers.procs import ProcessGroup, sandbox_argv

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work"
RESULTS = ROOT / "bench" / "results"
SANDBOX_KEY = "bench-gcore-key-3f9a7c21"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory_gib": f"{mem:.0f}",
            "python": platform.python_version(), "os": platform.platform()}


@contextmanager
def environment(name: str, *, processing_seconds: float, extra_env: dict[str, str] | None = None,
                sandbox_data: Path | None = None) -> Iterator[tuple[dict[str, str], ProcessGroup, str]]:
    """A Redis, a sandbox (storing what it receives in ``sandbox_data``, by default the
    benchmark's work folder), and the env that points the fleet at them; torn down after."""
    work = WORK / name
    subprocess.run(["rm", "-rf", str(work)], check=True)
    (work / "sources").mkdir(parents=True)
    (work / "media").mkdir(parents=True)
    redis = EmbeddedRedis(work / "redis", appendonly=True).start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "REDIS_URL": redis.url,
        "INGEST_SOURCE_ROOTS": str(work / "sources"),
        "INGEST_GCORE_BASE_URL": url,
        "INGEST_GCORE_API_KEY": SANDBOX_KEY,
        "INGEST_SECRET_KEY": os.environ.get("INGEST_SECRET_KEY") or Fernet.generate_key().decode(),
        **(extra_env or {}),
    }
    os.environ.update(env)  # this process submits jobs too
    group = ProcessGroup(env, work / "logs")
    try:
        sandbox = group.start("sandbox", sandbox_argv(port, sandbox_data or work / "sandbox", work / "media", processing_seconds)
                              + ["--gcore-api-key", SANDBOX_KEY])
        wait_healthy(url, sandbox)
        yield env, group, url
    finally:
        group.stop_all()
        redis.stop()


def upload_events(intent: dict[str, Any]) -> dict[str, float]:
    """Submit ``intent`` and wait until its upload is over: the time of each event of its
    history (``submitted``, the target's, ``upload.complete``, ...). A failed job raises."""
    from tasks.producer import status, submit

    job_id = submit(intent)
    while True:
        job = status(job_id)
        if job["state"] in ("processing", "ready", "failed") or any(
                h["event"] == "upload.complete" for h in job["history"]):
            break
        time.sleep(0.05)
    if job["state"] == "failed":
        raise RuntimeError(f"job {job_id} failed: {job['error']}")
    return {h["event"]: float(h["at"]) for h in job["history"]}


def sandbox_exports(group: ProcessGroup, env: dict[str, str], keep: dict[str, str]) -> None:
    """Configure every provider as the sandbox printed (``export NAME=value`` lines), as a new
    user's fleet takes them, except the names in ``keep``: into ``env``, the group's processes
    and this process."""
    sandbox = next(p for p in group.procs if p.name == "sandbox")
    deadline = time.monotonic() + 20
    while "sandbox listening on" not in sandbox.tail(100_000):
        if time.monotonic() > deadline:
            raise RuntimeError(sandbox.tail())
        time.sleep(0.1)
    for line in sandbox.tail(100_000).splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            if name not in keep:
                env[name] = shlex.split(value)[0] if value else ""
    group.env.update(env)
    os.environ.update(env)


def wait_healthy(url: str, sandbox: Any) -> None:
    """Until the sandbox process at ``url`` answers its health check (RuntimeError with its log)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(f"{url}/_sandbox/health", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or not sandbox.alive():
            raise RuntimeError(sandbox.tail())
        time.sleep(0.1)


def record(name: str, results: dict, summary_lines: list[str]) -> Path:
    """Write bench/results/<name>.json and .md (machine and date included)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    payload = {"benchmark": name, "date": stamp, "machine": machine(), "results": results}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    m = payload["machine"]
    md = [f"# {name}", "", f"- date: {stamp}",
          f"- machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}",
          f"- command: `make bench ARGS={name}`", "", *summary_lines, ""]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(md))
    print("\n".join(md))
    return path


def cpu_seconds(roles: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """User + system CPU seconds so far of each role's processes (take two readings, subtract)."""
    return {role: sum(sum(p.cpu_times()[:2]) for p in procs) for role, procs in roles.items()}
