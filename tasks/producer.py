"""The fleet's own producer API (the CLI and the demo call it): the door with the fleet's full
checks, where the adapters and INGEST_SECRET_KEY are at hand. Applications use the client,
``ingest_fleet.Client``, which needs Redis only; both store jobs with the same script.

Example::

    from tasks.producer import submit, status, wait
    job_id = submit({"provider": "gcore", "source": "/videos/a.mp4", "title": "A"})
    record = wait(job_id, timeout=600)      # the job record once ready / failed / cancelled
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ingest_fleet.client import CALLBACKS_OFF
from ingest_fleet.errors import JobNotFound as _JobNotFound
from ingest_fleet.urls import redacted, secret_forms, secrets_in
from tasks import keys
from tasks.dispatch import OUTBOX_GRACE, next_dispatch, publish
from tasks.intent import Intent, IntentError
from tasks.jobstore import Job, new_job_id
from tasks.logs import register_secret
from tasks.runtime import Runtime, runtime

JobNotFound = _JobNotFound


def submit(intent: Intent | Mapping[str, Any], *, rt: Runtime | None = None) -> str:
    """Validate ``intent`` and enqueue its job; returns the job id.

    Raises :class:`tasks.intent.IntentError` (nothing stored, nothing enqueued) when the
    intent is refused. Submitting the same ``idempotency_key`` again returns the first
    job's id and enqueues nothing.
    """
    rt = rt or runtime()
    if not isinstance(intent, Intent):
        intent = Intent.from_dict(intent)
    if isinstance(intent.source, str) and secrets_in(intent.source):
        rt.sealer  # noqa: B018  (credentials in the URL are kept sealed: without the key, refused first)
    # The accounts the fleet serves, as its workers publish them: the producer needs no
    # provider credential (an account configured here is checked whole, too).
    valid = intent.validate(rt.settings, served=rt.served())
    if valid.callback_url and not (rt.settings.callback_secret or rt.redis.hget(keys.FLEET, "callbacks")):
        raise IntentError("callback_url", CALLBACKS_OFF)
    job_id = new_job_id()
    job = Job(
        id=job_id, provider=valid.provider, account=valid.account, source=valid.source, mode=valid.mode,
        title=valid.title, description=valid.description, metadata=dict(valid.metadata), tags=list(valid.tags),
        options=dict(valid.options),
        idempotency_key=valid.idempotency_key or job_id, priority=valid.priority, bytes_total=valid.size,
        source_stat=dict(valid.source_stat), created_at=rt.clock.now(), callback_url=valid.callback_url,
        relay=valid.relay,
        intent_digest=valid.digest,
    )
    if secrets_in(valid.source):
        # Credentials in the URL: kept sealed for the workers, shown masked everywhere else.
        for secret in secret_forms(valid.source):
            register_secret(secret)
        job.source, job.source_sealed = redacted(valid.source), rt.sealer.seal(valid.source).decode()
    job.note("submitted", mode=valid.mode)
    schedule_member = next_dispatch(job, "create")
    existing, created = rt.store.create(job, dispatch_member=schedule_member, grace=OUTBOX_GRACE)
    if created:
        publish(schedule_member, rt)
        rt.store.unschedule(schedule_member)
    return existing


def status(job_id: str, *, rt: Runtime | None = None) -> dict[str, Any]:
    """The job record as a dict; raises :class:`JobNotFound`."""
    job = (rt or runtime()).store.get(job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job.public()


def wait(job_id: str, timeout: float | None = None, *, interval: float = 0.25,
         rt: Runtime | None = None) -> dict[str, Any]:
    """Block until the job is ready, failed or cancelled (or ``timeout`` seconds passed);
    returns the record, terminal or not."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = status(job_id, rt=rt)
        if record["state"] in ("ready", "failed", "cancelled"):
            return record
        if deadline is not None and time.monotonic() >= deadline:
            return record
        time.sleep(interval)
