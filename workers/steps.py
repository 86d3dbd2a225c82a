"""The steps of the chain registered as Celery tasks of the worker app: each takes a job id
and hands it, with its own task id, to the step runner (``tasks.steps.run``).

The step runner settles every error of a step itself (the job's record says what happened).
What escapes it (Redis gone mid-step, a bug) fails the task: the worker logs the whole
traceback, scrubbed, and Celery (so Flower) gets only :class:`StepCrashed` with the scrubbed
message, never the original exception, its chain or its frames' text (issue 13).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tasks import completion, steps
from tasks.logs import get_logger, scrub
from tasks.queues import STEP_TASK
from workers.app import app

# default_retry_delay: a pool process killed mid-step (the OOM killer) has its task sent again
# by the worker (task_retry_on_worker_lost) after this many seconds - a short ETA, far below the
# visibility timeout. It is a task attribute only (Celery has no setting for it): left at its
# default, 180 s, the job waited three minutes and each visibility timeout meanwhile restored
# another copy of the held ETA message.
_TASK_OPTIONS = dict(bind=True, max_retries=3, acks_late=True, ignore_result=True, default_retry_delay=2)
log = get_logger("ingest.steps")


class StepCrashed(Exception):
    """A step task failed outside the step runner's own handling; the message is scrubbed."""


@contextmanager
def _contained() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        log.exception("task.crashed")
        raise StepCrashed(scrub(f"{type(exc).__name__}: {exc}")) from None


@app.task(name=STEP_TASK["create"], **_TASK_OPTIONS)
def create_entity(self: Any, job_id: str) -> None:
    """Find or create the provider's entity for the job."""
    with _contained():
        steps.run(self.request.id, job_id, "create")


@app.task(name=STEP_TASK["target"], **_TASK_OPTIONS)
def obtain_upload_target(self: Any, job_id: str) -> None:
    """Open an upload session at the provider."""
    with _contained():
        steps.run(self.request.id, job_id, "target")


@app.task(name=STEP_TASK["upload"], **_TASK_OPTIONS)
def upload_slice(self: Any, job_id: str) -> None:
    """Send chunks for at most one slice, checkpointing after each."""
    with _contained():
        steps.run(self.request.id, job_id, "upload")


@app.task(name=STEP_TASK["submit"], **_TASK_OPTIONS)
def submit_ingest(self: Any, job_id: str) -> None:
    """Ask the provider to ingest the uploaded source (or to pull the URL)."""
    with _contained():
        steps.run(self.request.id, job_id, "submit")


@app.task(name=STEP_TASK["await"], **_TASK_OPTIONS)
def await_status(self: Any, job_id: str) -> None:
    """Poll the provider once; schedule the next poll with backoff unless terminal."""
    with _contained():
        steps.run(self.request.id, job_id, "await")


@app.task(name=STEP_TASK["callback"], **_TASK_OPTIONS)
def deliver_callback(self: Any, job_id: str) -> None:
    """POST the job's signed record to its callback URL; a failure is tried again later."""
    with _contained():
        completion.deliver(self.request.id, job_id)


__all__ = ["await_status", "create_entity", "deliver_callback", "obtain_upload_target", "submit_ingest", "upload_slice"]
