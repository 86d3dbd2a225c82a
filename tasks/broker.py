"""How the fleet talks to its broker: the Celery configuration every process uses (the
worker app in ``workers.app``), and the producer that sends a step's message.

Settings follow ARCHITECTURE.md and the checks in shared/design/celery-redis-flower.md. The
domain only *sends* messages (``tasks.dispatch.publish``): it builds a producer-only Celery app
from the same configuration, so it never imports the worker process's app.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from celery import Celery

from ingest_fleet import redis_url
from tasks.config import ConfigError, Settings
from tasks.queues import PRIORITY_STEPS, kombu_queues

APP_NAME = "ingest_fleet"


#: ``ssl_cert_reqs`` in a ``rediss://`` URL's query, as redis-py and kombu spell it.
_CERT_REQS = {"required": ssl.CERT_REQUIRED, "cert_required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
              "cert_optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE, "cert_none": ssl.CERT_NONE}


def broker_tls(url: str) -> dict[str, Any] | None:
    """TLS options for a ``rediss://`` broker URL, verifying the server's certificate unless the
    URL's query opts out (``?ssl_cert_reqs=none``); ``ssl_ca_certs``, ``ssl_certfile`` and
    ``ssl_keyfile`` in the query are passed on. The job store's redis-py client reads the same
    query and verifies by default too. Without this, kombu falls back to CERT_NONE (issue 13)."""
    parts = urlsplit(url)
    if parts.scheme != "rediss":
        return None
    query = dict(parse_qsl(parts.query))
    reqs = query.get("ssl_cert_reqs", "required").lower()
    if reqs not in _CERT_REQS:
        raise ConfigError(f"REDIS_URL: ssl_cert_reqs={reqs!r} is not one of required, optional, none")
    options: dict[str, Any] = {"ssl_cert_reqs": _CERT_REQS[reqs]}
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if query.get(name):
            options[name] = query[name]
    return options


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
    tls = broker_tls(settings.redis_url)
    url, sentinel = redis_url.broker(settings.redis_url)
    transport.update(sentinel)
    return dict(
        broker_url=url,
        **({"broker_use_ssl": tls} if tls else {}),
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
        task_acks_on_failure=True,
        # A task killed by the hard time limit goes back to its queue (Celery would ack it and
        # the job would wait for reconcile); a dispatch killed every time fails after
        # tasks.steps.MAX_STARTS runs.
        task_acks_on_timeout=False,
        # bounded by each task's max_retries, sent again after its default_retry_delay (workers.steps)
        task_retry_on_worker_lost=True,
        # A step stops itself after a slice; the soft limit (SoftTimeLimitExceeded, which the step
        # runner settles) comes a grace later, the hard one (the pool process is killed) after
        # a second grace, for a step stuck where no signal reaches it.
        task_soft_time_limit=settings.slice_seconds + settings.step_grace,
        task_time_limit=settings.slice_seconds + 2 * settings.step_grace,
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
    app = Celery(APP_NAME, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
