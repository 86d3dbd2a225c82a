"""A fleet across hosts (issue 16, item 4): Redis, the scheduler and the sandbox on one host,
a worker on each of two others, each host a network namespace of its own on a private bridge
(bench/hosts.py). One worker host's link is cut mid-upload: the other finishes the job,
resuming at the provider's offset; the cut host, reconnected, never drives the job again."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid

import pytest

from bench.hosts import Hosts, unavailable
from tests.conftest import GCORE_KEY, ROOT, make_source, sha256_of
from workers.procs import ProcessGroup, sandbox_argv, scheduler_argv, worker_argv

pytestmark = pytest.mark.integration
MiB = 1024 * 1024
CHUNK = 2 * MiB
WHY_NOT = unavailable()


@pytest.mark.skipif(WHY_NOT is not None, reason=f"no network namespaces here: {WHY_NOT}")
def test_cutting_a_worker_hosts_link_mid_upload_lets_the_other_host_finish(tmp_path) -> None:
    with Hosts(f"ift{uuid.uuid4().hex[:4]}", ["server", "w1", "w2"]) as hosts:
        server = hosts.ip("server")
        sandbox_url = f"http://{server}:8900"
        env = {**os.environ, "REDIS_URL": f"redis://{server}:6390/0", "INGEST_GCORE_BASE_URL": sandbox_url,
               "INGEST_GCORE_API_KEY": GCORE_KEY, "INGEST_SOURCE_ROOTS": str(tmp_path / "sources"),
               "INGEST_TUS_CHUNK_SIZE": str(CHUNK), "INGEST_SLICE_SECONDS": "2", "INGEST_STEP_GRACE": "3",
               "INGEST_VISIBILITY_TIMEOUT": "34", "INGEST_RECONCILE_SECONDS": "3",
               "INGEST_HTTP_CONNECT_TIMEOUT": "3", "INGEST_HTTP_READ_TIMEOUT": "5"}
        (tmp_path / "sources").mkdir()
        src = make_source("across-hosts.mp4", 40 * MiB, folder=tmp_path / "sources")
        group = ProcessGroup(env, tmp_path / "logs")
        try:
            redis_server = shutil.which("redis-server") or "redis-server"
            group.start("redis", hosts.argv("server", [redis_server, "--bind", server, "--port", "6390", "--save", "",
                                                       "--appendonly", "no", "--protected-mode", "no"]))
            sandbox = group.start("sandbox", hosts.argv("server", [
                *sandbox_argv(8900, tmp_path / "sandbox", None, processing_seconds=0.5), "--host", server,
                "--gcore-api-key", GCORE_KEY,
                # A PATCH cut mid-body keeps the upload locked (423 to anyone else) until the
                # provider gives up on its silent client: 120 s by default, 15 s here.
                "--client-timeout", "15"]))
            group.wait_for_line(sandbox, "sandbox listening on", 30)
            group.wait_for_line(group.start("scheduler", hosts.argv("server", scheduler_argv())),
                                "scheduler.started", 30)
            workers = {h: group.start(h, hosts.argv(h, worker_argv(None, concurrency=1, name=h))) for h in ("w1", "w2")}
            for proc in workers.values():
                group.wait_for_line(proc, "ready.", 60)
            admin = (f"import requests, json, sys; base = {sandbox_url!r}\n")
            hosts.python("server", admin + "requests.put(base + '/_sandbox/faults', json={'provider': 'gcore', "
                         "'latency_ms': 150, 'latency_endpoints': ['gcore.tus_patch']}, timeout=5).raise_for_status()",
                         env=env, cwd=ROOT)

            def status(job_id: str) -> dict:
                return json.loads(hosts.run("server", [sys.executable, "-m", "workers.cli", "status", job_id, "--json"],
                                            env=env, cwd=ROOT))

            def patches() -> list[dict]:
                out = hosts.python("server", admin + "print(json.dumps(requests.get(base + '/_sandbox/log', "
                                 "params={'endpoint': 'gcore.tus_patch'}, timeout=10).json()['entries']))", env=env, cwd=ROOT)
                return json.loads(out)

            job_id = json.loads(hosts.run("server", [sys.executable, "-m", "workers.cli", "submit", "--provider", "gcore",
                                                     "--source", str(src), "--json"], env=env, cwd=ROOT))["id"]
            deadline = time.monotonic() + 60
            while not (6 * MiB <= (status(job_id)["bytes_done"] or 0) < 30 * MiB):
                assert time.monotonic() < deadline, status(job_id)
                time.sleep(0.3)
            driving = {e["client"] for e in patches()[-2:]}
            assert len(driving) == 1, driving
            cut = next(h for h in ("w1", "w2") if hosts.ip(h) in driving)
            other = "w2" if cut == "w1" else "w1"
            hosts.cut(cut)
            cut_at = time.time()  # once the link is down (a request may arrive while the command runs)

            deadline = time.monotonic() + 120
            while (job := status(job_id))["state"] != "ready":
                assert job["state"] != "failed" and time.monotonic() < deadline, job
                time.sleep(1)
            hosts.mend(cut)
            mended_at = time.time()
            time.sleep(8)  # the cut host's worker comes back: its stalled slice ends, refused

            after = status(job_id)
            assert after["state"] == "ready" and after["updated_at"] == job["updated_at"]  # nothing wrote to it
            entries = patches()
            ok = [e for e in entries if e["status"] in (200, 204)]
            assert {e["client"] for e in ok if e["t"] > cut_at} == {hosts.ip(other)}, [  # the other host finished it
                (e["client"], e["status"], round(e["t"] - cut_at, 2)) for e in entries if e["t"] > cut_at - 1]
            assert not [e for e in entries if e["client"] == hosts.ip(cut) and e["t"] > mended_at and e in ok]
            assert sum(e["bytes_in"] for e in ok) <= src.stat().st_size  # no stored byte was sent twice
            # Sent twice: at most the chunk in flight at the cut (resent by the other host from
            # Gcore's offset, and its rest arriving once the link is back) - well within one
            # slice (a 2 s slice carries up to 13 chunks here).
            again = sum(e["bytes_in"] for e in entries) - src.stat().st_size
            assert again <= 2 * CHUNK, again
            state = json.loads(hosts.python("server", admin + "print(json.dumps(requests.get(base + "
                                          "'/_sandbox/state/gcore', timeout=10).json()))", env=env, cwd=ROOT))
            [video] = state["videos"]
            assert video["sha256"] == sha256_of(src)
        finally:
            group.stop_all()
