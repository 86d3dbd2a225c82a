"""The steps of the chain registered as Celery tasks of the worker app: each takes a job id
and hands it, with its own task id, to the step runner (``tasks.steps.run``)."""

from __future__ import annotations

from typing import Any

from tasks import steps
from tasks.queues import STEP_TASK
from workers.app import app

_TASK_OPTIONS = dict(bind=True, max_retries=3, acks_late=True, ignore_result=True)


@app.task(name=STEP_TASK["create"], **_TASK_OPTIONS)
def create_entity(self: Any, job_id: str) -> None:
    """Find or create the provider's entity for the job."""
    steps.run(self.request.id, job_id, "create")


@app.task(name=STEP_TASK["target"], **_TASK_OPTIONS)
def obtain_upload_target(self: Any, job_id: str) -> None:
    """Open an upload session at the provider."""
    steps.run(self.request.id, job_id, "target")


@app.task(name=STEP_TASK["upload"], **_TASK_OPTIONS)
def upload_slice(self: Any, job_id: str) -> None:
    """Send chunks for at most one slice, checkpointing after each."""
    steps.run(self.request.id, job_id, "upload")


@app.task(name=STEP_TASK["submit"], **_TASK_OPTIONS)
def submit_ingest(self: Any, job_id: str) -> None:
    """Ask the provider to ingest the uploaded source (or to pull the URL)."""
    steps.run(self.request.id, job_id, "submit")


@app.task(name=STEP_TASK["await"], **_TASK_OPTIONS)
def await_status(self: Any, job_id: str) -> None:
    """Poll the provider once; schedule the next poll with backoff unless terminal."""
    steps.run(self.request.id, job_id, "await")


__all__ = ["await_status", "create_entity", "obtain_upload_target", "submit_ingest", "upload_slice"]
