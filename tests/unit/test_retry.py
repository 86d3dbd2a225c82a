"""The retry policy in one place (tasks.retry): every kind of failure and what follows it."""

from __future__ import annotations

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from tasks.config import ConfigError, Settings
from tasks.errors import PermanentError, Throttled, TransientError, UploadSessionLost
from tasks.jobstore import Job
from tasks.retry import DEFAULT_POLICY, Outcome, outcome_of_status, plan, renew

SETTINGS = Settings.from_env({"INGEST_MAX_ATTEMPTS": "3", "INGEST_BACKOFF_BASE": "1", "INGEST_BACKOFF_CAP": "8",
                              "INGEST_SHORT_WAIT": "2"})


def _job() -> Job:
    return Job(id="j" * 32, provider="gcore", account="default", source="/v/a.mp4", mode="push", title="t",
               idempotency_key="k", upload={"url": "https://u/1", "offset": 10})


def test_statuses_are_classified_by_the_policy_and_its_default() -> None:
    assert outcome_of_status(429, DEFAULT_POLICY) is Outcome.THROTTLED
    assert outcome_of_status(503, DEFAULT_POLICY) is Outcome.TRANSIENT
    assert outcome_of_status(599, DEFAULT_POLICY) is Outcome.TRANSIENT  # any other 5xx
    assert outcome_of_status(404, DEFAULT_POLICY) is Outcome.PERMANENT  # any other 4xx
    assert outcome_of_status(423, {**DEFAULT_POLICY, 423: Outcome.THROTTLED}) is Outcome.THROTTLED


def test_throttling_defers_without_an_attempt_reserved_ones_a_little_early() -> None:
    job = _job()
    reserved = plan(Throttled("budget", retry_after=5, reserved=True), job, "submit", SETTINGS)
    assert (reserved.step, reserved.delay, reserved.waiting, reserved.failure) == ("submit", 4.0, "throttled", None)
    spread = plan(Throttled("429", retry_after=5), job, "submit", SETTINGS)
    assert 5.0 <= spread.delay <= 5.5
    assert job.attempts == {}


def test_transient_errors_back_off_then_fail_after_max_attempts() -> None:
    job = _job()
    first = plan(TransientError("timed out"), job, "upload", SETTINGS)
    assert (first.step, first.waiting, first.event) == ("upload", "retry", "retry")
    assert 0.2 <= first.delay <= 2.2 and job.attempts == {"upload": 1}
    assert plan(TransientError("timed out"), job, "upload", SETTINGS).failure is None
    last = plan(TransientError("timed out"), job, "upload", SETTINGS)
    assert isinstance(last.failure, TransientError) and job.attempts == {"upload": 3}
    renew(job, "upload")  # progress: the budget starts again
    assert plan(TransientError("timed out"), job, "upload", SETTINGS).failure is None


def test_a_lost_upload_session_goes_back_for_a_new_target() -> None:
    job = _job()
    then = plan(UploadSessionLost("404 on HEAD"), job, "upload", SETTINGS)
    assert (then.step, then.waiting, then.event, job.upload) == ("target", "retry", "upload.session_lost", {})


@pytest.mark.parametrize("exc, kind", [
    (PermanentError("no such video", status=404), PermanentError),
    (ConfigError("INGEST_GCORE_CLIENT_ID is not set"), PermanentError),
])
def test_permanent_and_configuration_errors_fail_at_once(exc, kind) -> None:
    job = _job()
    then = plan(exc, job, "create", SETTINGS)
    assert isinstance(then.failure, kind) and str(exc) in str(then.failure) and job.attempts == {}


@pytest.mark.parametrize("exc, text", [
    (SoftTimeLimitExceeded(), "exceeded its time limit"),
    (KeyError("id"), "internal error in step create: KeyError"),
])
def test_time_limits_and_bugs_are_bounded_transient_retries(exc, text) -> None:
    job = _job()
    then = plan(exc, job, "create", SETTINGS)
    assert then.failure is None and job.attempts == {"create": 1} and text in job.error["message"]
