"""Uploads against their references (issue 16, item 5).

The same 1 GiB file, to the same sandbox, by the fleet and by the plain library call a
script would make, three rounds, the order alternating each round, with the CPU seconds each
side and the sandbox spent (the profile of a gap):

* **Brightcove** (S3 multipart to the upload bucket Dynamic Ingest hands out, the shipped
  16 MiB parts with Content-MD5, one part at a time, a checkpoint per part) against boto3's
  ``upload_file`` to the same S3 stand-in with the same credentials and part size (its own
  defaults otherwise: 10 threads) - goal >= 0.95;
* **Ittybit** (ranged PUTs of the shipped 16 MiB chunks with ``Content-Range``, a checkpoint
  per chunk) against one plain ``requests`` PUT of the whole file to a signed URL - goal >= 0.9;
* **Ingest.io** (signed S3 parts of the server's piece size, 5 MiB, each signed by an API
  call) against one plain ``requests`` PUT of the whole file, signed once (``amazon``) - goal
  >= 0.9.

The fleet's time is the job's upload (target obtained -> upload complete, from its history);
the reference's is its transfer alone. Budgets and the providers' own rate limits are out of
the way; each stored copy is removed after its run (the page cache would otherwise favour
whichever ran first). Then the peak RSS of a fresh worker's pool child while it uploads a
256 MiB and a 2 GiB source, for each provider: flat.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import psutil
import requests
from boto3.s3.transfer import TransferConfig

from bench.common import cpu_seconds, environment, record, sandbox_exports, upload_events
from bench.upload import GiB, MiB, _source, peak_rss
from workers.procs import scheduler_argv, worker_argv

PROVIDERS = ("brightcove", "ittybit", "ingestio")
GOALS = {"brightcove": 0.95, "ittybit": 0.9, "ingestio": 0.9}
TARGET_EVENT = {"brightcove": "upload.target", "ittybit": "upload.signed", "ingestio": "upload.target"}
REFERENCE = {"brightcove": "boto3 upload_file", "ittybit": "one requests PUT", "ingestio": "one requests PUT"}


def _fleet(provider: str, path: Path) -> float:
    """Seconds of one fleet job's upload (target obtained -> upload complete)."""
    events = upload_events({"provider": provider, "source": str(path), "title": path.stem})
    return events["upload.complete"] - events[TARGET_EVENT[provider]]


def _brightcove(env: dict[str, str], path: Path, name: str) -> float:
    oauth = requests.post(f"{env['INGEST_BRIGHTCOVE_OAUTH_URL']}/v4/access_token", timeout=30,
                          data={"grant_type": "client_credentials"},
                          auth=(env["INGEST_BRIGHTCOVE_CLIENT_ID"], env["INGEST_BRIGHTCOVE_CLIENT_SECRET"]))
    headers = {"Authorization": f"Bearer {oauth.json()['access_token']}", "Content-Type": "application/json"}
    account = f"/v1/accounts/{env['INGEST_BRIGHTCOVE_ACCOUNT_ID']}"
    made = requests.post(f"{env['INGEST_BRIGHTCOVE_BASE_URL']}{account}/videos", json={"name": name},
                         headers=headers, timeout=30)
    assert made.ok, made.text
    video = made.json()
    got = requests.get(f"{env['INGEST_BRIGHTCOVE_INGEST_URL']}{account}/videos/{video['id']}/upload-urls/{name}",
                       headers=headers, timeout=30)
    assert got.ok, got.text
    urls = got.json()
    s3 = boto3.client("s3", endpoint_url=env["INGEST_BRIGHTCOVE_S3_ENDPOINT"], region_name="us-east-1",
                      aws_access_key_id=urls["access_key_id"], aws_secret_access_key=urls["secret_access_key"],
                      aws_session_token=urls["session_token"])
    part = int(env.get("INGEST_BRIGHTCOVE_PART_SIZE") or 16 * MiB)
    started = time.monotonic()
    s3.upload_file(str(path), urls["bucket"], urls["object_key"],
                   Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part))
    return time.monotonic() - started


def _ittybit(env: dict[str, str], path: Path, name: str) -> float:
    headers = {"Authorization": f"Bearer {env['INGEST_ITTYBIT_API_KEY']}", "Accept-Version": "2025-08-20"}
    body = requests.post(f"{env['INGEST_ITTYBIT_BASE_URL']}/signatures", headers=headers, timeout=30,
                         json={"filename": name, "folder": "bench", "method": "put"}).json()
    url = (body.get("data") or body)["url"]
    started = time.monotonic()
    with open(path, "rb") as f:
        requests.put(url, data=f, headers={"Content-Type": "video/mp4"}, timeout=600).raise_for_status()
    return time.monotonic() - started


def _ingestio(env: dict[str, str], path: Path, name: str) -> float:
    base, size = env["INGEST_INGESTIO_BASE_URL"], path.stat().st_size
    headers = {"Authorization": f"Bearer {env['INGEST_INGESTIO_API_KEY']}", "Accept": "application/vnd.ingest.v1+json"}
    made = requests.post(f"{base}/encoding/inputs", json={"filename": name, "type": "video/mp4", "size": size},
                         headers=headers, timeout=30)
    made.raise_for_status()
    inputs = f"{base}/encoding/inputs/{made.json()['id']}/upload"
    requests.post(inputs, params={"type": "amazon"}, json={"type": "video/mp4", "size": size}, headers=headers,
                  timeout=30).raise_for_status()
    signed = requests.post(f"{inputs}/sign", params={"type": "amazon"}, headers=headers, timeout=30,
                           json={"contentType": "application/octet-stream"}).json()
    put_headers = {"Authorization": signed["authHeader"], "x-amz-date": signed["dateHeader"],
                   "Content-Type": "application/octet-stream"}
    if signed.get("securityToken"):
        put_headers["x-amz-security-token"] = signed["securityToken"]
    started = time.monotonic()
    with open(path, "rb") as f:
        requests.put(signed["url"], data=f, headers=put_headers, timeout=600).raise_for_status()
    return time.monotonic() - started


REFERENCES = {"brightcove": _brightcove, "ittybit": _ittybit, "ingestio": _ingestio}


def _clean(folder: Path) -> None:
    """Remove the sandbox's stored copies of 1 GiB uploads (files, parts and S3 objects on disk)."""
    for stored in folder.rglob("*"):
        try:
            if stored.is_file() and stored.stat().st_size >= 4 * MiB:
                stored.unlink()
        except OSError:
            pass


def main(argv: list[str]) -> None:
    rounds_n = int(argv[0]) if argv else 3
    extra = {"INGEST_SLICE_SECONDS": "120", "INGEST_VISIBILITY_TIMEOUT": "400"}
    for provider in PROVIDERS:
        extra.update({f"INGEST_{provider.upper()}_RATE": "100000", f"INGEST_{provider.upper()}_BURST": "1000",
                      f"INGEST_{provider.upper()}_ENTITY_RATE": "0"})
    results: dict[str, Any] = {}
    # What the providers store goes to memory (tmpfs) where there is room: the box's disk
    # writeback, not either uploader, set the pace of a 1 GiB round otherwise (rounds of the
    # same side varied threefold).
    shm = Path("/dev/shm")
    in_memory = shm.is_dir() and shutil.disk_usage(shm).free > 8 * GiB
    stored = Path(tempfile.mkdtemp(prefix="ingest-bench-uploads-", dir=shm if in_memory else None))
    results["provider_storage"] = "tmpfs (/dev/shm)" if in_memory else "disk (no tmpfs with 8 GiB free)"
    with environment("uploads", processing_seconds=0, extra_env=extra, sandbox_data=stored) as (env, group, url):
        sandbox_exports(group, env, keep=extra)
        # The providers' own limits out of the way too: Brightcove's 20 req/s and per-video limit,
        # Ingest.io's 600 requests a minute (one sign call per 5 MiB part: at that limit an
        # account uploads at most ~52 MB/s, whatever the link).
        for provider, own in (("brightcove", {"per_video_per_minute": 0}), ("ittybit", {}),
                              ("ingestio", {"rate_limit": 0})):
            requests.put(f"{url}/_sandbox/faults", timeout=5,
                         json={"provider": provider, "rate_limit_rps": 0, **own}).raise_for_status()
        sources = Path(env["INGEST_SOURCE_ROOTS"])
        one_gib = _source(sources / "one-gib.mp4", GiB)
        group.wait_for_line(group.start("scheduler", scheduler_argv()), "scheduler.started", 30)
        worker = group.start("worker", worker_argv(None, concurrency=1, loglevel="WARNING"))
        group.wait_for_line(worker, "ready.", 60)
        # CPU seconds by process, the profile of each gap: the uploader (the worker's parent and
        # pool for the fleet, this process for the reference) and the sandbox (the provider, and
        # moto with its proxy for S3).
        cpu_of = {"worker": [psutil.Process(worker.pid), *psutil.Process(worker.pid).children()],
                  "reference client": [psutil.Process()],
                  "sandbox": [psutil.Process(next(p.pid for p in group.procs if p.name == "sandbox"))]}

        for provider in PROVIDERS:
            rounds = []
            for i in range(rounds_n):
                times: dict[str, float] = {}
                used: dict[str, dict[str, float]] = {}
                for who in (("fleet", "reference") if i % 2 == 0 else ("reference", "fleet")):
                    before = cpu_seconds(cpu_of)
                    if who == "fleet":
                        times[who] = _fleet(provider, one_gib)
                    else:
                        times[who] = REFERENCES[provider](env, one_gib, f"reference-{i}.mp4")
                    used[who] = {k: round(v - before[k], 2) for k, v in cpu_seconds(cpu_of).items()}
                    _clean(stored)
                rounds.append({"fleet_s": round(times["fleet"], 2), "reference_s": round(times["reference"], 2),
                               "fleet_MBps": round(GiB / 1e6 / times["fleet"], 1),
                               "reference_MBps": round(GiB / 1e6 / times["reference"], 1),
                               "ratio": round(times["reference"] / times["fleet"], 3),
                               "fleet_cpu_s": {"uploader": used["fleet"]["worker"],
                                               "sandbox": used["fleet"]["sandbox"]},
                               "reference_cpu_s": {"uploader": used["reference"]["reference client"],
                                                   "sandbox": used["reference"]["sandbox"]}})
            results[provider] = {"rounds": rounds, "ratio": round(statistics.median(r["ratio"] for r in rounds), 3),
                                 "cpu_s_per_GiB_median": {
                                     f"{who} {part}": round(statistics.median(r[f"{who}_cpu_s"][part] for r in rounds), 2)
                                     for who in ("fleet", "reference") for part in ("uploader", "sandbox")}}
        worker.stop()

        for provider in PROVIDERS:
            rss = {}
            for label, size in (("256MiB", 256 * MiB), ("2GiB", 2 * GiB)):
                path = _source(sources / f"rss-{label}.mp4", size)
                rss[label] = peak_rss(group, f"{provider}-{label}", lambda p=path, pr=provider: _fleet(pr, p))
                _clean(stored)
            results[provider]["rss"] = rss
            results[provider]["rss_spread_MB"] = round(abs(rss["2GiB"]["child_MB"] - rss["256MiB"]["child_MB"]), 1)
        for p in sources.glob("*.mp4"):
            os.unlink(p)
    shutil.rmtree(stored, ignore_errors=True)

    lines = [f"What the sandbox stores: {results['provider_storage']}.", "",
             "| provider, 1 GiB | fleet MB/s (rounds) | reference | reference MB/s (rounds) | ratio fleet / reference "
             "(median) | goal |", "|---|---|---|---|---|---|"]
    for provider in PROVIDERS:
        r = results[provider]
        lines.append(f"| {provider} | {', '.join(str(x['fleet_MBps']) for x in r['rounds'])} | {REFERENCE[provider]} "
                     f"| {', '.join(str(x['reference_MBps']) for x in r['rounds'])} | **{r['ratio']}** "
                     f"| >= {GOALS[provider]}: {'met' if r['ratio'] >= GOALS[provider] else 'NOT met'} |")
    lines += ["", "CPU seconds per GiB (median of the rounds; the uploader is the worker's parent and pool for "
              "the fleet, the benchmark's own process for the reference; the sandbox is the provider, and "
              "moto behind its proxy for S3):", "",
              "| provider | fleet: uploader | fleet: sandbox | reference: uploader | reference: sandbox |",
              "|---|---|---|---|---|",
              *[f"| {p} | " + " | ".join(str(results[p]["cpu_s_per_GiB_median"][k]) for k in (
                  "fleet uploader", "fleet sandbox", "reference uploader", "reference sandbox")) + " |"
                for p in PROVIDERS]]
    lines += ["", "| provider | pool child peak RSS MB, 256 MiB | 2 GiB | spread MB |", "|---|---|---|---|",
              *[f"| {p} | {results[p]['rss']['256MiB']['child_MB']} | {results[p]['rss']['2GiB']['child_MB']} "
                f"| {results[p]['rss_spread_MB']} |" for p in PROVIDERS]]
    record("uploads", results, lines)


if __name__ == "__main__":
    main(sys.argv[1:])
