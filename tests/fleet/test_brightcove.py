"""Brightcove Video Cloud end to end: real workers, real Redis, the sandbox's OAuth, CMS,
Dynamic Ingest and S3 (moto behind a logging proxy) over sockets."""

from __future__ import annotations

import json
import os
import time

import pytest

from tasks.producer import status, submit, wait
from tests.conftest import BC_SECRET, MEDIA, SANDBOX_URL, kill9_pool, make_source, sha256_of

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def _bc_video(sandbox, job: dict) -> dict:
    vid = job["provider_ids"]["video_id"]
    return next(v for v in sandbox.state("brightcove")["videos"] if v["id"] == vid)


def test_small_push_large_push_and_pull_reach_ready(start_fleet, sandbox) -> None:
    start_fleet(workers=1, concurrency=2)
    small = make_source("bc-small.mp4", 3 * MiB)
    large = make_source("bc-large.mp4", 16 * MiB)  # > SINGLE_PUT_MAX: 4 parts of 5 MiB
    pulled = make_source("bc-pull.mp4", 2 * MiB, folder=MEDIA)
    ids = {
        "small": submit({"provider": "brightcove", "source": str(small), "title": "small push",
                         "tags": ["news", "sandbox"], "metadata": {"team": "video"}}),
        "large": submit({"provider": "brightcove", "source": str(large), "title": "large push"}),
        "pull": submit({"provider": "brightcove", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": "pull"}),
    }
    jobs = {name: wait(job_id, 120) for name, job_id in ids.items()}
    for name, job in jobs.items():
        assert job["state"] == "ready", (name, job)
    assert jobs["small"]["upload"]["mode"] == "single" and jobs["large"]["upload"]["mode"] == "multipart"
    assert len(jobs["large"]["upload"]["parts"]) == 4
    for name, src in (("small", small), ("large", large), ("pull", pulled)):
        video = _bc_video(sandbox, jobs[name])
        assert [j["source_sha256"] for j in video["jobs"]] == [sha256_of(src)], name
        assert video["ingest_requests"] == 1
        assert video["reference_id"] == jobs[name]["idempotency_key"]
    assert len(sandbox.log("s3.upload_part")) == 4
    # The v2 signed_url signs no Content-Type: the PUT must carry none (B1).
    assert [e["status"] for e in sandbox.log("s3.put_object")] == [200]
    # upload-urls carries Content-Type: application/json, else 415 (B4).
    assert {e["status"] for e in sandbox.log("brightcove.upload_urls")} == {200}


def _kill_mid_multipart(start_fleet, sandbox, src, *, parts_before_kill: int, timeout: float, **s3_faults):
    """Push ``src`` (5 MiB parts, slowed down), kill -9 the worker's pool process once
    ``parts_before_kill`` parts are checkpointed; returns the final job. Asserts no checkpointed part is sent
    twice and every part is sent."""
    sandbox.faults("s3", latency_ms=400, latency_endpoints=["s3.upload_part"], **s3_faults)
    fleet = start_fleet(workers=1, concurrency=1)
    job_id = submit({"provider": "brightcove", "source": str(src), "title": "killed mid-multipart"})
    deadline = time.monotonic() + 90
    while len(status(job_id)["upload"].get("parts", [])) < parts_before_kill:
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    recorded = {p["n"] for p in status(job_id)["upload"]["parts"]}
    kill9_pool(fleet.workers[0])  # the process sending the parts; the worker goes on with a new one
    job = wait(job_id, timeout)
    assert job["state"] == "ready", job
    sent = [e["part_number"] for e in sandbox.log("s3.upload_part") if e.get("status") == 200]
    for n in recorded:
        assert sent.count(n) == 1, f"part {n} was checkpointed before the kill and sent again"
    assert sorted(set(sent)) == list(range(1, src.stat().st_size // (5 * MiB) + 1))
    return job


def test_kill_9_mid_multipart_resends_no_completed_part(start_fleet, sandbox) -> None:
    src = make_source("bc-kill.mp4", 60 * MiB)  # 12 parts of 5 MiB
    _kill_mid_multipart(start_fleet, sandbox, src, parts_before_kill=3, timeout=60)
    assert len(sandbox.log("s3.create_multipart_upload")) == 1
    state = sandbox.state("brightcove")
    assert len(state["videos"]) == 1 and state["ingest_requests"][state["videos"][0]["id"]] == 1
    assert state["videos"][0]["jobs"][0]["source_sha256"] == sha256_of(src)


def test_the_token_expires_mid_run_and_is_refreshed(start_fleet, sandbox) -> None:
    sandbox.faults("brightcove", token_ttl=2, processing_seconds=5)
    start_fleet(workers=1, env={"INGEST_POLL_INITIAL": "0.5", "INGEST_POLL_MAX": "0.5"})
    pulled = make_source("bc-token.mp4", 1 * MiB, folder=MEDIA)
    ids = [submit({"provider": "brightcove", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": f"t{i}"})
           for i in range(3)]
    jobs = [wait(i, 90) for i in ids]
    assert [j["state"] for j in jobs] == ["ready"] * 3, [j["error"] for j in jobs]
    assert len(sandbox.state("brightcove")["tokens_issued"]) >= 3  # refreshed as they expired


def test_a_wrong_client_secret_fails_the_job_with_a_clear_message(start_fleet, sandbox) -> None:
    start_fleet(workers=1, env={"INGEST_BRIGHTCOVE_CLIENT_SECRET": "not-the-secret"})
    pulled = make_source("bc-badsecret.mp4", 1 * MiB, folder=MEDIA)
    job = wait(submit({"provider": "brightcove", "source": f"{SANDBOX_URL}/media/{pulled.name}"}), 60)
    assert job["state"] == "failed"
    assert "invalid_client" in job["error"]["message"]
    assert "INGEST_BRIGHTCOVE_CLIENT_SECRET" in job["error"]["message"]
    assert len(sandbox.log("brightcove.oauth_token")) == 1  # no retry loop


def test_callbacks_end_the_wait_early_and_duplicates_are_ignored(start_fleet, sandbox) -> None:
    sandbox.faults("brightcove", processing_seconds=2, callback_duplicates=True)
    # Without a callback the next poll would come after 40 s.
    start_fleet(workers=1, webhooks=True, env={"INGEST_POLL_INITIAL": "40", "INGEST_POLL_MAX": "40"})
    pulled = make_source("bc-hook.mp4", 1 * MiB, folder=MEDIA)
    started = time.monotonic()
    job = wait(submit({"provider": "brightcove", "source": f"{SANDBOX_URL}/media/{pulled.name}"}), 30)
    assert job["state"] == "ready", job
    assert time.monotonic() - started < 15
    titles = [c for c in sandbox.state("brightcove")["callbacks_sent"] if c["payload"].get("entityType") == "TITLE"]
    assert len(titles) == 2 and all(c["status"] == 200 for c in titles)  # both delivered, one acted on
    assert len(sandbox.log("brightcove.get_ingest_job")) <= 3


def test_a_crash_between_create_and_checkpoint_reuses_the_video(start_fleet, sandbox, rt) -> None:
    """The reference_id is the idempotency key: a second create answers 409 and the video is
    fetched by ref:, never created twice."""
    import requests

    pulled = make_source("bc-ref.mp4", 1 * MiB, folder=MEDIA)
    job_id = submit({"provider": "brightcove", "source": f"{SANDBOX_URL}/media/{pulled.name}",
                     "idempotency_key": "order-bc-1"})
    token = requests.post(f"{SANDBOX_URL}/v4/access_token", data={"grant_type": "client_credentials"},
                          auth=("test-bc-client", BC_SECRET), timeout=5).json()["access_token"]
    requests.post(f"{SANDBOX_URL}/v1/accounts/6200000000042/videos", json={"name": "x", "reference_id": "order-bc-1"},
                  headers={"Authorization": f"Bearer {token}"}, timeout=5).raise_for_status()
    start_fleet(workers=1)
    job = wait(job_id, 60)
    assert job["state"] == "ready", job
    assert len(sandbox.state("brightcove")["videos"]) == 1
    assert any(h["event"] == "entity.found" for h in job["history"])


def test_upload_credentials_stay_in_their_own_expiring_key(start_fleet, sandbox, rt) -> None:
    src = make_source("bc-secret.mp4", 12 * MiB)
    sandbox.faults("s3", latency_ms=300, latency_endpoints=["s3.upload_part"])
    fleet = start_fleet(workers=1)
    job_id = submit({"provider": "brightcove", "source": str(src)})
    deadline = time.monotonic() + 60
    while not status(job_id)["upload"].get("parts"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    issued = sandbox.state("brightcove")["credentials_issued"]
    secrets = [v for c in issued for k, v in c.items() if k in ("secret_access_key", "session_token")]
    assert secrets
    secret_key = f"if:secret:{job_id}:upload"
    assert 0 < rt.redis.ttl(secret_key) <= 23 * 3600
    for key in rt.redis.scan_iter("*"):
        if key.decode() == secret_key:
            continue
        kind = rt.redis.type(key).decode()
        value = {"string": rt.redis.get, "list": lambda k: rt.redis.lrange(k, 0, -1), "hash": rt.redis.hgetall,
                 "zset": lambda k: rt.redis.zrange(k, 0, -1), "set": rt.redis.smembers}.get(kind, lambda k: b"")(key)
        assert not any(s in repr(value) for s in secrets), f"an upload secret in {key!r}"
    assert wait(job_id, 90)["state"] == "ready"
    assert not rt.redis.exists(secret_key)  # dropped once the upload is over
    logs = fleet.logs()
    assert not any(s in logs for s in secrets + [BC_SECRET])
    tokens = sandbox.state("brightcove")["tokens_issued"]
    assert tokens and not any(t in logs for t in tokens)
    record = json.dumps(status(job_id))
    assert not any(s in record for s in secrets + tokens + [BC_SECRET])


def test_calls_on_one_video_keep_the_per_video_budget(start_fleet, sandbox) -> None:
    # Brightcove: <= 10 requests a minute on one video; here 1 a second to keep the test short.
    sandbox.faults("brightcove", processing_seconds=3)
    start_fleet(workers=1, concurrency=2, env={"INGEST_BRIGHTCOVE_ENTITY_RATE": "1",
                                               "INGEST_POLL_INITIAL": "0.2", "INGEST_POLL_MAX": "0.3"})
    src = make_source("bc-entity.mp4", 2 * MiB)
    job = wait(submit({"provider": "brightcove", "source": str(src)}), 60)
    assert job["state"] == "ready", job
    vid = str(job["provider_ids"]["video_id"])
    entries = [e for e in sandbox.log() if e.get("entity") == vid]
    calls = sorted(e["t"] for e in entries)
    assert len(calls) >= 4  # create, upload-urls, ingest request, polls
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    # Tokens are 1.05 s apart (5 % headroom); a step that deferred to its reserved token may
    # send up to a quarter interval late (later, it takes a new slot), never closer than that.
    assert min(gaps) >= 0.7, [(e["endpoint"], e["t"]) for e in entries]
    assert (calls[-1] - calls[0]) / (len(calls) - 1) >= 1.0, "over the job, more than 1 call a second"


def test_only_defined_custom_fields_are_sent(start_fleet, sandbox, rt) -> None:
    """Metadata goes to CMS custom_fields only where the account defines the field (GET video_fields);
    an undefined key fails the job at once, naming it, without creating a video (B2)."""
    start_fleet(workers=1)
    pulled = make_source("bc-fields.mp4", 1 * MiB, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{pulled.name}"
    good = wait(submit({"provider": "brightcove", "source": url, "metadata": {"team": "video", "subject": "Birds"}}),
                60)
    assert good["state"] == "ready", good
    assert _bc_video(sandbox, good)["custom_fields"] == {"team": "video", "subject": "Birds"}
    bad = wait(submit({"provider": "brightcove", "source": url, "metadata": {"team": "video", "mood": "calm"}}), 60)
    assert bad["state"] == "failed", bad
    assert "mood" in bad["error"]["message"] and "INGEST_BRIGHTCOVE_CUSTOM_FIELDS" in bad["error"]["message"]
    assert bad["attempts"].get("create", 0) <= 1 and "video_id" not in bad["provider_ids"]
    enum = wait(submit({"provider": "brightcove", "source": url, "metadata": {"subject": "Rocks"}}), 60)
    assert enum["state"] == "failed" and "subject" in enum["error"]["message"], enum
    assert len(sandbox.state("brightcove")["videos"]) == 1
    # The definitions are cached per account: one GET for the three jobs, plus one fresh look
    # for each unknown key or value before failing.
    assert len(sandbox.log("brightcove.video_fields")) <= 3


def test_a_custom_field_mapping_renames_and_limits_metadata(start_fleet, sandbox) -> None:
    env = {"INGEST_BRIGHTCOVE_CUSTOM_FIELDS": "dept:team"}
    start_fleet(workers=1, env=env)
    pulled = make_source("bc-map.mp4", 1 * MiB, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{pulled.name}"
    job = wait(submit({"provider": "brightcove", "source": url, "metadata": {"dept": "video"}}), 60)
    assert job["state"] == "ready", job
    assert _bc_video(sandbox, job)["custom_fields"] == {"team": "video"}
    # A key the mapping does not name is refused at submit, naming the key and the setting.
    from tasks.config import Settings
    from tasks.intent import Intent, IntentError

    settings = Settings.from_env({**os.environ, **env})
    with pytest.raises(IntentError) as info:
        Intent.from_dict({"provider": "brightcove", "source": url, "metadata": {"mood": "calm"}}).validate(settings)
    assert "metadata.mood" in str(info.value) and "INGEST_BRIGHTCOVE_CUSTOM_FIELDS" in str(info.value)


def test_multipart_resumes_from_checkpointed_parts_when_list_parts_is_denied(start_fleet, sandbox) -> None:
    """Brightcove's temporary credentials are documented for multipart uploads, not for ListParts:
    a denied ListParts must not restart the upload (B3)."""
    src = make_source("bc-noparts.mp4", 30 * MiB)  # 6 parts of 5 MiB
    job = _kill_mid_multipart(start_fleet, sandbox, src, parts_before_kill=2, timeout=60,
                              rules=[{"endpoint": "s3.list_parts", "status": 403}])
    assert len(sandbox.log("s3.create_multipart_upload")) == 1
    assert len(sandbox.state("brightcove")["credentials_issued"]) == 1  # the upload target was kept
    assert _bc_video(sandbox, job)["jobs"][0]["source_sha256"] == sha256_of(src)
    assert any(h["event"] == "upload.list_parts_denied" for h in job["history"])


def test_rendition_callbacks_make_the_poll_due(start_fleet, sandbox) -> None:
    """Dynamic Delivery documents DYNAMIC_RENDITION notifications; each one about the job's
    video makes the poll due, and the CMS ingest job decides the state (B5)."""
    sandbox.faults("brightcove", processing_seconds=6, title_notifications=False)
    start_fleet(workers=1, webhooks=True, env={"INGEST_POLL_INITIAL": "40", "INGEST_POLL_MAX": "40"})
    pulled = make_source("bc-rendition.mp4", 1 * MiB, folder=MEDIA)
    job_id = submit({"provider": "brightcove", "source": f"{SANDBOX_URL}/media/{pulled.name}"})
    deadline = time.monotonic() + 25
    while not any(h.get("event") == "provider.status" and h.get("status") == "published"
                  for h in status(job_id)["history"]):
        assert time.monotonic() < deadline, status(job_id)["history"]
        time.sleep(0.1)
    sent = [c for c in sandbox.state("brightcove")["callbacks_sent"]]
    assert sent and {c["payload"]["entityType"] for c in sent} == {"DYNAMIC_RENDITION"}


def test_low_priority_jobs_have_their_own_smaller_pool(start_fleet, sandbox) -> None:
    """Brightcove runs at most 100 low-priority jobs at once per account, apart from the 200 normal
    ones (ingest priority queueing page); scaled down here to 2 low and 3 normal (B6)."""
    sandbox.faults("brightcove", processing_seconds=3)
    start_fleet(workers=1, concurrency=4, env={"INGEST_BRIGHTCOVE_SLOTS": "3", "INGEST_BRIGHTCOVE_LOW_SLOTS": "2",
                                               "INGEST_POLL_INITIAL": "0.3", "INGEST_POLL_MAX": "0.5"})
    pulled = make_source("bc-low.mp4", 1 * MiB, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{pulled.name}"
    ids = [submit({"provider": "brightcove", "source": url, "title": f"low {i}", "priority": "low"}) for i in range(5)]
    ids += [submit({"provider": "brightcove", "source": url, "title": f"normal {i}"}) for i in range(3)]
    most = {"low": 0, "normal": 0}
    deadline = time.monotonic() + 120
    while not all(status(i)["state"] in ("ready", "failed") for i in ids):
        assert time.monotonic() < deadline, [status(i)["state"] for i in ids]
        running = [j for v in sandbox.state("brightcove")["videos"] for j in v["jobs"]
                   if j["state"] not in ("finished", "failed")]
        for priority in most:
            most[priority] = max(most[priority], sum(j["priority"] == priority for j in running))
        time.sleep(0.1)
    assert [status(i)["state"] for i in ids] == ["ready"] * len(ids)
    assert most["low"] == 2, most  # never more than the low pool, and it was used
    assert most["normal"] == 3, most  # the normal pool is not taken by low-priority jobs
