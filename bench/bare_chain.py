"""The ceiling for any Celery design: a bare chain of 5 no-op tasks on the same Redis, with
the same delivery settings as the fleet (acks_late, no prefetch, events on)."""

from __future__ import annotations

import os

import redis
from celery import Celery, chain

app = Celery("bare_chain", broker=os.environ["REDIS_URL"])
app.conf.update(
    task_ignore_result=True, task_acks_late=True, worker_prefetch_multiplier=1, worker_disable_prefetch=True,
    worker_send_task_events=True, task_send_sent_event=True, task_default_queue="bare",
    worker_hijack_root_logger=False,
)
_counter = redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bare.step")
def step(job_id: str) -> str:
    return job_id


@app.task(name="bare.last")
def last(job_id: str) -> None:
    _counter.incr("bench:bare:done")


def send(job_id: str) -> None:
    chain(step.s(job_id), step.s(), step.s(), step.s(), last.s()).apply_async()
