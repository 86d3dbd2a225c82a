"""The job store: one JSON record per job in Redis, written only under a fenced lease.

A task carries a job id, never job data (ARCHITECTURE.md, principle 1); everything a
step needs or has done lives in the record: the intent, provider ids, the upload
session, progress, the last error and a short history.

Keys (all under ``if:``)::

    if:job:<id>                 the record (JSON)
    if:jobs                     zset of job ids by creation time
    if:active:<prov>:<acct>     zset of the account's non-terminal jobs by creation time
    if:idem:<prov>:<acct>:<key> idempotency key -> "<job id> <intent digest>"
    if:events                   every state change (a capped stream)
    if:lease:<id>, if:fence:<id> per-job lease and its fencing-token counter
    if:schedule                 zset of dispatches by due time (see workers.scheduler)

Example::

    store = JobStore(redis_client)
    job = store.get(job_id)
    lease = store.acquire(job_id, ttl=90)        # None if another worker drives it
    job.bytes_done = 123
    store.save(job, lease)                       # raises StaleLease if it was taken over
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

import redis

from ingest_fleet.errors import IdempotencyConflict
from ingest_fleet.wire import EVENTS_MAXLEN, HISTORY_LIMIT, TERMINAL, create_script
from ingest_fleet.wire import new_job_id as new_job_id
from tasks import keys
from tasks.clock import FleetClock
from tasks.errors import NotReplicated
from tasks.logs import scrub
from tasks.redis_text import text
from tasks.stats import STATS

STATES = ("queued", "creating", "uploading", "submitting", "processing", "ready", "failed", "cancelled")
#: How long a write that matters waits for INGEST_REDIS_MIN_REPLICAS replicas (WAIT).
REPLICA_WAIT_MS = 2000
#: INGEST_JOB_RETENTION's default: a terminal job's record is kept 30 days after its last write.
DEFAULT_RETENTION = 30 * 86400.0
#: What :meth:`JobStore.acquire` answers for a dispatch the record no longer names.
STALE = -1.0

#: The chain, in order; each step is a Celery task (tasks.steps) and sets the job's state.
STEPS = ("create", "target", "upload", "submit", "await")
STEP_STATE = {"create": "creating", "target": "uploading", "upload": "uploading",
              "submit": "submitting", "await": "processing"}

SCHEDULE_KEY = keys.SCHEDULE
SCHEDULE_CLAIMED_KEY = keys.SCHEDULE_CLAIMED


class StaleLease(Exception):
    """Another worker took the job over; the holder must stop without writing."""


@dataclass
class Lease:
    job_id: str
    token: int
    ttl: float
    starts: int = 0  # how often the dispatch it was taken for has taken the lease (1 = first run)
    cancel: bool = False  # an application asked to cancel the job (ingest_fleet.Client.cancel)
    #: The record as read when the lease was taken for a dispatch (None without one).
    job: Job | None = field(default=None, repr=False, compare=False)
    dispatch: str = ""  # the task id it was taken for, if any
    #: Set once a write released the lease and cleared the dispatch's start count with it.
    ended: bool = field(default=False, compare=False)


@dataclass
class Refused:
    """A lease not taken: ``wait`` seconds until it frees, or :data:`STALE`; ``job`` is the
    record as read in the same atomic step (None without a dispatch, or when it is gone)."""

    wait: float
    job: Job | None = None


@dataclass
class Job:
    id: str
    provider: str
    account: str
    source: str
    mode: str  # "push" (a local file we upload) or "pull" (a URL the provider fetches)
    title: str
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    priority: str = "normal"
    state: str = "queued"
    step: str = "create"
    bytes_total: int | None = None
    #: A local source as submitted (tasks.transfer.source.fingerprint): every open compares.
    source_stat: dict[str, Any] = field(default_factory=dict)
    bytes_done: int = 0
    provider_ids: dict[str, Any] = field(default_factory=dict)
    upload: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    polls: int = 0
    progress: int | None = None  # provider-side processing progress, percent
    waiting: str | None = None  # why the job is not running: "slot", "throttled", "retry", "poll"
    failed_step: str | None = None  # where `ingest-fleet retry` restarts a failed job
    dispatch: dict[str, Any] = field(default_factory=dict)
    #: A source URL that carries credentials, sealed (tasks.sealed); ``source`` is then the URL
    #: with them masked (ingest_fleet.urls), for everything that shows it.
    source_sealed: str = ""
    callback_url: str | None = None  # POSTed the signed public record on each terminal state
    relay: bool = False  # the source is a URL or an S3 object the fleet reads and pushes (tasks.transfer.relay)
    callback: dict[str, Any] | None = None  # the delivery of that POST (tasks.completion)
    #: False for a job a client stored: the worker of its first step checks it as the fleet's
    #: door would (tasks.intent) before anything reaches the provider.
    admitted: bool = True
    intent_digest: str = ""  # what a later intent with the same idempotency key must match
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def note(self, event: str, **detail: Any) -> None:
        """Append to the job's short history (the newest ``HISTORY_LIMIT`` are kept)."""
        entry = {"at": round(time.time(), 3), "event": event}
        entry.update({k: v for k, v in detail.items() if v is not None})
        self.history.append(entry)
        del self.history[:-HISTORY_LIMIT]

    def to_json(self) -> str:
        # Scrubbed as log lines are: a provider's error text or a history entry that quotes a
        # credential, token or signed URL this process knows never reaches Redis (issue 13).
        # Its fields are plain JSON values: no deep copy (asdict) is needed to encode them, and
        # scrub copies only what it walks.
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return json.dumps(scrub(fields), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        data = json.loads(raw)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def public(self) -> dict[str, Any]:
        """The record as the CLI and the producer API show it."""
        data = asdict(self)
        data["dispatch"] = {k: data["dispatch"].get(k) for k in ("task_id", "step")} if self.dispatch else {}
        for internal in ("source_sealed", "intent_digest", "admitted"):
            data.pop(internal)
        if self.callback:
            data["callback"] = {k: v for k, v in self.callback.items() if k not in ("task_id", "n")}
        return data


def _script(name: str) -> str:
    if name == "job_create.lua":  # shared with the client (ingest_fleet.wire)
        return create_script()
    return resources.files("tasks").joinpath("lua", name).read_text()


class JobStore:
    """Reads and writes job records; every write by a worker is fenced by its lease."""

    def __init__(self, client: redis.Redis, clock: FleetClock | None = None, *, min_replicas: int = 0,
                 retention: float = DEFAULT_RETENTION):
        self.redis = client
        self.retention = retention  # INGEST_JOB_RETENTION: how long a terminal record is kept
        self.min_replicas = min_replicas  # INGEST_REDIS_MIN_REPLICAS: writes that matter wait for them
        self.clock = clock or FleetClock(client)  # updated_at is compared across hosts
        self._acquire = client.register_script(_script("lease_acquire.lua"))
        self._write = client.register_script(_script("job_write.lua"))
        self._create = client.register_script(_script("job_create.lua"))

    @staticmethod
    def key(job_id: str) -> str:
        return keys.job(job_id)

    @staticmethod
    def active_key(provider: str, account: str) -> str:
        return keys.active(provider, account)

    @staticmethod
    def idem_key(provider: str, account: str, key: str) -> str:
        return keys.idempotency(provider, account, key)

    # -- reading ---------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        raw = self.redis.get(self.key(job_id))
        return Job.from_json(raw) if raw else None

    def find(self, provider: str, account: str, key: str) -> str | None:
        raw = self.redis.get(self.idem_key(provider, account, key))
        return raw.decode() if isinstance(raw, bytes) else raw

    def get_many(self, job_ids: Iterable[object]) -> list[Job]:
        """The records of those of ``job_ids`` that exist, in one round trip."""
        names = [self.key(text(i)) for i in job_ids]
        if not names:
            return []
        raws = self.redis.mget(names)
        return [Job.from_json(raw) for raw in raws if raw]

    def member_pages(self, key: str, size: int = 500) -> Iterator[list[str]]:
        """The members of the sorted set ``key``, about ``size`` at a time (ZSCAN: a member
        there throughout is seen at least once, one that comes or goes meanwhile may not be)."""
        page: list[str] = []
        for member, _score in self.redis.zscan_iter(key, count=size):
            page.append(text(member))
            if len(page) >= size:
                yield page
                page = []
        if page:
            yield page

    def iter_jobs(self, *, batch: int = 500) -> Iterator[Job]:
        """Every job, oldest first, read in batches (constant memory per batch)."""
        start = 0
        while True:
            ids = self.redis.zrange(keys.JOBS, start, start + batch - 1)
            if not ids:
                return
            yield from self.get_many(ids)
            start += batch

    # -- writing ---------------------------------------------------------------------
    def create(self, job: Job, *, dispatch_member: str, grace: float) -> tuple[str, bool]:
        """Store a new job unless its idempotency key is known: returns (job id, created).
        A known key whose job was made from a different intent (``job.intent_digest``) raises
        :class:`~ingest_fleet.errors.IdempotencyConflict`."""
        created, job_id, digest = self._create(
            keys=[self.idem_key(job.provider, job.account, job.idempotency_key), self.key(job.id),
                  keys.JOBS, SCHEDULE_KEY, self.active_key(job.provider, job.account), STATS["states"], keys.EVENTS],
            args=[job.id, job.to_json(), job.created_at, dispatch_member, grace, f"{job.provider}:{job.state}",
                  job.intent_digest, job.provider, job.account, EVENTS_MAXLEN],
        )
        job_id, digest = text(job_id), text(digest)
        if not created and digest and job.intent_digest and digest != job.intent_digest:
            raise IdempotencyConflict(job.idempotency_key, job_id)
        self._replicated("the job record")
        return job_id, bool(created)

    def acquire(self, job_id: str, *, ttl: float, force: bool = False,
                dispatch: str = "") -> Lease | Refused:
        """Take the job's lease: a :class:`Lease`, or a :class:`Refused` (seconds until it frees).

        With ``dispatch`` (a task id), only while the record names that dispatch and is not
        terminal, checked atomically with taking the lease; else ``Refused(STALE)``. The record
        read by that check comes with the answer (``.job``): one round trip for both.
        """
        token, pttl, *more = self._acquire(
            keys=[keys.lease(job_id), keys.fence(job_id), self.key(job_id), keys.starts(dispatch or job_id),
                  keys.cancel(job_id)],
            args=[int(ttl * 1000), "1" if force else "0", dispatch])
        raw = more[-1] if more else b""
        job = Job.from_json(raw) if raw else None
        if token:
            self._replicated("the lease")
            return Lease(job_id, int(token), ttl, int(more[0]), bool(int(more[1])), job, dispatch)
        return Refused(STALE if int(pttl) == -1 else max(0.0, pttl / 1000), job)

    def save(self, job: Job, lease: Lease, *, release: bool = False,
             schedule: tuple[str, float] | None = None) -> None:
        """Write ``job`` if ``lease`` is still the newest; also renews (or releases) it.

        ``schedule`` = (member, delay seconds) puts one dispatch in the schedule in the same
        atomic step, so a checkpoint and "what runs next" can never disagree after a crash.
        """
        job.updated_at = self.clock.now()
        member, delay = schedule if schedule else ("", 0)
        ok = self._write(
            keys=[self.key(job.id), keys.fence(job.id), keys.lease(job.id), SCHEDULE_KEY,
                  STATS["states"], STATS["finished"], STATS["bytes"], keys.EVENTS,
                  self.idem_key(job.provider, job.account, job.idempotency_key), keys.webhook_events(job.id),
                  keys.starts(lease.dispatch or job.id)],
            args=[lease.token, job.to_json(), int(lease.ttl * 1000), "1" if release else "0", member, delay,
                  job.provider, job.account, job.state, job.bytes_done, EVENTS_MAXLEN, job.id,
                  int(self.retention), "1" if release and lease.dispatch else "0"],
        )
        if not ok:
            raise StaleLease(f"job {job.id}: lease {lease.token} was taken over")
        lease.ended = release and bool(lease.dispatch)
        self._replicated("the checkpoint")

    def _replicated(self, what: str) -> None:
        """With INGEST_REDIS_MIN_REPLICAS, wait (WAIT) until that many replicas have the write."""
        if self.min_replicas > 0:
            acked = int(self.redis.wait(self.min_replicas, REPLICA_WAIT_MS))
            if acked < self.min_replicas:
                raise NotReplicated(f"{what} reached {acked} of INGEST_REDIS_MIN_REPLICAS={self.min_replicas} "
                                    f"replicas within {REPLICA_WAIT_MS} ms; a failover could lose it")

    def forget_starts(self, task_id: str, lease: Lease | None = None) -> None:
        """A run of this dispatch ended in its process: only runs killed outright stay counted
        (nothing to do when the write that released ``lease`` cleared it already)."""
        if lease is None or not lease.ended:
            self.redis.delete(keys.starts(task_id))

    def check(self, lease: Lease) -> None:
        """Raise :class:`StaleLease` unless ``lease`` is still the job's newest."""
        if not self.holds(lease):
            raise StaleLease(f"job {lease.job_id}: taken over (lease {lease.token} is not the newest)")

    def holds(self, lease: Lease) -> bool:
        """Whether ``lease`` is still the job's newest (a cheap check before a side effect)."""
        return int(self.redis.get(keys.fence(lease.job_id)) or 0) == lease.token

    def schedule(self, member: str, delay: float) -> None:
        """Put one dispatch in the schedule, due ``delay`` seconds from now (Redis clock)."""
        sec, usec = self.redis.time()
        self.redis.zadd(SCHEDULE_KEY, {member: sec + usec / 1_000_000 + delay})

    def unschedule(self, member: str) -> None:
        self.redis.zrem(SCHEDULE_KEY, member)
