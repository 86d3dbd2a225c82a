"""Brightcove Once end to end: schema-checked requests, S3 staging of local files,
notifications and media-item polling, the deadline when nothing is heard.

The emulator serves the Media Management API as BCL-API-References documents it
(``results``/``prev``/``next``/``totalResults``, items with ``draftVersion`` and
``publishedVersion``, no status): the media API decides a job's state; a notification only
makes the poll due (audit rows O1, O2; docs/providers/once.md)."""

from __future__ import annotations

import os
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
    # Polls 40 s apart: only a notification (which makes the poll due) can end the wait quickly.
    start_fleet(workers=1, webhooks=True, env={"INGEST_POLL_INITIAL": "40", "INGEST_POLL_MAX": "40"})
    pulled = make_source("once-pull.mp4", 2 * MiB, folder=MEDIA)
    started = time.monotonic()
    job_id = submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": "Once pull",
                     "tags": ["news"]})
    deadline = time.monotonic() + 10
    while not status(job_id)["provider_ids"].get("status", "").startswith("draft version 1"):
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


def test_a_failed_ingest_fails_at_the_deadline_quoting_the_notification(start_fleet, sandbox) -> None:
    """The media API shows no failure (the item stays unpublished) and a notification's content
    is not trusted: the job fails at the deadline, and the message quotes what Once notified."""
    sandbox.faults("once", processing_seconds=0.5)
    start_fleet(workers=1, webhooks=True, env={"INGEST_POLL_INITIAL": "0.3", "INGEST_POLL_MAX": "0.5",
                                               "INGEST_ONCE_NOTIFY_DEADLINE": "4"})
    bad = make_source("once-bad.mp4", 1 * MiB, folder=MEDIA, valid=False)
    job = wait(submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{bad.name}"}), 30)
    assert job["state"] == "failed", job
    message = job["error"]["message"]
    assert job["error"]["step"] == "await" and "INGEST_ONCE_NOTIFY_DEADLINE" in message
    assert "The source is not a video" in message, message


def test_silence_fails_the_job_after_the_deadline_with_that_reason(start_fleet, sandbox) -> None:
    sandbox.faults("once", processing_seconds=60)
    start_fleet(workers=1, env={"INGEST_ONCE_NOTIFY_DEADLINE": "2", "INGEST_POLL_INITIAL": "0.5",
                                "INGEST_POLL_MAX": "0.5"})
    pulled = make_source("once-silent.mp4", 1 * MiB, folder=MEDIA)
    job = wait(submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{pulled.name}"}), 30)
    assert job["state"] == "failed"
    assert "not published within 2 s" in job["error"]["message"], job["error"]


def _once_post(body: dict) -> None:
    import requests

    from tests.conftest import ONCE_CATALOG, ONCE_DOMAIN, ONCE_KEY

    r = requests.post(f"{SANDBOX_URL}/ingest-api/{ONCE_DOMAIN}/catalogs/{ONCE_CATALOG}", json=body,
                      headers={"X-BC-ONCE-API-KEY": ONCE_KEY}, timeout=5)
    assert r.ok, r.text


def test_o1_the_item_is_found_by_paging_the_media_listing(start_fleet, sandbox) -> None:
    """O1: the listing is ``results`` 20 a page with ``next`` URLs and no filter; the adapter
    pages to the job's ``foreignKey``, then reads that item by id, and is ready when its
    ``publishedVersion`` is set."""
    sandbox.faults("once", processing_seconds=0.5)
    for i in range(25):  # other items ahead of the job's: it is on page 2
        _once_post({"foreignKey": f"someone-else-{i}", "media": {"sourceURL": "ftp://nowhere/x.mp4"}})
    start_fleet(workers=1, env={"INGEST_POLL_INITIAL": "0.3", "INGEST_POLL_MAX": "0.5",
                                "INGEST_ONCE_NOTIFY_DEADLINE": "10"})
    pulled = make_source("once-paged.mp4", 1 * MiB, folder=MEDIA)
    job = wait(submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{pulled.name}"}), 40)
    assert job["state"] == "ready", job
    item = _item(sandbox, job)
    assert job["provider_ids"]["media_item_id"] == item["id"] and item["publishedVersion"] == 1
    assert len(sandbox.log("once.media_items")) >= 2  # page 1, then page 2 (the 26th item)
    assert sandbox.log("once.media_item"), "the found item is read by id"


def test_o2_a_forged_notification_does_not_decide_the_state(start_fleet, sandbox, rt) -> None:
    """O2: the payload is undocumented, so its content never sets ready or failed: a forged
    'publish success' (or 'error') on the job's valid URL only makes the media API be asked."""
    import requests

    from tasks.callbacks import callback_url

    sandbox.faults("once", processing_seconds=6)
    start_fleet(workers=1, webhooks=True, env={"INGEST_POLL_INITIAL": "0.3", "INGEST_POLL_MAX": "0.5"})
    pulled = make_source("once-forged.mp4", 1 * MiB, folder=MEDIA)
    job_id = submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{pulled.name}"})
    deadline = time.monotonic() + 10
    while status(job_id)["step"] != "await":
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    url = callback_url(rt.settings, "once", job_id)
    for forged in ({"event": "publish", "status": "success", "mediaItemId": "x"},
                   {"event": "error", "status": "error", "message": "forged"}):
        assert requests.post(url, json=forged, timeout=5).status_code == 200
    time.sleep(2)
    assert status(job_id)["state"] not in ("ready", "failed"), status(job_id)
    job = wait(job_id, 30)
    assert job["state"] == "ready", job
    assert _item(sandbox, job)["publishedVersion"] == 1


def test_o2_an_invalid_or_oversized_notification_is_refused_not_stored(rt, start_fleet, sandbox) -> None:
    import json as _json

    import requests

    from tasks.callbacks import callback_url, webhook_events

    sandbox.faults("once", processing_seconds=60)
    start_fleet(workers=1, webhooks=True)
    pulled = make_source("once-refuse.mp4", 1 * MiB, folder=MEDIA)
    job_id = submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{pulled.name}"})
    url = callback_url(rt.settings, "once", job_id)
    assert requests.post(url, data=b"{cut", timeout=5).status_code == 400
    assert requests.post(url, json=["not", "an", "object"], timeout=5).status_code == 400
    big = {"event": "publish", "message": "x" * 70_000}
    assert requests.post(url, data=_json.dumps(big), timeout=5).status_code == 413
    assert webhook_events(rt.redis, job_id) == []
    assert requests.post(url, json={"event": "ingest"}, timeout=5).status_code == 200
    assert webhook_events(rt.redis, job_id) == [{"event": "ingest"}]


def test_o3_an_s3_source_is_pulled_by_once(start_fleet, sandbox) -> None:
    """O3: Once pulls ``s3://BUCKET/KEY`` (seed, "Using S3 buckets"); accepted at submit."""
    import boto3
    from botocore.config import Config

    src = make_source("once-s3-source.mp4", 1 * MiB)
    boto3.client("s3", endpoint_url=os.environ["INGEST_ONCE_S3_ENDPOINT"], region_name="us-east-1",
                 aws_access_key_id="k", aws_secret_access_key="s", config=Config(s3={"addressing_style": "path"})
                 ).put_object(Bucket="once-staging", Key="in/source.mp4", Body=src.read_bytes())
    sandbox.faults("once", processing_seconds=0.5)
    start_fleet(workers=1, env={"INGEST_POLL_INITIAL": "0.3", "INGEST_POLL_MAX": "0.5"})
    job = wait(submit({"provider": "once", "source": "s3://once-staging/in/source.mp4"}), 30)
    assert job["state"] == "ready", job
    assert _item(sandbox, job)["sourceSha256"] == sha256_of(src)
    run = cli("submit", "--provider", "once", "--source", "s3:///no-bucket.mp4")
    assert run.returncode == 2 and "source" in run.stderr, run


STAGING_VARS = ("INGEST_ONCE_STAGING_BUCKET", "INGEST_ONCE_STAGING_ACCESS_KEY_ID",
                "INGEST_ONCE_STAGING_SECRET_ACCESS_KEY")


@pytest.mark.parametrize("missing", STAGING_VARS)
def test_a_push_without_staging_settings_is_refused_at_submit(rt, missing) -> None:
    from tests.conftest import _wipe_fleet_keys

    _wipe_fleet_keys(rt.redis)
    src = make_source("once-refused.mp4", 1 * MiB)
    run = cli("submit", "--provider", "once", "--source", str(src), env={**os.environ, missing: ""})
    assert run.returncode == 2, run
    assert missing in run.stderr and "sandbox" in run.stderr, run.stderr
    assert list(rt.redis.scan_iter("if:job:*")) == []


def test_a_worker_without_staging_credentials_fails_the_job_at_once(start_fleet, sandbox) -> None:
    """Submitted where the credentials are set; the worker lacks them: permanent, named, no retry."""
    start_fleet(workers=1, env={"INGEST_ONCE_STAGING_ACCESS_KEY_ID": "", "INGEST_ONCE_STAGING_SECRET_ACCESS_KEY": "",
                                "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
                                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"})
    src = make_source("once-nocreds.mp4", 1 * MiB)
    job = wait(submit({"provider": "once", "source": str(src)}), 30)
    assert job["state"] == "failed", job
    assert "INGEST_ONCE_STAGING_ACCESS_KEY_ID" in job["error"]["message"], job["error"]
    assert not [h for h in job["history"] if h["event"] == "retry"], job["history"]


def test_a_refused_staging_credential_fails_the_job_at_once(start_fleet, sandbox) -> None:
    """S3 answers AccessDenied (a wrong key or bucket policy): permanent, naming the settings."""
    sandbox.faults("s3", rules=[{"endpoint": "s3.create_multipart_upload", "status": 403}])
    start_fleet(workers=1)
    src = make_source("once-denied.mp4", 1 * MiB)
    job = wait(submit({"provider": "once", "source": str(src)}), 30)
    assert job["state"] == "failed", job
    assert "AccessDenied" in job["error"]["message"] and "INGEST_ONCE_STAGING_ACCESS_KEY_ID" in job["error"]["message"]
    assert not [h for h in job["history"] if h["event"] in ("retry", "upload.session_lost")], job["history"]


def test_a_schema_error_is_refused_at_the_door(rt) -> None:
    from tests.conftest import _wipe_fleet_keys

    _wipe_fleet_keys(rt.redis)
    run = cli("submit", "--provider", "once", "--source", "https://h/a.mp4",
              "--opt", 'cuePoints=[{"valueIn": 3, "unit": "Frames"}]')
    assert run.returncode == 2, run
    assert run.stderr.startswith("error: options.cuePoints: Once's schema refuses it: cuePoints[0].unit")
    assert list(rt.redis.scan_iter("if:*")) == []
