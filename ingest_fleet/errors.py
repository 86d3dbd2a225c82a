"""The exceptions an application sees: one base class, :class:`IngestError`, and a subclass
for each thing it can do something about."""

from __future__ import annotations


class IngestError(Exception):
    """Anything the fleet's client raises."""


class IntentRefused(IngestError, ValueError):
    """An intent refused at the door: ``field`` names what is wrong, the message how to fix it.
    Nothing was stored or enqueued."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IdempotencyConflict(IntentRefused):
    """The idempotency key already names a job made from a different intent."""

    def __init__(self, key: str, job_id: str):
        super().__init__("idempotency_key", f"{key!r} already names job {job_id}, made from a different intent; "
                                            "use a new key, or submit the same intent to get that job")
        self.key = key
        self.job_id = job_id


class JobNotFound(IngestError, LookupError):
    """No job with that id (never made, or expired after its retention)."""

    def __init__(self, job_id: str):
        super().__init__(f"no job {job_id!r} (never submitted, or removed after INGEST_JOB_RETENTION)")
        self.job_id = job_id


class BatchNotFound(IngestError, LookupError):
    """No batch with that id (never submitted, or expired with its jobs)."""

    def __init__(self, batch_id: str):
        super().__init__(f"no batch {batch_id!r} (never submitted, or expired with its jobs)")
        self.batch_id = batch_id


class FleetUnavailable(IngestError, ConnectionError):
    """Redis cannot be reached, or a write was not confirmed by the replicas the fleet requires."""


class WaitTimeout(IngestError, TimeoutError):
    """``wait`` gave up before the job ended; ``job`` is its record at that moment."""

    def __init__(self, job: dict):  # type: ignore[type-arg]
        super().__init__(f"job {job.get('id')} is still {job.get('state')} after the wait's timeout")
        self.job = job
