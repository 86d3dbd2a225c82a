"""Completion callbacks (issue 14, item 3), through real workers, the scheduler and the sandbox:
the signed public record is POSTed on each terminal state; a failing endpoint is tried again
with backoff through the schedule until the retry window closes; the state is on the record."""

from __future__ import annotations

import json
import time

import pytest

from ingest_fleet import Client, IntentRefused, sign, verify_signature
from tests.conftest import MEDIA, SANDBOX_URL, cli, make_source
from tests.receiver import Receiver

pytestmark = pytest.mark.integration

SECRET = "test-callback-secret-5d4c3b2a1f0e"


@pytest.fixture
def receiver():
    r = Receiver("/ingest-done")
    yield r
    r.close()


def _done(client: Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while ((job := client.status(job_id)).get("callback") or {}).get("state") in (None, "pending"):
        assert time.monotonic() < deadline, job.get("callback")
        time.sleep(0.1)
    return job


def test_a_ready_and_a_failed_job_are_posted_signed_after_a_failing_endpoint(start_fleet, sandbox, receiver) -> None:
    start_fleet(workers=1, env={"INGEST_CALLBACK_SECRET": SECRET})
    receiver.fail_first = 2  # the application is down for a moment
    client = Client()
    media = make_source("callback.mp4", 200_000, folder=MEDIA)
    ok = client.submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{media.name}",
                        "callback_url": receiver.url, "title": "called back"})
    job = _done(client, ok)
    assert job["state"] == "ready" and job["callback"]["state"] == "delivered", job["callback"]
    assert job["callback"]["attempts"] == 3 and job["callback"]["for"] == "ready"
    posts = [r for r in receiver.received if r["status"] == 200]
    [post] = posts
    assert verify_signature(post["body"], post["headers"]["X-Ingest-Fleet-Signature"], SECRET)
    assert not verify_signature(post["body"] + b" ", post["headers"]["X-Ingest-Fleet-Signature"], SECRET)
    assert not verify_signature(post["body"], post["headers"]["X-Ingest-Fleet-Signature"], "another-secret-123456")
    sent = json.loads(post["body"])
    assert (sent["id"], sent["state"], sent["title"]) == (ok, "ready", "called back")
    assert "source_sealed" not in sent and "intent_digest" not in sent

    failing = cli("submit", "--provider", "gcore", "--source", f"{SANDBOX_URL}/media/missing.mp4",
                  "--callback", receiver.url, "--json")
    assert failing.returncode == 0, failing.stderr
    failed = _done(client, json.loads(failing.stdout)["id"])
    assert failed["state"] == "failed" and failed["callback"]["state"] == "delivered"
    assert json.loads(receiver.received[-1]["body"])["state"] == "failed"


def test_an_endpoint_that_never_answers_2xx_is_given_up_after_the_window(start_fleet, sandbox, receiver) -> None:
    start_fleet(workers=1, env={"INGEST_CALLBACK_SECRET": SECRET, "INGEST_CALLBACK_RETRY_SECONDS": "3"})
    receiver.fail_first = 10_000
    client = Client()
    media = make_source("callback-down.mp4", 200_000, folder=MEDIA)
    job = _done(client, client.submit({"provider": "ittybit", "source": f"{SANDBOX_URL}/media/{media.name}",
                                       "callback_url": receiver.url}))
    assert job["state"] == "ready" and job["callback"]["state"] == "failed", job["callback"]
    assert job["callback"]["error"] == "HTTP 500" and 2 <= job["callback"]["attempts"] <= 12
    assert len(receiver.received) == job["callback"]["attempts"]  # every try, and no more after


def test_callbacks_need_the_secret_and_no_credentials_in_the_url(start_fleet, sandbox, rt) -> None:
    start_fleet(workers=1)  # its workers have no INGEST_CALLBACK_SECRET
    client = Client()
    with pytest.raises(IntentRefused, match="INGEST_CALLBACK_SECRET"):
        client.submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/a.mp4", "callback_url": "https://a/b"})
    with pytest.raises(IntentRefused, match="credentials"):
        client.submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/a.mp4",
                       "callback_url": "https://a/b?token=abc123"})
    assert rt.redis.zcard("if:jobs") == 0


def test_the_signature_helper() -> None:
    body = b'{"id": "x"}'
    header = sign(body, SECRET, at=int(time.time()) - 10)
    assert verify_signature(body, header, SECRET)
    assert not verify_signature(body, sign(body, SECRET, at=int(time.time()) - 400), SECRET)  # too old
    assert verify_signature(body, sign(body, SECRET, at=int(time.time()) - 400), SECRET, tolerance=600)
    for bad in ("", "t=abc,v1=00", "v1=00", "t=1", None):
        assert not verify_signature(body, bad, SECRET)
