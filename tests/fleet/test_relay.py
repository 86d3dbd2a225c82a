"""Relayed sources (issue 15), through real workers, Redis and the sandbox: a URL the provider
cannot fetch is read by the fleet in ranges (the sandbox's media origin serves Range) and fed
to the provider's push protocol; a source that changes is refused, whenever it changes."""

from __future__ import annotations

import json
import os
import time

import pytest

from ingest_fleet import Client
from tasks.producer import status, submit, wait
from tests.conftest import MEDIA, SANDBOX_URL, cli, make_source, sha256_of

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def test_ingestio_takes_a_video_from_an_http_url(start_fleet, sandbox) -> None:
    src = make_source("relayed-io.mp4", 12 * MiB, folder=MEDIA)
    start_fleet(workers=1)
    done = cli("submit", "--provider", "ingestio", "--source", f"{SANDBOX_URL}/media/{src.name}", "--wait",
               "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["mode"] == "push" and job["relay"] and job["bytes_total"] == src.stat().st_size
    assert job["source_stat"]["etag"] and job["source_stat"]["size"] == src.stat().st_size
    [inp] = [i for i in sandbox.state("ingestio")["inputs"] if i["id"] == job["provider_ids"]["input_id"]]
    assert inp["sha256"] == sha256_of(src)
    ranged = [e for e in sandbox.log(endpoint="media.get") if e["status"] == 206]
    assert ranged and all(e["status"] != 200 for e in sandbox.log(endpoint="media.get"))  # never read whole


def test_relay_on_request_and_from_the_client(start_fleet, sandbox) -> None:
    """``relay: true`` makes the fleet push a URL Gcore could fetch itself; a client's relayed
    job is sized and checked by the worker that admits it."""
    src = make_source("relayed-gcore.mp4", 3 * MiB, folder=MEDIA)
    start_fleet(workers=1)
    url = f"{SANDBOX_URL}/media/{src.name}"
    job = wait(submit({"provider": "gcore", "source": url, "relay": True}), 90)
    assert job["state"] == "ready" and job["mode"] == "push", job["error"]
    [video] = [v for v in sandbox.state("gcore")["videos"] if v["id"] == job["provider_ids"]["video_id"]]
    assert video["sha256"] == sha256_of(src) and video["origin_url"] in (None, "")

    client = Client()
    from_app = client.wait(client.submit({"provider": "ittybit", "source": url, "relay": True}), timeout=90)
    assert from_app["state"] == "ready" and from_app["bytes_total"] == src.stat().st_size, from_app["error"]


def test_a_source_that_changes_mid_relay_fails_saying_so(start_fleet, sandbox) -> None:
    src = make_source("relayed-changing.mp4", 40 * MiB, folder=MEDIA)
    sandbox.faults("gcore", latency_ms=300, latency_endpoints=["gcore.tus_patch"])  # slices take a moment
    start_fleet(workers=1)
    job_id = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{src.name}", "relay": True})
    deadline = time.monotonic() + 60
    while (status(job_id)["bytes_done"] or 0) == 0:
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    os.utime(src, (time.time() + 100, time.time() + 100))  # the origin's file is replaced mid-relay
    job = wait(job_id, 90)
    assert job["state"] == "failed" and "source changed since its first read" in job["error"]["message"], job
    assert job["error"]["kind"] == "permanent" and job["bytes_done"] < src.stat().st_size
