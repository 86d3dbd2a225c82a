"""Ingest.io end to end: real workers, real Redis, the sandbox's Ingest.io emulator over sockets
(bearer JWT, required Accept header, X-RateLimit-*, range pagination, signed part URLs that
expire, assembly on complete, encoding jobs, signed account-wide webhooks)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tasks.producer import status, submit, wait
from tasks.providers.ingestio import VND, input_filename, marker
from tests.conftest import ENV, INGESTIO_TOKEN, SANDBOX_URL, cli, kill9_pool, make_source, sha256_of

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
PIECE = 5 * MiB  # the emulator's part size (Ingest.io's minimum)


def _api(method: str, path: str, body: dict | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {INGESTIO_TOKEN}", "Accept": VND}
    if body is not None:
        headers["Content-Type"] = VND
    return requests.request(method, f"{SANDBOX_URL}{path}", headers=headers,
                            data=json.dumps(body) if body is not None else None, timeout=10)


def _input(sandbox, job: dict) -> dict:
    return next(i for i in sandbox.state("ingestio")["inputs"] if i["id"] == job["provider_ids"]["input_id"])


def _puts(inp: dict) -> dict[int, int]:
    return {int(n): p["puts"] for n, p in inp["upload"]["parts"].items()}


def test_single_and_multipart_uploads_reach_ready_with_the_source_bytes(start_fleet, sandbox) -> None:
    start_fleet(workers=1, concurrency=2)
    small = make_source("io-small.mp4", 2 * MiB)  # <= 5 MiB: one signed PUT
    large = make_source("io-large.mp4", 3 * PIECE + 123_456)  # 4 parts
    ids = {"small": submit({"provider": "ingestio", "source": str(small), "title": "small", "tags": ["news"]}),
           "large": submit({"provider": "ingestio", "source": str(large), "title": "large"})}
    jobs = {name: wait(job_id, 120) for name, job_id in ids.items()}
    for name, job in jobs.items():
        assert job["state"] == "ready", (name, job["error"], job["history"][-5:])
    assert jobs["small"]["upload"]["type"] == "amazon" and jobs["large"]["upload"]["type"] == "amazonMP"
    assert [p["n"] for p in jobs["large"]["upload"]["parts"]] == [1, 2, 3, 4]
    for name, src in (("small", small), ("large", large)):
        inp = _input(sandbox, jobs[name])
        assert inp["sha256"] == sha256_of(src), name
        assert inp["filename"] == input_filename(jobs[name]["id"], str(src))
    assert set(_puts(_input(sandbox, jobs["large"])).values()) == {1}
    state = sandbox.state("ingestio")
    assert len(state["videos"]) == 2 and len(state["inputs"]) == 2 and len(state["jobs"]) == 2
    video = next(v for v in state["videos"] if v["id"] == jobs["small"]["provider_ids"]["video_id"])
    assert sorted(video["tags"]) == sorted(["news", marker(ids["small"])])
    # Every API call carried Accept: the emulator answers 406 without it, and none was seen.
    entries = sandbox.log()
    assert [e for e in entries if e.get("provider") == "ingestio" and e["status"] in (401, 406)] == []
    # The provider's Request-Id of each create is kept with the job.
    created = [h for h in jobs["large"]["history"] if h["event"] in ("entity.created", "input.created",
                                                                      "ingest.requested")]
    assert len(created) == 3 and all(len(h["request_id"]) == 36 for h in created)


def test_kill_9_mid_parts_resumes_without_resending_recorded_parts(start_fleet, sandbox) -> None:
    src = make_source("io-kill.mp4", 8 * PIECE)  # 8 parts
    sandbox.faults("ingestio", latency_ms=500, latency_endpoints=["ingestio.part_put"])
    fleet = start_fleet(workers=1, concurrency=1)
    job_id = submit({"provider": "ingestio", "source": str(src), "title": "killed mid-parts"})
    deadline = time.monotonic() + 90
    while len(status(job_id)["upload"].get("parts", [])) < 3:
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    recorded = {p["n"] for p in status(job_id)["upload"]["parts"]}
    kill9_pool(fleet.workers[0])  # the process sending the parts; its worker goes on with a new one
    killed_at = time.time()

    # Sent again by the worker at once (the steps' default_retry_delay, 2 s), not after the
    # visibility timeout (40 s here) or Celery's own default of 180 s.
    job = wait(job_id, 60)
    assert job["state"] == "ready", job["error"]
    inp = _input(sandbox, job)
    puts = _puts(inp)
    for n in recorded:
        assert puts[n] == 1, f"part {n} was recorded before the kill and sent again"
    assert sorted(puts) == list(range(1, 9)) and sum(puts.values()) <= 8 + 1  # at most the part in flight
    # The new worker signed every part it sent afresh (no signed URL is kept to reuse).
    signatures = {int(n): c for n, c in inp["signatures"].items()}
    assert all(signatures[n] == 1 for n in recorded)
    assert all(signatures[n] >= puts[n] for n in puts)
    signed_after = [e for e in sandbox.log("ingestio.upload_sign") if e["t"] > killed_at]
    assert len(signed_after) >= 8 - len(recorded)
    assert inp["sha256"] == sha256_of(src)
    state = sandbox.state("ingestio")
    assert len(state["videos"]) == 1 and len(state["inputs"]) == 1 and len(state["jobs"]) == 1
    assert len(sandbox.log("ingestio.upload_init")) == 1


def test_an_expired_signed_url_is_signed_again(start_fleet, sandbox) -> None:
    sandbox.faults("ingestio", expire_next_signatures=2)
    start_fleet(workers=1)
    src = make_source("io-expired.mp4", 2 * PIECE + 1000)
    job = wait(submit({"provider": "ingestio", "source": str(src)}), 90)
    assert job["state"] == "ready", job["error"]
    assert [h["reason"] for h in job["history"] if h["event"] == "upload.resigned"] == ["AccessDenied"] * 2
    assert [e["status"] for e in sandbox.log("ingestio.part_put")].count(403) == 2
    assert _input(sandbox, job)["sha256"] == sha256_of(src)


def test_cancel_aborts_the_open_upload(start_fleet, sandbox, rt) -> None:
    src = make_source("io-cancel.mp4", 6 * PIECE)
    sandbox.faults("ingestio", latency_ms=500, latency_endpoints=["ingestio.part_put"])
    start_fleet(workers=1, concurrency=1)
    job_id = submit({"provider": "ingestio", "source": str(src)})
    deadline = time.monotonic() + 60
    while not status(job_id)["upload"].get("parts"):
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    result = cli("cancel", job_id)
    assert result.returncode == 0, result.stderr
    assert status(job_id)["state"] == "cancelled"
    aborts = sandbox.log("ingestio.upload_abort")
    assert [e["status"] for e in aborts] == [201]
    job = status(job_id)
    assert _input(sandbox, job)["aborted"] is True
    time.sleep(2)  # a slice in flight stops at its next checkpoint: no complete, no job
    assert sandbox.log("ingestio.upload_complete") == [] and sandbox.log("ingestio.create_job") == []


def test_a_permanent_error_fails_with_the_providers_message_and_aborts(start_fleet, sandbox) -> None:
    sandbox.faults("ingestio", rules=[{"endpoint": "ingestio.upload_complete", "status": 400,
                                       "body": {"errors": ["input size does not match the parts"]}, "times": 1}])
    start_fleet(workers=1)
    src = make_source("io-perm.mp4", PIECE + 4096)
    job = wait(submit({"provider": "ingestio", "source": str(src)}), 90)
    assert job["state"] == "failed"
    assert "input size does not match the parts" in job["error"]["message"], job["error"]
    assert job["error"]["kind"] == "permanent"
    assert len(sandbox.log("ingestio.upload_complete")) == 1  # not retried
    assert [e["status"] for e in sandbox.log("ingestio.upload_abort")] == [201]


def test_a_429_storm_is_survived_through_the_cooldown(start_fleet, sandbox) -> None:
    sandbox.faults("ingestio", rate_429=0.4, retry_after=1,
                   rate_429_endpoints=["ingestio.create_video", "ingestio.create_input", "ingestio.upload_sign",
                                       "ingestio.create_job", "ingestio.get_job"])
    start_fleet(workers=1, concurrency=2)
    ids = [submit({"provider": "ingestio", "source": str(make_source(f"io-429-{i}.mp4", PIECE + 7000))})
           for i in range(3)]
    jobs = [wait(i, 180) for i in ids]
    assert [j["state"] for j in jobs] == ["ready"] * 3, [j["error"] for j in jobs]
    throttled = [e for e in sandbox.log() if e.get("provider") == "ingestio" and e["status"] == 429]
    assert len(throttled) >= 3
    assert any(h["event"] == "throttled" for j in jobs for h in j["history"])
    assert len(sandbox.state("ingestio")["videos"]) == 3  # a throttled create never made two


def test_the_announced_rate_limit_is_learned_and_kept(start_fleet, sandbox, rt) -> None:
    """X-RateLimit-Remaining reaching 0 pauses the account until X-RateLimit-Reset."""
    sandbox.faults("ingestio", rate_limit=6, rate_window=2)
    start_fleet(workers=1, concurrency=2)
    ids = [submit({"provider": "ingestio", "source": str(make_source(f"io-rl-{i}.mp4", 1 * MiB))})
           for i in range(3)]
    jobs = [wait(i, 180) for i in ids]
    assert [j["state"] for j in jobs] == ["ready"] * 3, [j["error"] for j in jobs]
    observed = rt.redis.hgetall("if:budget:observed:ingestio:default")
    assert observed and int(float(observed[b"limit"])) == 6
    calls = [e for e in sandbox.log() if e.get("provider") == "ingestio" and e["endpoint"] != "ingestio.part_put"]
    assert len(calls) > 12  # more than two windows' worth of calls were needed
    refused = [e for e in calls if e["status"] == 429]
    assert len(refused) <= len(calls) // 4, f"{len(refused)} of {len(calls)} calls were refused"


def test_a_crash_after_create_finds_the_marked_video_and_input_across_pages(start_fleet, sandbox, rt) -> None:
    """No idempotency key at Ingest.io: a run that may have created the video and the input
    looks them up by the fleet's marker, reading the lists page by page (206 + Next-Range)."""
    src = make_source("io-marker.mp4", 1 * MiB)
    job_id = submit({"provider": "ingestio", "source": str(src), "title": "same title"})
    # What a run that died right after both creates leaves behind: the flags in the record,
    # the entities at Ingest.io, among others with the same title.
    for i in range(12):
        _api("POST", "/videos", {"title": "same title", "tags": [f"other-{i}"]}).raise_for_status()
        _api("POST", "/encoding/inputs", {"filename": f"other-{i}.mp4", "type": "video/mp4", "size": 10})
    video = _api("POST", "/videos", {"title": "same title", "tags": [marker(job_id)]}).json()
    inp = _api("POST", "/encoding/inputs", {"filename": input_filename(job_id, str(src)), "type": "video/mp4",
                                            "size": src.stat().st_size}).json()
    job = rt.store.get(job_id)
    lease = rt.store.acquire(job_id, ttl=30)
    job.provider_ids.update(video_requested=True, input_requested=True)
    rt.store.save(job, lease, release=True)

    start_fleet(workers=1)
    job = wait(job_id, 90)
    assert job["state"] == "ready", job["error"]
    assert job["provider_ids"]["video_id"] == video["id"] and job["provider_ids"]["input_id"] == inp["id"]
    state = sandbox.state("ingestio")
    assert len(state["videos"]) == 13 and len(state["inputs"]) == 13
    pages = sandbox.log("ingestio.list_videos")
    assert [e["status"] for e in pages] == [206, 200]


def test_a_signed_webhook_ends_the_wait_and_a_forged_one_is_refused(start_fleet, sandbox, rt) -> None:
    sandbox.faults("ingestio", processing_seconds=2)
    # Without a webhook the next poll would come after 40 s.
    start_fleet(workers=1, webhooks=True, env={"INGEST_POLL_INITIAL": "40", "INGEST_POLL_MAX": "40"})
    src = make_source("io-hook.mp4", 1 * MiB)
    started = time.monotonic()
    job_id = submit({"provider": "ingestio", "source": str(src)})
    job = wait(job_id, 30)
    assert job["state"] == "ready", job["error"]
    assert time.monotonic() - started < 15
    state = sandbox.state("ingestio")
    [hook] = state["hooks"]
    assert hook["url"].startswith(ENV["INGEST_WEBHOOK_URL"] + "/ingestio/accounts/default/")
    sent = [w for w in state["webhooks_sent"] if w["event"] == "jobs.complete"]
    assert sent and sent[0]["status"] == 200
    # A forged notification (wrong key) to the same URL is refused and changes nothing.
    body = json.dumps({"event": "jobs.error", "event_object": {"data": {"id": job["provider_ids"]["encoding_job_id"]}}})
    forged = requests.post(hook["url"], data=body, timeout=5,
                           headers={"X-Ingest-Signature": "0" * 40, "Content-Type": "application/json"})
    assert forged.status_code == 403
    assert status(job_id)["state"] == "ready"
    events = [json.loads(e) for e in rt.redis.lrange(f"if:webhook:events:{job_id}", 0, -1)]
    assert events and all(e["event"] != "jobs.error" for e in events)


def test_a_url_on_a_private_address_and_a_missing_profile_are_refused_at_the_door(sandbox) -> None:
    """Ingest.io has no URL ingest, so a URL is relayed by the fleet, which reads only where it
    may: the sandbox's loopback address is refused unless INGEST_RELAY_ALLOW_NETS has it."""
    import os

    guarded = {k: v for k, v in os.environ.items() if k != "INGEST_RELAY_ALLOW_NETS"}
    result = cli("submit", "--provider", "ingestio", "--source", f"{SANDBOX_URL}/media/a.mp4", env=guarded)
    assert result.returncode == 2, result.stderr
    assert "source" in result.stderr and "loopback" in result.stderr and "INGEST_RELAY_ALLOW_NETS" in result.stderr
    env = {k: v for k, v in ENV.items() if k != "INGEST_INGESTIO_PROFILE"}

    result = cli("submit", "--provider", "ingestio", "--source", str(make_source("io-door.mp4", 4096)),
                 env={**{k: v for k, v in os.environ.items() if k != "INGEST_INGESTIO_PROFILE"}, **env})
    assert result.returncode == 2
    assert "INGEST_INGESTIO_PROFILE" in result.stderr


def test_parts_are_signed_with_the_content_type_they_are_put_with(start_fleet, sandbox) -> None:
    """N1: the node SDK's ``_signChunk`` signs with ``contentType: 'application/octet-stream'``
    and PUTs with exactly that type; the emulator's signature covers the signed type."""
    start_fleet(workers=1)
    small = make_source("io-ct-small.mp4", 1 * MiB)  # one signed PUT
    large = make_source("io-ct-large.mp4", PIECE + 4096)  # 2 parts
    jobs = [wait(submit({"provider": "ingestio", "source": str(src)}), 90) for src in (small, large)]
    for job in jobs:
        assert job["state"] == "ready", (job["error"], job["history"][-5:])
        assert not [h for h in job["history"] if h["event"] == "upload.resigned"]
    assert [e for e in sandbox.log("ingestio.part_put") if e["status"] != 200] == []
    types = [_input(sandbox, job)["signed_types"] for job in jobs]
    octet = "application/octet-stream"
    assert types == [{"1": octet}, {"1": octet, "2": octet}]


def test_a_lost_complete_answer_is_recognised_from_the_input_lists(start_fleet, sandbox) -> None:
    """N2: the repeated complete answers 409; the Input object has no ``status``, so the
    adapter finds its input under the documented ``filter=<state>`` of the inputs list."""
    sandbox.faults("ingestio", lose_next_complete_answers=1)
    start_fleet(workers=1)
    src = make_source("io-lost-complete.mp4", PIECE + 4096)
    job = wait(submit({"provider": "ingestio", "source": str(src)}), 90)
    assert job["state"] == "ready", (job["error"], job["history"][-5:])
    [conflict] = [h for h in job["history"] if h["event"] == "upload.complete_conflict"]
    assert conflict["listed_as"] == "ready" and "already completed" in conflict["answer"]
    assert [e["status"] for e in sandbox.log("ingestio.upload_complete")] == [None, 409]
    assert sandbox.log("ingestio.get_input") == []  # no read of an undocumented field
    assert _input(sandbox, job)["sha256"] == sha256_of(src)
    assert len(sandbox.state("ingestio")["jobs"]) == 1


def test_the_publish_option_publishes_the_encoded_video_once(start_fleet, sandbox) -> None:
    """Encoded videos are ``draft`` ("playable but not published"); ``--opt publish=true`` (or
    INGEST_INGESTIO_PUBLISH) publishes it with the node SDK's ``POST /videos/publish [id]``."""
    start_fleet(workers=1)
    src = make_source("io-publish.mp4", 1 * MiB)
    published = wait(submit({"provider": "ingestio", "source": str(src), "options": {"publish": True}}), 90)
    draft = wait(submit({"provider": "ingestio", "source": str(src)}), 90)
    assert (published["state"], draft["state"]) == ("ready", "ready"), (published["error"], draft["error"])
    videos = {v["id"]: v for v in sandbox.state("ingestio")["videos"]}
    assert videos[published["provider_ids"]["video_id"]]["status"] == "PUBLISHED"
    assert videos[published["provider_ids"]["video_id"]]["published_at"]
    assert videos[draft["provider_ids"]["video_id"]]["status"] == "DRAFT"
    assert [e["status"] for e in sandbox.log("ingestio.publish_videos")] == [200]
    assert [h["event"] for h in published["history"]].count("video.published") == 1
