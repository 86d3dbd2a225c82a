"""The webhook receiver over a real socket: only per-job tokens are accepted, a notification
makes the job's pending poll due now, and duplicates are recognised."""

from __future__ import annotations

import pytest
import requests

from tasks.jobstore import SCHEDULE_KEY, Job
from workers.webhooks import WebhookReceiver, token_for


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


def _awaiting_job(rt) -> Job:
    job = Job(id="a" * 32, provider="brightcove", account="default", source="https://h/a.mp4", mode="pull",
              title="t", idempotency_key="hook-test", state="processing", step="await",
              dispatch={"task_id": f"{'a' * 32}.3.await", "member": f"brightcove.poll {'a' * 32}.3.await 3"})
    rt.store.create(job, dispatch_member="unused", grace=30)
    rt.redis.zrem(SCHEDULE_KEY, "unused")
    rt.store.schedule(job.dispatch["member"], 600)  # the next poll, far away
    return job


def test_a_notification_makes_the_pending_poll_due_now(rt, receiver) -> None:
    job = _awaiting_job(rt)
    url = f"http://127.0.0.1:{receiver.port}/brightcove/{job.id}/{token_for('s' * 32, 'brightcove', job.id)}"
    before = rt.redis.zscore(SCHEDULE_KEY, job.dispatch["member"])
    rendition = requests.post(url, json={"entityType": "DYNAMIC_RENDITION", "status": "SUCCESS"}, timeout=5)
    assert rendition.status_code == 200
    assert rt.redis.zscore(SCHEDULE_KEY, job.dispatch["member"]) == before  # not worth a poll
    title = {"entityType": "TITLE", "status": "SUCCESS", "videoId": "1"}
    assert requests.post(url, json=title, timeout=5).json() == {"ok": True}
    assert rt.redis.zscore(SCHEDULE_KEY, job.dispatch["member"]) < before - 500
    assert requests.post(url, json=title, timeout=5).json() == {"ok": True, "duplicate": True}


def test_forged_and_malformed_notifications_are_refused(rt, receiver) -> None:
    job = _awaiting_job(rt)
    base = f"http://127.0.0.1:{receiver.port}/brightcove/{job.id}"
    assert requests.post(f"{base}/{'0' * 32}", json={}, timeout=5).status_code == 403
    good = f"{base}/{token_for('s' * 32, 'brightcove', job.id)}"
    assert requests.post(good, data=b"not json", timeout=5).status_code == 400
    assert requests.post(f"http://127.0.0.1:{receiver.port}/nope/{job.id}/x", json={}, timeout=5).status_code == 404
    assert requests.get(f"http://127.0.0.1:{receiver.port}/healthz", timeout=5).status_code == 200
