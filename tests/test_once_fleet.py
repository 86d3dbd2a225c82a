"""Brightcove Once end to end: schema-checked requests, S3 staging of local files,
notifications and media-item polling, the deadline when nothing is heard."""

from __future__ import annotations

import time

import pytest

from tasks.producer import status, submit, wait
from tests.conftest import MEDIA, SANDBOX_URL, cli, make_source, sha256_of

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def _item(sandbox, job: dict) -> dict:
    return next(i for i in sandbox.state("once")["items"] if i["foreignKey"] == job["idempotency_key"])


def test_a_pull_completes_from_the_notification(start_fleet, sandbox) -> None:
    sandbox.faults("once", processing_seconds=2, notification_duplicates=True)
    # Media polling off and polls 40 s apart: only the notification can end the wait quickly.
    start_fleet(workers=1, webhooks=True, env={"INGEST_ONCE_MEDIA_POLL": "false", "INGEST_POLL_INITIAL": "40",
                                               "INGEST_POLL_MAX": "40"})
    pulled = make_source("once-pull.mp4", 2 * MiB, folder=MEDIA)
    started = time.monotonic()
    job_id = submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": "Once pull",
                     "tags": ["news"]})
    deadline = time.monotonic() + 10
    while status(job_id)["provider_ids"].get("status") != "submitted, awaiting notification":
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    job = wait(job_id, 30)
    assert job["state"] == "ready", job
    assert time.monotonic() - started < 15
    assert _item(sandbox, job)["sourceSha256"] == sha256_of(pulled)
    sent = sandbox.state("once")["notifications_sent"]
    assert len(sent) >= 2 * 3  # ingest, transcode, publish - each twice: duplicates change nothing
    assert [h["event"] for h in status(job_id)["history"]].count("ready") == 1


def test_a_local_file_is_staged_in_s3_then_pulled_by_once(start_fleet, sandbox) -> None:
    sandbox.faults("once", processing_seconds=1)
    start_fleet(workers=1, env={"INGEST_POLL_INITIAL": "0.3", "INGEST_POLL_MAX": "0.5"})
    src = make_source("once-staged.mp4", 12 * MiB)  # 3 parts of 5 MiB
    job = wait(submit({"provider": "once", "source": str(src), "idempotency_key": "once-staged-1"}), 60)
    assert job["state"] == "ready", job
    assert job["upload"]["bucket"] == "once-staging" and len(job["upload"]["parts"]) == 3
    assert _item(sandbox, job)["sourceSha256"] == sha256_of(src)
    request = sandbox.state("once")["requests"][-1]
    assert request["foreignKey"] == "once-staged-1" and request["valid"]


def test_a_rerun_after_a_crash_updates_the_same_media_item(start_fleet, sandbox) -> None:
    """A run that posted the request and died before its checkpoint: the re-run posts the
    same foreignKey again, which Once treats as the same item (a new version), never a second."""
    import requests

    from tests.conftest import ONCE_CATALOG, ONCE_DOMAIN, ONCE_KEY

    sandbox.faults("once", processing_seconds=0.5)
    pulled = make_source("once-twice.mp4", 1 * MiB, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{pulled.name}"
    job_id = submit({"provider": "once", "source": url, "idempotency_key": "item-7"})  # no worker yet
    crashed = requests.post(f"{SANDBOX_URL}/ingest-api/{ONCE_DOMAIN}/catalogs/{ONCE_CATALOG}",
                            json={"foreignKey": "item-7", "media": {"sourceURL": url}},
                            headers={"X-BC-ONCE-API-KEY": ONCE_KEY}, timeout=5)
    assert crashed.ok, crashed.text
    start_fleet(workers=1, env={"INGEST_POLL_INITIAL": "0.3", "INGEST_POLL_MAX": "0.5"})
    assert wait(job_id, 30)["state"] == "ready"
    items = [i for i in sandbox.state("once")["items"] if i["foreignKey"] == "item-7"]
    assert len(items) == 1


def test_a_failed_ingest_fails_the_job_with_onces_message(start_fleet, sandbox) -> None:
    sandbox.faults("once", processing_seconds=0.5)
    start_fleet(workers=1, webhooks=True, env={"INGEST_POLL_INITIAL": "0.3", "INGEST_POLL_MAX": "0.5"})
    bad = make_source("once-bad.mp4", 1 * MiB, folder=MEDIA, valid=False)
    job = wait(submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{bad.name}"}), 30)
    assert job["state"] == "failed", job
    assert job["error"]["step"] == "await" and job["error"]["message"]


def test_silence_fails_the_job_after_the_deadline_with_that_reason(start_fleet, sandbox) -> None:
    sandbox.faults("once", processing_seconds=60)
    start_fleet(workers=1, env={"INGEST_ONCE_MEDIA_POLL": "false", "INGEST_ONCE_NOTIFY_DEADLINE": "2",
                                "INGEST_POLL_INITIAL": "0.5", "INGEST_POLL_MAX": "0.5"})
    pulled = make_source("once-silent.mp4", 1 * MiB, folder=MEDIA)
    job = wait(submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{pulled.name}"}), 30)
    assert job["state"] == "failed"
    assert "no publication notice" in job["error"]["message"]


def test_a_schema_error_is_refused_at_the_door(rt) -> None:
    from tests.conftest import _wipe_fleet_keys

    _wipe_fleet_keys(rt.redis)
    run = cli("submit", "--provider", "once", "--source", "https://h/a.mp4",
              "--opt", 'cuePoints=[{"valueIn": 3, "unit": "Frames"}]')
    assert run.returncode == 2, run
    assert run.stderr.startswith("error: options.cuePoints: Once's schema refuses it: cuePoints[0].unit")
    assert list(rt.redis.scan_iter("if:*")) == []
