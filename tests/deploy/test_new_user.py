"""A new user's first run, as the README tells it: ``ingest-fleet sandbox``, its printed
settings exported and nothing else but ``REDIS_URL`` and ``INGEST_SOURCE_ROOTS``, one worker
and the scheduler, every other setting at its shipped default (issue 11).

Nothing of the suite's own environment (tests/conftest.py: scaled budgets, short slices,
fast polls) reaches these processes: the budgets, the short wait, the slice, the poll backoff
and the single-PUT ceiling are the ones a user gets. Each provider takes a small push, a
large push (chunked/multipart at the shipped thresholds) and a pull where it pulls URLs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.media import make_video_file
from workers.embedded_redis import EmbeddedRedis, free_port
from workers.procs import ProcessGroup

pytestmark = pytest.mark.integration

MB = 1000 * 1000
CLI = [sys.executable, "-m", "workers.cli"]

#: (provider, kind, size): "large" is past each provider's shipped single-request threshold
#: (Brightcove and Ittybit: one 60 s slice at INGEST_MIN_UPLOAD_RATE = 60 MB; Ingest.io
#: 5 MiB; Gcore: more than one 10 MB TUS chunk; Once: more than one 16 MiB staging part).
CASES = [
    ("gcore", "small", 2 * MB), ("gcore", "large", 25 * MB), ("gcore", "pull", 2 * MB),
    ("brightcove", "small", 3 * MB), ("brightcove", "large", 64 * MB), ("brightcove", "pull", 2 * MB),
    ("ittybit", "small", 3 * MB), ("ittybit", "large", 64 * MB), ("ittybit", "pull", 2 * MB),
    ("once", "small", 2 * MB), ("once", "large", 40 * MB), ("once", "pull", 2 * MB),
    ("ingestio", "small", 2 * MB), ("ingestio", "large", 12 * MB),  # no URL ingest (providers.md §4)
]


def _user_env(extra: dict[str, str]) -> dict[str, str]:
    """The machine's environment without any fleet setting, plus ``extra``."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("INGEST_", "FLOWER_")) and k != "REDIS_URL"}
    return {**base, **extra}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("new-user")
    (home / "media").mkdir()
    (home / "videos").mkdir()
    redis = EmbeddedRedis(home / "redis", port=free_port()).start()
    group = ProcessGroup(_user_env({"PYTHONUNBUFFERED": "1"}), home / "logs")
    try:
        sandbox = group.start("sandbox", [*CLI, "sandbox", "--port", str(free_port()),
                                          "--media-dir", str(home / "media")])
        group.wait_for_line(sandbox, "sandbox listening on", timeout=60)
        printed = dict(line[len("export "):].split("=", 1) for line in sandbox.tail(100_000).splitlines()
                       if line.startswith("export "))
        url = sandbox.tail(100_000).split("sandbox listening on ", 1)[1].split()[0]
        env = _user_env({**printed, "REDIS_URL": redis.url, "INGEST_SOURCE_ROOTS": str(home / "videos"),
                         "PYTHONUNBUFFERED": "1"})
        group.env = env
        worker = group.start("worker", [*CLI, "worker", "-c", "4"])
        scheduler = group.start("scheduler", [*CLI, "scheduler"])
        group.wait_for_line(worker, "ready.", timeout=90)
        group.wait_for_line(scheduler, "scheduler.started", timeout=60)
        yield {"home": home, "env": env, "printed": printed, "sandbox_url": url, "group": group}
    finally:
        group.kill_all()
        redis.stop()


def _submit(run: dict, provider: str, source: str) -> str:
    out = subprocess.run([*CLI, "submit", "--provider", provider, "--source", source, "--json"],
                         capture_output=True, text=True, env=run["env"], timeout=120)
    assert out.returncode == 0, (provider, source, out.stdout, out.stderr)
    return json.loads(out.stdout)["id"]


def _status(run: dict, job_id: str) -> dict:
    out = subprocess.run([*CLI, "status", job_id, "--json"], capture_output=True, text=True,
                         env=run["env"], timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_sandbox_prints_every_setting_each_provider_needs(first_run) -> None:
    from tasks.config import Settings

    settings = Settings.from_env(first_run["printed"])
    assert {p for p, _ in settings.accounts} == {"gcore", "brightcove", "ittybit", "once", "ingestio"}


def test_every_provider_takes_a_small_push_a_large_push_and_a_pull_at_the_shipped_defaults(first_run) -> None:
    home: Path = first_run["home"]
    jobs = {}
    for seed, (provider, kind, size) in enumerate(CASES):
        folder = home / ("media" if kind == "pull" else "videos")
        path = folder / f"{provider}-{kind}.mp4"
        make_video_file(path, size, seed=seed)
        source = f"{first_run['sandbox_url']}/media/{path.name}" if kind == "pull" else str(path)
        jobs[(provider, kind)] = _submit(first_run, provider, source)
    deadline = time.monotonic() + 600
    pending = dict(jobs)
    finished: dict = {}
    while pending and time.monotonic() < deadline:
        for case, job_id in list(pending.items()):
            record = _status(first_run, job_id)
            if record["state"] in ("ready", "failed", "cancelled"):
                finished[case] = record
                del pending[case]
        time.sleep(2)
    stuck = {f"{p}/{k}": _status(first_run, j)["state"] for (p, k), j in pending.items()}
    assert not stuck, f"not finished in 10 minutes: {stuck}"
    failed = {f"{p}/{k}": (r.get("error"), r.get("history", [])[-3:]) for (p, k), r in finished.items()
              if r["state"] != "ready"}
    assert not failed, failed
