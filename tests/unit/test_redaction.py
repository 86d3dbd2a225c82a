"""Secrets never leave a process in clear (issue 13, item 9): not in a log line's traceback,
not in a job record's error or history, not in a failed task's exception (what Flower shows)."""

from __future__ import annotations

import subprocess
import sys
import traceback

import pytest

from tasks.jobstore import Job
from tasks.logs import register_secret

SECRET = "sk-live-Zq8vW3nT5yR1"


def test_a_logged_traceback_is_scrubbed() -> None:
    code = f"""
import logging
from tasks.logs import configure, get_logger, register_secret
configure()
register_secret({SECRET!r})
try:
    raise RuntimeError("provider said: bad token {SECRET}")
except RuntimeError:
    get_logger().exception("step.crashed")
    logging.getLogger("celery.worker").exception("stdlib too")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "RuntimeError" in done.stderr and "***" in done.stderr
    assert SECRET not in done.stderr


def test_a_job_record_keeps_no_registered_secret() -> None:
    register_secret(SECRET)
    job = Job(id="j1", provider="gcore", account="default", source="https://h/a.mp4", mode="pull", title="t",
              idempotency_key="k")
    job.error = {"step": "submit", "message": f"HTTP 401: token {SECRET} is not valid"}
    job.note("http.error", detail=[f"Authorization: Bearer {SECRET}"])
    raw = job.to_json()
    assert SECRET not in raw and "token *** is not valid" in raw


def test_a_failed_task_shows_celery_only_a_scrubbed_message(monkeypatch) -> None:
    from tasks import steps
    from workers.steps import StepCrashed, submit_ingest

    register_secret(SECRET)

    def crash(*_: object) -> None:
        try:
            raise ConnectionError(f"lost redis://:{SECRET}@redis:6379/0")
        except ConnectionError as inner:
            raise RuntimeError(f"while saving: {inner}") from inner

    monkeypatch.setattr(steps, "run", crash)
    with pytest.raises(StepCrashed) as failure:
        submit_ingest("j1")
    shown = "".join(traceback.format_exception(failure.value))  # what Celery sends in task-failed
    assert SECRET not in shown and "RuntimeError: while saving: lost redis://:***@redis" in shown
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


@pytest.mark.parametrize(("url", "shown", "secrets"), [
    ("https://u:p4ss@cdn.example.com/a.mp4?x=1", "https://u:***@cdn.example.com/a.mp4?x=1", ["p4ss"]),
    ("sftp://bob:pw%40rd@h/x.mp4", "sftp://bob:***@h/x.mp4", ["pw%40rd"]),
    ("https://tok123@h/a.mp4", "https://***@h/a.mp4", ["tok123"]),
    ("https://h/a.mp4?se=2026&sig=abc%2B%3D&sp=r", "https://h/a.mp4?se=2026&sig=***&sp=r", ["abc+="]),
    ("https://h/a.mp4?X-Goog-Signature=f00d&X-Goog-Date=1", "https://h/a.mp4?X-Goog-Signature=***&X-Goog-Date=1",
     ["f00d"]),
    ("https://cdn.example.com/a.mp4?v=2", "https://cdn.example.com/a.mp4?v=2", []),
    ("https://h/a.mp4?AWSAccessKeyId=AKIA1&Signature=s1&Expires=9", "https://h/a.mp4?AWSAccessKeyId=***&Signature=***&Expires=9",
     ["AKIA1", "s1"]),
    ("https://h/a.mp4?api_key=k9&X-Amz-Security-Token=t9", "https://h/a.mp4?api_key=***&X-Amz-Security-Token=***",
     ["k9", "t9"]),
    ("https://h/a.mp4?design=blue&author=bo&keyframe=3", "https://h/a.mp4?design=blue&author=bo&keyframe=3", []),
])
def test_credentials_in_a_url_are_found_and_masked(url: str, shown: str, secrets: list[str]) -> None:
    from ingest_fleet.urls import redacted, secrets_in

    assert redacted(url) == shown
    assert secrets_in(url) == secrets


def test_the_secrets_of_past_jobs_are_bounded_and_the_process_own_stay() -> None:
    """A worker that ran many jobs neither keeps every job's secrets nor scans them all."""
    from tasks import logs

    register_secret("process-credential-Zq81", pinned=True)
    in_use = "oauth-token-in-use-Hq2"
    for i in range(logs.RECENT_SECRETS * 3):
        register_secret(f"upload-token-of-job-{i:05d}")
        if i % 10 == 0:
            register_secret(in_use)  # a secret used again is kept, as the newest
    assert len(logs._SECRETS) <= logs.RECENT_SECRETS + len(logs._PINNED)
    masked = logs.scrub("process-credential-Zq81 oauth-token-in-use-Hq2 upload-token-of-job-00191")
    assert masked == "*** *** ***"
    assert logs.scrub("upload-token-of-job-00000") == "upload-token-of-job-00000"  # long gone from this process
