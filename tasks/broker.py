"""How the fleet talks to its broker: the Celery configuration every process uses (the
worker app in ``workers.app``), and the producer that sends a step's message.

Settings follow ARCHITECTURE.md and the checks in shared/design/celery-redis-flower.md. The
domain only *sends* messages (``tasks.dispatch.publish``): it builds a producer-only Celery app
from the same configuration, so it never imports the worker process's app.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from tasks.config import Settings
from tasks.queues import PRIORITY_STEPS, kombu_queues

APP_NAME = "ingest_fleet"


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings of every process of the fleet (broker, delivery, worker limits)."""
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        # Sweep for unacked messages of dead workers every ~30 s instead of kombu's ~100 s.
        "unacked_restore_interval": 10,
        "unacked_restore_throttle": max(1, min(3, settings.visibility_timeout // 30)),
        # The sweep takes a lock that a worker killed mid-sweep keeps until it expires (kombu's
        # default: 300 s, in which no dead worker's message comes back). A sweep takes
        # milliseconds, and two at once are harmless (each restore is a WATCHed transaction).
        "unacked_mutex_expire": 30,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 25,
        "global_keyprefix": "",
        # Intent priority (high/normal/low) rides on kombu's Redis priority lists; queues of one
        # priority are served round-robin, which is what keeps accounts fair to each other.
        "priority_steps": list(PRIORITY_STEPS),
        "queue_order_strategy": "round_robin",
    }
    return dict(
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": settings.visibility_timeout},
        visibility_timeout=settings.visibility_timeout,
        broker_connection_retry_on_startup=True,
        broker_pool_acquire_timeout=30,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_queues=kombu_queues(settings),
        task_default_queue="ingest.default",
        task_acks_late=True,
        task_acks_on_failure_or_timeout=True,
        task_retry_on_worker_lost=True,  # bounded by each task's max_retries
        task_default_retry_delay=2,      # a short ETA, far below the visibility timeout
        task_soft_time_limit=settings.slice_seconds + 30,
        task_time_limit=settings.slice_seconds + 60,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # SIGTERM is a warm shutdown: running tasks finish, and a slice finishes early (workers.health).
        # The soft shutdown bounds a cold one (SIGQUIT, or a second SIGTERM): the running slice
        # gets this long, then its message goes back to the queue at once.
        worker_soft_shutdown_timeout=settings.soft_shutdown_timeout,
        worker_enable_soft_shutdown_on_idle=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_max_memory_per_child=400_000,  # KiB; a slice streams, so this is a leak guard only
    )


def producer_app(settings: Settings) -> Celery:
    """A Celery app that only sends messages, configured as the workers' own."""
    app = Celery(APP_NAME, broker=settings.redis_url, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
