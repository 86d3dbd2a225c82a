"""Queues by provider and by kind of work (ARCHITECTURE.md, principle 6).

API steps, upload slices and polls of each provider go to their own queue, e.g.
``gcore.api``, ``gcore.upload``, ``gcore.poll``, so a saturated provider or a long upload
never starves the others and each kind scales on its own.

A dispatch is named by its Celery task id ``<job id>.<seq>.<step>``: the job record keeps
the id of the one dispatch that may drive it next, so a duplicate or stale message is
recognised and dropped (see tasks.steps), and Flower shows which job and step a task is.
"""

from __future__ import annotations

from kombu import Queue

from workers.config import PROVIDER_DEFAULTS

PROVIDERS = tuple(PROVIDER_DEFAULTS)
KINDS = ("api", "upload", "poll")

STEP_KIND = {"create": "api", "target": "api", "upload": "upload", "submit": "api", "await": "poll"}
STEP_TASK = {
    "create": "ingest.create_entity",
    "target": "ingest.obtain_upload_target",
    "upload": "ingest.upload_slice",
    "submit": "ingest.submit_ingest",
    "await": "ingest.await_status",
}


def queue_for(provider: str, step: str) -> str:
    return f"{provider}.{STEP_KIND[step]}"


def all_queues() -> list[str]:
    return [f"{p}.{k}" for p in PROVIDERS for k in KINDS]


def queues_of_kind(kind: str) -> list[str]:
    return [f"{p}.{kind}" for p in PROVIDERS]


def kombu_queues() -> list[Queue]:
    return [Queue(name, routing_key=name) for name in all_queues()]


def task_id(job_id: str, seq: int, step: str) -> str:
    return f"{job_id}.{seq}.{step}"


def parse_task_id(tid: str) -> tuple[str, int, str]:
    job_id, seq, step = tid.split(".")
    return job_id, int(seq), step


def member(queue: str, tid: str) -> str:
    """The schedule's entry for one dispatch: where to publish it and under which id."""
    return f"{queue} {tid}"


def parse_member(m: str) -> tuple[str, str]:
    queue, tid = m.split(" ", 1)
    return queue, tid
