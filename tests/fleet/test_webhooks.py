"""The webhook receiver over a real socket: only per-job tokens are accepted, a notification
makes the job's pending poll due now, and duplicates are recognised."""

from __future__ import annotations

import pytest
import requests

from tasks.callbacks import token_for
from tasks.jobstore import SCHEDULE_KEY, Job
from workers.webhooks import WebhookReceiver


@pytest.fixture
def receiver(rt):
    from tests.conftest import _wipe_fleet_keys

    _wipe_fleet_keys(rt.redis)
    object.__setattr__(rt.settings, "webhook_secret", "s" * 32)
    r = WebhookReceiver(rt)
    r.serve()
    yield r
    r.stop()
    object.__setattr__(rt.settings, "webhook_secret", "")


def _awaiting_job(rt, provider: str = "brightcove") -> Job:
    job = Job(id="a" * 32, provider=provider, account="default", source="https://h/a.mp4", mode="pull",
              title="t", idempotency_key="hook-test", state="processing", step="await",
              dispatch={"task_id": f"{'a' * 32}.3.await", "member": f"{provider}.poll {'a' * 32}.3.await 3"})
    rt.store.create(job, dispatch_member="unused", grace=30)
    rt.redis.zrem(SCHEDULE_KEY, "unused")
    rt.store.schedule(job.dispatch["member"], 600)  # the next poll, far away
    return job


def test_a_notification_makes_the_pending_poll_due_now(rt, receiver) -> None:
    job = _awaiting_job(rt)
    url = f"http://127.0.0.1:{receiver.port}/brightcove/{job.id}/{token_for('s' * 32, 'brightcove', job.id)}"
    before = rt.redis.zscore(SCHEDULE_KEY, job.dispatch["member"])
    unrelated = requests.post(url, json={"status": "SUCCESS"}, timeout=5)  # not a DI notification
    assert unrelated.status_code == 200
    assert rt.redis.zscore(SCHEDULE_KEY, job.dispatch["member"]) == before  # not worth a poll
    # Brightcove: any DI notification about the job's video (the documented DYNAMIC_RENDITION
    # ones too) makes the poll due; the ingest job's state decides.
    rendition = {"entityType": "DYNAMIC_RENDITION", "status": "SUCCESS", "videoId": "1", "entity": "default/audio64"}
    assert requests.post(url, json=rendition, timeout=5).json() == {"ok": True}
    assert rt.redis.zscore(SCHEDULE_KEY, job.dispatch["member"]) < before - 500
    assert requests.post(url, json=rendition, timeout=5).json() == {"ok": True, "duplicate": True}


def test_forged_and_malformed_notifications_are_refused(rt, receiver) -> None:
    job = _awaiting_job(rt)
    base = f"http://127.0.0.1:{receiver.port}/brightcove/{job.id}"
    assert requests.post(f"{base}/{'0' * 32}", json={}, timeout=5).status_code == 403
    good = f"{base}/{token_for('s' * 32, 'brightcove', job.id)}"
    assert requests.post(good, data=b"not json", timeout=5).status_code == 400
    assert requests.post(f"http://127.0.0.1:{receiver.port}/nope/{job.id}/x", json={}, timeout=5).status_code == 404
    assert requests.get(f"http://127.0.0.1:{receiver.port}/healthz", timeout=5).status_code == 200


def _signed(secret: str, body: dict) -> tuple[bytes, dict[str, str]]:
    import hashlib
    import hmac
    import json

    raw = json.dumps(body).encode()
    return raw, {"Content-Type": "application/json", "X-Ingest-Request-Attempt": "1",
                 "X-Ingest-Signature": hmac.new(secret.encode(), raw, hashlib.sha1).hexdigest()}


def test_ingestio_account_hooks_are_verified_by_signature_and_mapped_to_the_job(rt, receiver) -> None:
    """Ingest.io hooks are per account: the receiver checks the URL token, then the
    X-Ingest-Signature (HMAC-SHA1 of the raw body), then finds the job from the payload."""
    from tasks.callbacks import account_callback_url, derived_secret, remember_ref

    job = _awaiting_job(rt, "ingestio")
    remember_ref(rt.redis, "ingestio", "default", "enc-job-1", job.id)

    url = account_callback_url(rt.settings, "ingestio", "default").replace(
        rt.settings.webhook_url, f"http://127.0.0.1:{receiver.port}")
    secret = derived_secret(rt.settings, "ingestio", "default")
    before = rt.redis.zscore(SCHEDULE_KEY, job.dispatch["member"])
    event = {"event": "jobs.complete", "URL": "https://api.ingest.io/encoding/jobs/enc-job-1",
             "event_object": {"event_id": "e1", "event_name": "jobs.complete", "data": {"id": "enc-job-1", "status": 1}}}

    raw, headers = _signed("not-the-secret", event)
    assert requests.post(url, data=raw, headers=headers, timeout=5).status_code == 403  # forged
    unsigned = {k: v for k, v in headers.items() if k != "X-Ingest-Signature"}
    assert requests.post(url, data=raw, headers=unsigned, timeout=5).status_code == 403
    assert rt.redis.zscore(SCHEDULE_KEY, job.dispatch["member"]) == before
    assert not rt.redis.exists(f"if:webhook:events:{job.id}")

    bad_token = url.rsplit("/", 1)[0] + "/" + "0" * 32
    raw, headers = _signed(secret, event)
    assert requests.post(bad_token, data=raw, headers=headers, timeout=5).status_code == 403

    assert requests.post(url, data=raw, headers=headers, timeout=5).json() == {"ok": True}
    assert rt.redis.zscore(SCHEDULE_KEY, job.dispatch["member"]) < before - 500

    other = {**event, "event_object": {"data": {"id": "someone-elses-job"}}}
    raw, headers = _signed(secret, other)
    assert requests.post(url, data=raw, headers=headers, timeout=5).json()["ignored"] == "no job of this fleet"
    # Brightcove has per-job URLs only.
    assert requests.post(url.replace("/ingestio/", "/brightcove/"), data=raw, headers=headers,
                         timeout=5).status_code == 404


def test_an_oversized_notification_is_refused_whole_never_stored_cut(rt, receiver) -> None:
    from tasks.callbacks import MAX_BODY, webhook_events

    job = _awaiting_job(rt)
    url = f"http://127.0.0.1:{receiver.port}/brightcove/{job.id}/{token_for('s' * 32, 'brightcove', job.id)}"
    big = {"entityType": "TITLE", "videoId": "1", "padding": "x" * MAX_BODY}
    assert requests.post(url, json=big, timeout=5).status_code == 413
    assert webhook_events(rt.redis, job.id) == []
    small = {"entityType": "TITLE", "videoId": "1", "padding": "x" * (MAX_BODY - 200)}
    assert requests.post(url, json=small, timeout=5).status_code == 200
    assert webhook_events(rt.redis, job.id) == [small]  # kept whole
