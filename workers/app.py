"""The Celery application of the fleet: ``celery -A workers.app worker``.

Settings follow ARCHITECTURE.md and the checks in shared/design/celery-redis-flower.md:

* every task is short (one upload slice at most), so one short ``visibility_timeout``
  (minutes, set identically for broker and results) recovers a killed worker's message fast;
* ``acks_late`` + prefetch disabled: a worker holds only what it runs, a killed one loses
  nothing; a lost pool child is retried a bounded number of times (``max_retries``);
* no ETA or countdown messages: waits live in the Redis schedule (workers.scheduler),
  because Redis redelivers ETA messages older than the visibility timeout;
* task events on (and ``task-sent`` from producers) for Flower;
* SIGTERM is a warm shutdown, and the pool processes are told (workers.health), so a running
  slice ends at its next chunk, checkpoints and hands the job on; the soft shutdown
  (``INGEST_SOFT_SHUTDOWN_TIMEOUT``) bounds a cold one; a heartbeat file feeds the liveness probe.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
import structlog
from celery import Celery
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)

from tasks import logs as fleet_logging
from tasks import served
from tasks.broker import APP_NAME, celery_config
from tasks.config import Settings
from tasks.queues import parse_task_id
from tasks.runtime import runtime
from workers import health

app = Celery(APP_NAME, include=["workers.steps"])


def _configuration() -> dict[str, Any]:
    # Read from the environment when Celery first needs its configuration (a worker, Flower or
    # a publish starting), never at import: importing the app builds no settings.
    settings = Settings.from_env()
    return celery_config(settings)  # with broker_url


app.add_defaults(_configuration)



# Worker logs are the fleet's JSON lines (Celery is told not to set up its own), with the
# running task's id, job and step bound to every line.
@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    fleet_logging.configure()


@task_prerun.connect
def _bind(task_id: str | None = None, task: Any = None, args: Any = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    context = {"task_id": task_id, "task": getattr(task, "name", None)}
    try:
        context["job_id"], _seq, context["step"] = parse_task_id(task_id or "")
    except ValueError:
        if args:
            context["job_id"] = args[0]
    structlog.contextvars.bind_contextvars(**context)


@task_postrun.connect
def _unbind(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


@worker_init.connect
def _worker_started(**_: object) -> None:
    health.start_heartbeat()
    threading.Thread(target=_publish_served, name="served", daemon=True).start()


#: This worker's node name and the queues it consumes (known once it is ready).
_CONSUMING: dict[str, list[str]] = {}


def _publish_served() -> None:
    """Tell the fleet which accounts this worker serves and which queues it consumes
    (tasks.served), now and every ``served.REFRESH`` seconds, so processes without provider
    credentials know them."""
    while True:
        try:
            served.publish(runtime())
            for name, queues in list(_CONSUMING.items()):
                served.publish_worker(runtime(), name, queues)
        except redis.RedisError as exc:  # Redis away: the next round tries again
            fleet_logging.get_logger("ingest.worker").warning("served.publish_failed", error=str(exc))
        time.sleep(served.REFRESH)


@worker_ready.connect
def _consuming(sender: Any = None, **_: object) -> None:
    if sender is None:
        return
    _CONSUMING[sender.hostname] = sorted(sender.app.amqp.queues.consume_from)
    try:
        served.publish_worker(runtime(), sender.hostname, _CONSUMING[sender.hostname])
    except redis.RedisError:
        pass  # the next round publishes it


@worker_process_init.connect
def _pool_process_started(**_: object) -> None:
    health.install_child_handler()


@worker_shutting_down.connect
def _worker_stopping(**_: object) -> None:
    health.tell_children()
    for name in list(_CONSUMING):
        try:
            served.forget_worker(runtime(), name)
        except redis.RedisError:
            pass
