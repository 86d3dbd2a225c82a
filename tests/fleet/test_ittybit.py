"""Ittybit end to end: real workers, real Redis, the sandbox's Ittybit over sockets, in both
of its API shapes (selected by the pinned ``Accept-Version``)."""

from __future__ import annotations

import time

import pytest

from tasks.producer import status, submit, wait
from tests.conftest import MEDIA, SANDBOX_URL, kill9_pool, make_source, sha256_of

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
CHUNK = 16 * MiB


def _file(sandbox, job: dict) -> dict:
    return next(f for f in sandbox.state("ittybit")["files"] if f["id"] == job["provider_ids"]["file_id"])


@pytest.mark.parametrize("version", ["2025-01-01", None])  # envelope; the default pin 2025-08-20 (bare)
def test_pull_as_a_task_and_as_a_sync_file_in_both_shapes(start_fleet, sandbox, version) -> None:
    # The sandbox's default (no Accept-Version) is the other shape: the pin must decide.
    sandbox.faults("ittybit", shape="bare" if version else "envelope", processing_seconds=1)
    start_fleet(workers=1, concurrency=2, env={"INGEST_ITTYBIT_API_VERSION": version} if version else None)
    pulled = make_source("it-pull.mp4", 2 * MiB, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{pulled.name}"
    task = wait(submit({"provider": "ittybit", "source": url, "options": {"folder": "news"},
                        "metadata": {"customer": "c1"}}), 60)
    sync = wait(submit({"provider": "ittybit", "source": url, "options": {"sync": True, "filename": "s.mp4"}}), 60)
    assert task["state"] == "ready", task["error"]
    assert sync["state"] == "ready", sync["error"]
    assert task["provider_ids"]["task_id"] and "task_id" not in sync["provider_ids"]
    assert _file(sandbox, task)["sha256"] == _file(sandbox, sync)["sha256"] == sha256_of(pulled)
    assert _file(sandbox, task)["folder"] == "news" and _file(sandbox, sync)["filename"] == "s.mp4"
    assert set(sandbox.state("ittybit")["api_versions"]) == {version or "2025-08-20"}


def test_every_api_call_pins_the_sdks_accept_version(start_fleet, sandbox) -> None:
    start_fleet(workers=1, concurrency=2)
    pulled = make_source("it-pin.mp4", 1 * MiB, folder=MEDIA)
    jobs = [wait(submit({"provider": "ittybit", "source": source, "options": options}), 60)
            for source, options in ((f"{SANDBOX_URL}/media/{pulled.name}", {}),
                                    (f"{SANDBOX_URL}/media/{pulled.name}", {"sync": True}),
                                    (str(make_source("it-pin-push.mp4", 1 * MiB)), {}))]
    assert [j["state"] for j in jobs] == ["ready"] * 3, jobs
    api_calls = [e for e in sandbox.log() if (e["endpoint"] or "").startswith("ittybit.")
                 and e["endpoint"] not in ("ittybit.upload_put", "ittybit.upload_head")]
    assert sandbox.state("ittybit")["api_versions"] == {"2025-08-20": len(api_calls)}


def test_sync_read_timeout_then_retry_leaves_one_file(start_fleet, sandbox) -> None:
    # POST /files creates the file, then answers after the fleet's read timeout (I5).
    sandbox.faults("ittybit", create_file_answer_delay=3)
    start_fleet(workers=1, env={"INGEST_HTTP_READ_TIMEOUT": "1"})
    pulled = make_source("it-sync-slow.mp4", 1 * MiB, folder=MEDIA)
    job = wait(submit({"provider": "ittybit", "source": f"{SANDBOX_URL}/media/{pulled.name}",
                       "options": {"sync": True}}), 60)
    assert job["state"] == "ready", (job["error"], sandbox.state("ittybit")["files"])
    files = sandbox.state("ittybit")["files"]
    assert len(files) == 1, files
    assert files[0]["id"] == job["provider_ids"]["file_id"] and files[0]["ref"] == f"ingest-fleet:{job['id']}"
    assert any(h["event"] == "file.adopted" for h in job["history"])


def test_push_small_in_one_put_and_large_in_ranges(start_fleet, sandbox) -> None:
    start_fleet(workers=1, concurrency=2)
    small = make_source("it-small.mp4", 3 * MiB)
    large = make_source("it-large.mp4", 105 * 1000 * 1000)  # >= 100 MB: chunked
    jobs = [wait(submit({"provider": "ittybit", "source": str(p)}), 120) for p in (small, large)]
    assert [j["state"] for j in jobs] == ["ready", "ready"], jobs
    assert _file(sandbox, jobs[0])["sha256"] == sha256_of(small)
    assert _file(sandbox, jobs[1])["sha256"] == sha256_of(large)
    puts = sandbox.log("ittybit.upload_put")
    assert len(puts) == 1 + -(-105_000_000 // CHUNK)  # one whole PUT, then 7 ranges
    assert [e["status"] for e in puts[1:]] == [202] * 6 + [201]


def test_kill_9_mid_ranges_resumes_without_resending(start_fleet, sandbox) -> None:
    size = 110 * 1000 * 1000
    src = make_source("it-kill.mp4", size)
    sandbox.faults("ittybit", latency_ms=500, latency_endpoints=["ittybit.upload_put"])
    fleet = start_fleet(workers=1, concurrency=1)
    job_id = submit({"provider": "ittybit", "source": str(src)})
    deadline = time.monotonic() + 60
    while status(job_id)["bytes_done"] < 2 * CHUNK:
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    kill9_pool(fleet.workers[0])  # the process sending the ranges; the worker goes on with a new one
    job = wait(job_id, 60)  # sent again at once (default_retry_delay), not after the visibility timeout
    assert job["state"] == "ready", job
    assert _file(sandbox, job)["sha256"] == sha256_of(src)
    received = sum(u["bytes_received_total"] for u in sandbox.state("ittybit")["uploads"])
    assert received <= size + CHUNK, f"{received - size} bytes sent twice"


def test_an_expired_signature_is_renewed_not_failed(start_fleet, sandbox) -> None:
    sandbox.faults("ittybit", signature_ttl=2, latency_ms=700, latency_endpoints=["ittybit.upload_put"])
    start_fleet(workers=1)
    src = make_source("it-expire.mp4", 105 * 1000 * 1000)
    job = wait(submit({"provider": "ittybit", "source": str(src)}), 120)
    assert job["state"] == "ready", job
    assert any(h["event"] == "upload.signature_renewed" for h in job["history"])
    assert _file(sandbox, job)["sha256"] == sha256_of(src)


def test_a_429_storm_is_survived_and_a_bad_source_fails_with_ittybits_message(start_fleet, sandbox) -> None:
    # Ittybit allows 2 req/s here while the fleet believes it may send 500: 429 after 429.
    sandbox.faults("ittybit", processing_seconds=0.5, rate_limit_rps=2)
    start_fleet(workers=1, concurrency=2, webhooks=True, env={"INGEST_MAX_ATTEMPTS": "2"})
    good = make_source("it-good.mp4", 1 * MiB, folder=MEDIA)
    bad = make_source("it-bad.mp4", 1 * MiB, folder=MEDIA, valid=False)
    oks = [submit({"provider": "ittybit", "source": f"{SANDBOX_URL}/media/{good.name}", "title": f"ok {i}"})
           for i in range(8)]
    failed = wait(submit({"provider": "ittybit", "source": f"{SANDBOX_URL}/media/{bad.name}"}), 90)
    jobs = [wait(i, 90) for i in oks]
    assert [j["state"] for j in jobs] == ["ready"] * 8, [j["error"] for j in jobs]
    assert len([e for e in sandbox.log() if e["status"] == 429]) >= 8
    assert failed["state"] == "failed" and "Unsupported file type" in failed["error"]["message"]
    assert failed["error"]["kind"] == "permanent"


def test_the_webhook_endpoint_is_registered_once_and_ends_the_wait_early(start_fleet, sandbox, rt) -> None:
    sandbox.faults("ittybit", processing_seconds=2, webhook_duplicates=True)
    start_fleet(workers=1, webhooks=True, env={"INGEST_POLL_INITIAL": "40", "INGEST_POLL_MAX": "40"})
    pulled = make_source("it-hook.mp4", 1 * MiB, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{pulled.name}"
    for _ in range(2):
        started = time.monotonic()
        job = wait(submit({"provider": "ittybit", "source": url}), 30)
        assert job["state"] == "ready", job
        assert time.monotonic() - started < 15
    [endpoint] = sandbox.state("ittybit")["webhook_endpoints"]  # one per account, not one per job
    assert "/ittybit/accounts/default/" in endpoint["url"] and endpoint["topics"] == ["task.succeeded", "task.failed"]
    assert len([s for s in sandbox.state("ittybit")["webhooks_sent"] if s["status"] == 200]) == 4  # 2 jobs x dup

    # The provider lost the endpoint (here: a reset); once the fleet's memory of it expires, it registers again.
    sandbox.reset()
    rt.redis.delete("if:ittybit:hook:default")
    started = time.monotonic()
    job = wait(submit({"provider": "ittybit", "source": url}), 30)
    assert job["state"] == "ready" and time.monotonic() - started < 15, job
    assert len(sandbox.state("ittybit")["webhook_endpoints"]) == 1
