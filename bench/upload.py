"""Upload throughput and memory.

1. 1 GiB pushed through the fleet (TUS, 10,000,000-byte chunks, slices, checkpoints) against a
   direct tuspy upload of the same file with the same chunk size to the same sandbox, in the
   same run: ratio = fleet throughput / direct throughput (target >= 0.9).
2. Peak RSS of the worker (parent and pool child) during a 256 MiB and a 2 GiB upload:
   each <= 150 MB and within 10 MB of each other (uploads stream; memory does not grow
   with file size).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import requests
from tusclient.client import TusClient

from bench.common import SANDBOX_KEY, environment, record, upload_events
from sandbox.media import make_video_file
from workers.procs import scheduler_argv, worker_argv

GiB, MiB = 1024**3, 1024**2
CHUNK = 10_000_000


def _source(path: Path, size: int) -> Path:
    if not path.exists() or path.stat().st_size != size:
        make_video_file(path, size)
    return path


def _direct_tuspy(url: str, path: Path) -> float:
    """What a single script would do: create, get the TUS parameters, upload with tuspy."""
    headers = {"Authorization": f"APIKey {SANDBOX_KEY}"}
    started = time.monotonic()
    video = requests.post(f"{url}/streaming/videos", json={"video": {"name": "direct"}}, headers=headers,
                          timeout=30).json()
    params = requests.get(f"{url}/streaming/videos/{video['id']}/upload", headers=headers, timeout=30).json()
    server = params["servers"][0]
    endpoint = f"{'https' if server['ssl'] else 'http'}://{server['hostname']}/upload/"
    client = TusClient(endpoint, headers={"Tus-Resumable": "1.0.0"})
    uploader = client.uploader(str(path), chunk_size=CHUNK, metadata={
        "filename": path.name, "filetype": "video/mp4", "token": params["token"],
        "video_id": str(video["id"]), "client_id": str(params["video"].get("client_id", ""))})
    uploader.upload()
    return time.monotonic() - started


def _fleet_upload(path: Path) -> float:
    events = upload_events({"provider": "gcore", "source": str(path), "title": path.name})
    return events["upload.complete"] - events["submitted"]


class RssSampler(threading.Thread):
    """Peak RSS of a worker: its parent process and each pool child, sampled every 50 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_parent = self.peak_child = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.peak_parent = max(self.peak_parent, self.root.memory_info().rss)
                for child in self.root.children(recursive=True):
                    self.peak_child = max(self.peak_child, child.memory_info().rss)
            except psutil.Error:
                pass
            time.sleep(0.05)


def peak_rss(group: Any, label: str, run: Callable[[], float]) -> dict[str, float]:
    """Peak RSS of a fresh worker (parent, pool child) while ``run()`` moves one source."""
    worker = group.start(f"rss-worker-{label}", worker_argv(None, concurrency=1, loglevel="WARNING"))
    group.wait_for_line(worker, "ready.", 60)
    sampler = RssSampler(worker.pid)
    sampler.start()
    seconds = run()
    sampler.running = False
    sampler.join()
    worker.stop()
    return {"parent_MB": round(sampler.peak_parent / 1e6, 1), "child_MB": round(sampler.peak_child / 1e6, 1),
            "seconds": round(seconds, 1)}


def main(argv: list[str]) -> None:
    extra = {"INGEST_GCORE_RATE": "50", "INGEST_SLICE_SECONDS": "60", "INGEST_TUS_CHUNK_SIZE": str(CHUNK)}
    with environment("upload", processing_seconds=0, extra_env=extra) as (env, group, url):
        sources = Path(env["INGEST_SOURCE_ROOTS"])
        one_gib = _source(sources / "one-gib.mp4", GiB)
        group.wait_for_line(group.start("scheduler", scheduler_argv()), "scheduler.started", 30)

        rounds = []
        worker = group.start("worker", worker_argv(None, concurrency=1, loglevel="WARNING"))
        group.wait_for_line(worker, "ready.", 60)
        for _ in range(2):
            fleet_s = _fleet_upload(one_gib)
            direct_s = _direct_tuspy(url, one_gib)
            rounds.append({"fleet_s": round(fleet_s, 2), "direct_s": round(direct_s, 2),
                           "fleet_MBps": round(GiB / 1e6 / fleet_s, 1), "direct_MBps": round(GiB / 1e6 / direct_s, 1),
                           "ratio": round(direct_s / fleet_s, 3)})
        worker.stop()

        rss = {}
        for label, size in (("256MiB", 256 * MiB), ("2GiB", 2 * GiB)):
            path = _source(sources / f"rss-{label}.mp4", size)
            rss[label] = peak_rss(group, label, lambda p=path: _fleet_upload(p))
        for p in sources.glob("*.mp4"):
            os.unlink(p)

    ratio = round(sum(r["ratio"] for r in rounds) / len(rounds), 3)
    spread = round(abs(rss["2GiB"]["child_MB"] - rss["256MiB"]["child_MB"]), 1)
    record("upload", {"rounds": rounds, "ratio": ratio, "rss": rss, "rss_spread_MB": spread}, [
        "| 1 GiB round | fleet s | fleet MB/s | direct tuspy s | direct MB/s | ratio |", "|---|---|---|---|---|---|",
        *[f"| {i + 1} | {r['fleet_s']} | {r['fleet_MBps']} | {r['direct_s']} | {r['direct_MBps']} | {r['ratio']} |"
          for i, r in enumerate(rounds)],
        "", f"**throughput ratio fleet / direct tuspy: {ratio}** (target >= 0.9)", "",
        "| upload | worker parent peak RSS MB | pool child peak RSS MB | upload s |", "|---|---|---|---|",
        *[f"| {k} | {v['parent_MB']} | {v['child_MB']} | {v['seconds']} |" for k, v in rss.items()],
        "", f"**pool child peak RSS spread 256 MiB vs 2 GiB: {spread} MB** (target: each <= 150 MB, spread <= 10 MB)",
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
