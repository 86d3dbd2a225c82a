"""The reference for the budget benchmark: Celery's own per-task ``rate_limit`` on the same Redis,
with the same delivery settings as the fleet (acks_late, no prefetch, events on).

One task, ``ratelimited.call``, declared ``rate_limit="10/s"``, makes one call to the sandbox's
Gcore API and nothing else (no retry on a 429: the sandbox log counts what arrived). Celery
enforces ``rate_limit`` per worker node, so N nodes send up to N x 10 requests a second.
"""

from __future__ import annotations

import os

import redis
import requests
from celery import Celery

from bench.common import SANDBOX_KEY

RATE_LIMIT = "10/s"

app = Celery("celery_rate_limit", broker=os.environ["REDIS_URL"])
app.conf.update(
    task_ignore_result=True, task_acks_late=True, worker_prefetch_multiplier=1, worker_disable_prefetch=True,
    worker_send_task_events=True, task_send_sent_event=True, task_default_queue="ratelimited",
    worker_hijack_root_logger=False,
)
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])
_session = requests.Session()
_session.headers["Authorization"] = f"APIKey {SANDBOX_KEY}"


@app.task(name="ratelimited.call", rate_limit=RATE_LIMIT)
def call() -> None:
    try:
        status = _session.get(f"{os.environ['INGEST_GCORE_BASE_URL']}/streaming/videos", params={"per_page": 1},
                              timeout=(5, 30)).status_code
    except requests.RequestException:
        status = 0
    _counter.incr("bench:ratelimited:done")
    _counter.hincrby("bench:ratelimited:status", str(status))


def send() -> None:
    call.apply_async()
