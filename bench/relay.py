"""Relay throughput and memory (issue 15, item 6).

1. The same 1 GiB to Gcore (TUS, 10,000,000-byte chunks) pushed from a local file and relayed
   from an http URL, five rounds, the order alternating each round: ratio = relay throughput /
   local push throughput, the median of the rounds (goal >= 0.8). The origin is a second
   sandbox process serving the media folder (HTTP Range), as a CDN is not the provider: one
   Python process serving both would halve the provider's share of the machine for the relay
   alone. The sandbox's stored upload is removed after each run, so every run writes into the
   same page-cache state, and the CPU seconds of the worker's pool child, the origin and the
   provider are recorded per run: on two cores the relay's extra process (the origin) competes
   with the other two, which a real CDN elsewhere does not.
2. Peak RSS of the worker (parent and pool child) while it relays a 256 MiB and a 2 GiB
   source: flat (the reader holds one chunk).
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

import psutil

from bench.common import environment, record, upload_events, wait_healthy
from bench.upload import CHUNK, GiB, MiB, _source, peak_rss
from workers.embedded_redis import free_port
from workers.procs import sandbox_argv, scheduler_argv, worker_argv


def _uploaded(source: str, relay: bool) -> float:
    """Seconds from submit to the upload's end, for one Gcore job."""
    events = upload_events({"provider": "gcore", "source": source, "title": Path(source).name, "relay": relay})
    return events["upload.complete"] - events["submitted"]


def main(argv: list[str]) -> None:
    extra = {"INGEST_GCORE_RATE": "50", "INGEST_SLICE_SECONDS": "60", "INGEST_TUS_CHUNK_SIZE": str(CHUNK),
             "INGEST_RELAY_ALLOW_NETS": "127.0.0.0/8"}
    with environment("relay", processing_seconds=0, extra_env=extra) as (env, group, _url):
        sources, media = Path(env["INGEST_SOURCE_ROOTS"]), group.log_dir.parent / "media"
        local = _source(sources / "one-gib.mp4", GiB)
        os.link(local, media / "one-gib.mp4")  # the same bytes, served by the origin
        origin_port = free_port()
        origin = group.start("origin", sandbox_argv(origin_port, group.log_dir.parent / "origin", media, 0))
        origin_url = f"http://127.0.0.1:{origin_port}"
        wait_healthy(origin_url, origin)
        group.wait_for_line(group.start("scheduler", scheduler_argv()), "scheduler.started", 30)
        worker = group.start("worker", worker_argv(None, concurrency=1, loglevel="WARNING"))
        group.wait_for_line(worker, "ready.", 60)
        procs = {"worker": psutil.Process(worker.pid).children()[0], "origin": psutil.Process(origin.pid),
                 "provider": psutil.Process(next(p.pid for p in group.procs if p.name == "sandbox"))}
        uploads = group.log_dir.parent / "sandbox"

        def run(relay: bool) -> dict[str, float]:
            before = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
            seconds = _uploaded(f"{origin_url}/media/one-gib.mp4" if relay else str(local), relay)
            used = {f"{k}_cpu_s": round(sum(p.cpu_times()[:2]) - before[k], 2) for k, p in procs.items()}
            for stored in uploads.rglob("*"):  # the provider's copy: each run starts from the same state
                if stored.is_file() and stored.stat().st_size >= GiB:
                    stored.unlink()
            return {"s": round(seconds, 2), "MBps": round(GiB / 1e6 / seconds, 1), **used}

        rounds = []
        for i in range(5):
            first = run(relay=bool(i % 2))
            second = run(relay=not i % 2)
            push, relay = (second, first) if i % 2 else (first, second)
            rounds.append({"push": push, "relay": relay, "ratio": round(push["s"] / relay["s"], 3)})
        worker.stop()

        rss = {}
        for label, size in (("256MiB", 256 * MiB), ("2GiB", 2 * GiB)):
            path = _source(media / f"rss-{label}.mp4", size)
            rss[label] = peak_rss(group, label, lambda p=path: _uploaded(f"{origin_url}/media/{p.name}", relay=True))
        for p in [*sources.glob("*.mp4"), *media.glob("*.mp4")]:
            os.unlink(p)

    ratio = round(statistics.median(r["ratio"] for r in rounds), 3)
    total = round(sum(r["push"]["s"] for r in rounds) / sum(r["relay"]["s"] for r in rounds), 3)
    cpu = {mode: {k: round(statistics.median(r[mode][f"{k}_cpu_s"] for r in rounds), 2)
                  for k in ("worker", "origin", "provider")} for mode in ("push", "relay")}
    spread = round(abs(rss["2GiB"]["child_MB"] - rss["256MiB"]["child_MB"]), 1)
    record("relay", {"rounds": rounds, "ratio": ratio, "ratio_of_totals": total, "cpu_s_median": cpu,
                     "rss": rss, "rss_spread_MB": spread}, [
        "| 1 GiB to Gcore, round | local push s | MB/s | relayed from http s | MB/s | ratio relay / push |",
        "|---|---|---|---|---|---|",
        *[f"| {i + 1} | {r['push']['s']} | {r['push']['MBps']} | {r['relay']['s']} | {r['relay']['MBps']} "
          f"| {r['ratio']} |" for i, r in enumerate(rounds)],
        "", f"**throughput ratio relay / local push: {ratio}** (median of the rounds; goal >= 0.8; "
        f"all rounds' bytes over all rounds' seconds: {total})", "",
        "| CPU seconds per GiB (median) | worker pool child | origin | provider (sandbox) |", "|---|---|---|---|",
        *[f"| {mode} | {c['worker']} | {c['origin']} | {c['provider']} |" for mode, c in cpu.items()], "",
        "| relayed source | worker parent peak RSS MB | pool child peak RSS MB | relay s |", "|---|---|---|---|",
        *[f"| {k} | {v['parent_MB']} | {v['child_MB']} | {v['seconds']} |" for k, v in rss.items()],
        "", f"**pool child peak RSS spread 256 MiB vs 2 GiB: {spread} MB** (flat: the reader holds one chunk)",
    ])


if __name__ == "__main__":
    main(sys.argv[1:])
