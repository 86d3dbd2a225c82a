"""Queues by provider, kind of work and account (ARCHITECTURE.md, principle 6).

API steps, upload slices and polls of each provider go to their own queue, e.g.
``gcore.api``, ``gcore.upload``, ``gcore.poll``, so a saturated provider or a long upload
never starves the others and each kind scales on its own. A named account gets queues of
its own (``gcore.api.teamb``): kombu's Redis transport serves the queues a worker consumes
round-robin, so one account's backlog cannot starve another's jobs on the same provider.
Within that, an intent's priority is the message priority (kombu's Redis priority lists,
highest first across all of a worker's queues).

A dispatch is named by its Celery task id ``<job id>.<seq>.<step>``: the job record keeps
the id of the one dispatch that may drive it next, so a duplicate or stale message is
recognised and dropped (see tasks.steps), and Flower shows which job and step a task is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from kombu.entity import Queue

from ingest_fleet.wire import PRIORITY as PRIORITY
from ingest_fleet.wire import STEP_KIND as STEP_KIND
from ingest_fleet.wire import member as member  # re-exported: the fleet names dispatches here
from ingest_fleet.wire import queue_for as queue_for
from ingest_fleet.wire import task_id as task_id
from tasks.config import Settings
from tasks.providers import REGISTRY

if TYPE_CHECKING:
    import redis

PROVIDERS = tuple(REGISTRY)
KINDS = ("api", "upload", "poll")

STEP_TASK = {
    "create": "ingest.create_entity",
    "target": "ingest.obtain_upload_target",
    "upload": "ingest.upload_slice",
    "submit": "ingest.submit_ingest",
    "await": "ingest.await_status",
    "callback": "ingest.deliver_callback",
}

#: kombu's Redis transport keeps one list per step: queue, queue\x06\x163, ...
PRIORITY_STEPS = (0, 3, 6, 9)
_SEP = "\x06\x16"


def _accounts(settings: Settings | None, provider: str) -> list[str]:
    if settings is None:
        settings = Settings.from_env()
    return sorted({"default", *settings.accounts_of(provider)})


def queues_of_kind(kind: str, settings: Settings | None = None) -> list[str]:
    return [queue_for(p, next(s for s, k in STEP_KIND.items() if k == kind), a)
            for p in PROVIDERS for a in _accounts(settings, p)]


def queues_of_accounts(kind: str, accounts: Iterable[tuple[str, str]]) -> list[str]:
    """The queues of ``kind`` of every provider's default account and of ``accounts``."""
    step = next(s for s, k in STEP_KIND.items() if k == kind)
    pairs = {(p, "default") for p in PROVIDERS} | set(accounts)
    return [queue_for(p, step, a) for p, a in sorted(pairs)]


def all_queues(settings: Settings | None = None) -> list[str]:
    return [q for kind in KINDS for q in queues_of_kind(kind, settings)]


def kombu_queues(settings: Settings | None = None) -> list[Queue]:
    return [Queue(name, routing_key=name) for name in all_queues(settings)]


def priority_lists(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s messages, one per priority step (kombu's names)."""
    return [queue if step == 0 else f"{queue}{_SEP}{step}" for step in PRIORITY_STEPS]


def queue_length(client: redis.Redis, queue: str) -> int:
    """Messages waiting in ``queue`` (all its priority lists; not those held by workers)."""
    pipe = client.pipeline(transaction=False)
    for name in priority_lists(queue):
        pipe.llen(name)
    return sum(pipe.execute())


def parse_task_id(tid: str) -> tuple[str, int, str]:
    job_id, seq, step = tid.split(".")
    return job_id, int(seq), step


def parse_member(m: str) -> tuple[str, str, int]:
    queue, tid, *rest = m.split(" ")
    return queue, tid, int(rest[0]) if rest else PRIORITY["normal"]
