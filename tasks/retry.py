"""The fleet's one retry policy: how an answer is classified, and what a step's failure leads to.

* :class:`Outcome` - what an error answer is: ``PERMANENT`` (fail the job with the provider's
  message), ``TRANSIENT`` (back off and try the step again, a bounded number of times) or
  ``THROTTLED`` (defer without counting an attempt). :data:`DEFAULT_POLICY` maps HTTP statuses
  to outcomes; an adapter refines it (``Adapter.retry_policy`` / ``Adapter.classify``).
* :func:`plan` - what follows a failed step run: defer, retry after a backoff, go back to
  obtain a new upload target, or fail. The step runner (tasks.steps) applies the plan; this
  module never writes anything.
* Attempts are counted per step; progress (bytes acknowledged by the provider) renews the
  step's budget (:func:`renew`, through ``StepContext.progress``).

Example::

    >>> plan(TransientError("timed out"), job, "upload", settings)
    Plan(step='upload', delay=1.7, waiting='retry', failure=None, event='retry', detail=(...))
"""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery.exceptions import SoftTimeLimitExceeded

from tasks.errors import ConfigError, PermanentError, StepError, Throttled, TransientError, UploadSessionLost

if TYPE_CHECKING:
    from tasks.jobstore import Job


class Outcome(enum.StrEnum):
    """How the fleet treats an error answer."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    THROTTLED = "throttled"


#: Which answers are transient or throttling; any other 4xx is permanent, any other 5xx
#: transient (:func:`outcome_of_status`).
DEFAULT_POLICY: dict[int, Outcome] = {408: Outcome.TRANSIENT, 425: Outcome.TRANSIENT, 429: Outcome.THROTTLED,
                                      500: Outcome.TRANSIENT, 502: Outcome.TRANSIENT, 503: Outcome.TRANSIENT,
                                      504: Outcome.TRANSIENT}


def outcome_of_status(status: int, policy: dict[int, Outcome]) -> Outcome:
    """The outcome of an error status under ``policy`` (the default policy refined by an adapter)."""
    return policy.get(status) or (Outcome.TRANSIENT if status >= 500 else Outcome.PERMANENT)


def backoff(settings: Any, attempt: int) -> float:
    """Exponential backoff with full jitter (AWS architecture blog)."""
    return random.uniform(0, min(settings.backoff_cap, settings.backoff_base * 2 ** attempt)) + 0.2


def renew(job: Job, step: str) -> None:
    """Progress was made: the step's attempts start again from zero."""
    job.attempts.pop(step, None)


@dataclass(frozen=True)
class Plan:
    """What follows a failed run of a step: run ``step`` again after ``delay`` seconds (with
    ``waiting`` as the reason), or fail the job with ``failure``."""

    step: str
    delay: float = 0.0
    waiting: str | None = None
    failure: StepError | None = None
    event: str = ""
    detail: tuple[tuple[str, Any], ...] = ()


def plan(exc: BaseException, job: Job, step: str, settings: Any) -> Plan:
    """The one place that decides what a step's failure leads to (counting attempts on ``job``)."""
    if isinstance(exc, SoftTimeLimitExceeded):
        exc = TransientError(f"step {step} exceeded its time limit")
    if isinstance(exc, Throttled):
        if exc.reserved:
            # The token is this job's at exactly that time: come back a little early (a worker
            # may be busy then) and sleep the rest within INGEST_SHORT_WAIT.
            delay = max(0.0, exc.retry_after - min(settings.short_wait / 2, 1.0))
        else:  # an unreserved wait (a cooldown): spread the comebacks
            delay = exc.retry_after + random.uniform(0, 0.5)
        return Plan(step, delay, "throttled", event="throttled",
                    detail=(("step", step), ("retry_in", round(delay, 2)), ("reserved", exc.reserved)))
    if isinstance(exc, ConfigError):  # a setting the step needs is missing or malformed: never transient
        return Plan(step, failure=PermanentError(str(exc), provider=job.provider))
    if isinstance(exc, PermanentError):
        return Plan(step, failure=exc)
    if not isinstance(exc, StepError):  # a bug or an unexpected answer: bounded retries, then fail loudly
        exc = TransientError(f"internal error in step {step}: {type(exc).__name__}: {exc}")
    assert isinstance(exc, TransientError)
    if not _count_attempt(job, step, exc, settings):
        return Plan(step, failure=exc)
    delay = backoff(settings, job.attempts[step])
    if isinstance(exc, UploadSessionLost):
        job.upload = {}
        return Plan("target", delay, "retry", event="upload.session_lost", detail=(("error", str(exc)),))
    return Plan(step, delay, "retry", event="retry", detail=(
        ("step", step), ("attempt", job.attempts[step]), ("retry_in", round(delay, 2)), ("error", str(exc))))


def _count_attempt(job: Job, step: str, exc: StepError, settings: Any) -> bool:
    """Count a failed attempt of ``step``; True while the step may be tried again."""
    job.attempts[step] = job.attempts.get(step, 0) + 1
    job.error = {"step": step, "message": str(exc), "status": exc.status, "kind": Outcome.TRANSIENT.value,
                 "at": time.time()}
    return bool(job.attempts[step] < settings.max_attempts)
