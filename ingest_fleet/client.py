"""The application's side of the fleet: submit intents, read jobs, wait for them, cancel them
and follow their state changes, with Redis alone (no Celery, no provider credential).

    from ingest_fleet import Client
    fleet = Client()                                   # REDIS_URL, like every fleet process
    job_id = fleet.submit({"provider": "gcore", "source": "https://cdn.example.com/a.mp4"})
    job = fleet.wait(job_id, timeout=3600)             # the public job record
    for event in fleet.events(group="my-app"):         # every state change, at least once
        ...

What the client checks at the door is what it can know without the fleet's secrets: the
intent's shape, the providers and accounts the workers serve (they publish them in Redis), a
local file it can see. The worker that takes the job's first step checks the rest (the
fleet's source roots, each provider's own rules) and fails the job with the reason if needed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from ingest_fleet import batch, redis_url, wire
from ingest_fleet.errors import BatchNotFound, FleetUnavailable, IdempotencyConflict, IntentRefused, JobNotFound, WaitTimeout
from ingest_fleet.intent import Checked, Intent, ProviderCaps, check, check_local_file
from ingest_fleet.urls import secrets_in

#: Seconds an entry of the served registry stays valid without a worker refreshing it.
SERVED_STALE_AFTER = 7 * 86400.0
REPLICA_WAIT_MS = 2000
DEFAULT_URL = "redis://127.0.0.1:6379/0"
#: A batch's bookkeeping is kept as long as the jobs' records at most (INGEST_JOB_RETENTION's default).
BATCH_TTL = 30 * 86400.0
CALLBACKS_OFF = ("the fleet cannot sign completion callbacks: no worker has INGEST_CALLBACK_SECRET; "
                 "set it on the workers, or leave callback_url out and follow events()")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def public(raw: bytes | str) -> dict[str, Any]:
    """A stored job record as applications see it (what the fleet's ``status`` shows)."""
    data = json.loads(raw)
    dispatch = data.get("dispatch") or {}
    data["dispatch"] = {k: dispatch.get(k) for k in ("task_id", "step")} if dispatch else {}
    for internal in ("source_sealed", "intent_digest", "admitted"):
        data.pop(internal, None)
    if data.get("callback"):
        data["callback"] = {k: v for k, v in data["callback"].items() if k not in ("task_id", "n")}
    return dict(data)


def _member(raw: bytes | str) -> str | None:
    """The schedule entry of the job's current dispatch, as its record names it."""
    member = (json.loads(raw).get("dispatch") or {}).get("member")
    return str(member) if member else None


def _served(providers_raw: Mapping[Any, Any], accounts_raw: Mapping[Any, Any],
            now: float) -> tuple[dict[str, ProviderCaps], set[tuple[str, str]]]:
    providers = {}
    for name, raw in providers_raw.items():
        try:
            providers[_text(name)] = ProviderCaps.from_json(_text(name), json.loads(raw))
        except (ValueError, TypeError):
            continue
    accounts = set()
    for name, raw in accounts_raw.items():
        provider, _, account = _text(name).partition("/")
        try:
            seen = float(json.loads(raw).get("seen", 0))
        except (ValueError, TypeError, AttributeError):
            continue
        if provider in providers and account and now - seen <= SERVED_STALE_AFTER:
            accounts.add((provider, account))
    return providers, accounts


def _prepare(intent: Mapping[str, Any] | Intent, providers: Mapping[str, ProviderCaps],
             accounts: set[tuple[str, str]], fleet: Mapping[Any, Any],
             now: float) -> tuple[str, list[str], list[Any], str, str]:
    """Check ``intent``; the create script's keys and arguments, the job id, key and digest."""
    given = intent if isinstance(intent, Intent) else Intent.from_dict(intent)
    checked: Checked = check(given, providers, accounts, account_hint=lambda p, a: (
        "no worker has published it (workers publish the accounts they are configured for); "
        "check the account's name, or configure it on the workers"))
    if checked.callback_url and not (fleet.get(b"callbacks") or fleet.get("callbacks")):
        raise IntentRefused("callback_url", CALLBACKS_OFF)
    source: str = checked.source
    size: int | None = None
    stat: dict[str, int] = {}
    if checked.mode == "push" and not checked.relay:
        source, size, stat = check_local_file(checked.source)
    elif secrets_in(checked.source):
        raise IntentRefused("source", "the URL carries credentials, which only the fleet can keep sealed; "
                                      "submit it with `ingest-fleet submit` where INGEST_SECRET_KEY is set, "
                                      "or give a URL without credentials")
    job_id = wire.new_job_id()
    digest = wire.intent_digest(checked.digest_fields(source))
    key = checked.idempotency_key or job_id
    dispatch, member = wire.first_dispatch(job_id, checked.provider, checked.account, checked.priority)
    record = {
        "id": job_id, "provider": checked.provider, "account": checked.account, "source": source,
        "mode": checked.mode, "title": checked.title, "description": checked.description,
        "metadata": checked.metadata, "tags": checked.tags, "options": checked.options, "idempotency_key": key,
        "priority": checked.priority, "state": "queued", "step": "create", "bytes_total": size,
        "source_stat": stat, "dispatch": dispatch, "callback_url": checked.callback_url, "admitted": False,
        "relay": checked.relay,
        "intent_digest": digest, "created_at": now, "updated_at": now,
        "history": [{"at": round(now, 3), "event": "submitted", "mode": checked.mode, "by": "client"}],
    }
    keys = [wire.idempotency_key(checked.provider, checked.account, key), wire.job_key(job_id), wire.JOBS,
            wire.SCHEDULE, wire.active_key(checked.provider, checked.account), wire.STATES_STAT, wire.EVENTS]
    args = [job_id, json.dumps(record, separators=(",", ":"), ensure_ascii=False), now, member, 0,
            f"{checked.provider}:queued", digest, checked.provider, checked.account, wire.EVENTS_MAXLEN]
    return job_id, keys, args, key, digest


def _created(answer: list[Any], key: str, digest: str) -> str:
    created, job_id, existing = int(answer[0]), _text(answer[1]), _text(answer[2])
    if not created and existing and existing != digest:
        raise IdempotencyConflict(key, job_id)
    return job_id


def _event(entry_id: Any, fields: Mapping[Any, Any]) -> dict[str, Any]:
    event = {_text(k): _text(v) for k, v in fields.items()}
    event["id"] = _text(entry_id)
    return event


class Client:
    """Submit and follow ingest jobs through the fleet's Redis (``REDIS_URL`` by default)."""

    def __init__(self, redis_url_: str | None = None, *, socket_timeout: float = 30.0):
        url = redis_url_ or os.environ.get("REDIS_URL") or DEFAULT_URL
        redis_url.check(url)
        self.redis = redis_url.client(url, socket_timeout=socket_timeout, socket_connect_timeout=10)
        self._create = self.redis.register_script(wire.create_script())

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise FleetUnavailable(f"Redis cannot be reached: {exc}") from None

    def _now(self) -> float:
        sec, usec = self._call(self.redis.time)
        return float(sec) + float(usec) / 1e6

    def served(self) -> tuple[dict[str, ProviderCaps], set[tuple[str, str]]]:
        """The providers (with what each accepts) and accounts the fleet's workers serve."""
        providers_raw, accounts_raw, _fleet = self._registry()
        return _served(providers_raw, accounts_raw, self._now())

    def _registry(self) -> tuple[Any, Any, Any]:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(wire.SERVED_PROVIDERS)
        pipe.hgetall(wire.SERVED)
        pipe.hgetall(wire.FLEET)
        providers, accounts, fleet = self._call(pipe.execute)
        return providers, accounts, fleet

    def submit(self, intent: Mapping[str, Any] | Intent) -> str:
        """Store the job for ``intent`` and return its id; the same idempotency key with the same
        intent returns the first job's id. Raises IntentRefused (nothing stored), or
        IdempotencyConflict, or FleetUnavailable."""
        providers_raw, accounts_raw, fleet = self._registry()
        now = self._now()
        providers, accounts = _served(providers_raw, accounts_raw, now)
        job_id, keys, args, key, digest = _prepare(intent, providers, accounts, fleet, now)
        job_id = _created(self._call(self._create, keys=keys, args=args), key, digest)
        self._replicated()
        return job_id

    def _replicated(self) -> None:
        needed = int(self._call(self.redis.hget, wire.FLEET, "min_replicas") or 0)
        if needed and int(self._call(self.redis.wait, needed, REPLICA_WAIT_MS)) < needed:
            raise FleetUnavailable(f"the job reached fewer than the {needed} replica(s) the fleet requires "
                                   "(INGEST_REDIS_MIN_REPLICAS); submit it again with the same idempotency key")

    def submit_batch(self, intents: Iterable[Mapping[str, Any]] | str | Path, name: str | None = None, *,
                     all_or_nothing: bool = False) -> batch.BatchResult:
        """Submit many intents as one batch: an iterable of intents, or the path of a manifest
        (CSV with a header row, or JSON lines). A refused line is listed with its reason and
        nothing of it is stored; submitting the same batch again stores only what is missing."""
        if isinstance(intents, (str, Path)):
            path = Path(intents)
            lines = list(batch.read_manifest(path.read_text(encoding="utf-8"),
                                             kind="jsonl" if path.suffix in (".jsonl", ".ndjson") else None))
            name = name or batch.default_name(path)
        else:
            lines = [batch.Line(n, dict(i)) for n, i in enumerate(intents, start=1)]
        batch_id = batch.check_name(name or "")
        providers_raw, accounts_raw, fleet = self._registry()
        now = self._now()
        providers, accounts = _served(providers_raw, accounts_raw, now)
        result = batch.run(lines, batch_id, self.submit,
                           lambda intent: _prepare(intent, providers, accounts, fleet, now), all_or_nothing=all_or_nothing)
        if not result.all_or_nothing_refused:
            batch.record(self.redis, result, lines=len(lines), now=now, ttl=BATCH_TTL)
        return result

    def batch_status(self, batch_id: str) -> dict[str, Any]:
        """Counts by state, bytes done/total and an ETA of a batch."""
        try:
            return batch.status(self.redis, batch_id, self._now())
        except LookupError:
            raise BatchNotFound(batch_id) from None

    def batch_report(self, batch_id: str) -> list[dict[str, Any]]:
        """One row per line of the batch: its job id, state, provider ids and error."""
        try:
            _meta, records, refused = batch.read(self.redis, batch_id)
        except LookupError:
            raise BatchNotFound(batch_id) from None
        return batch.report_rows(records, refused)

    def status(self, job_id: str) -> dict[str, Any]:
        raw = self._call(self.redis.get, wire.job_key(job_id))
        if not raw:
            raise JobNotFound(job_id)
        return public(raw)

    def wait(self, job_id: str, timeout: float | None = None, *, interval: float = 0.5) -> dict[str, Any]:
        """The job's record once it is ready, failed or cancelled; WaitTimeout after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.status(job_id)
            if job["state"] in wire.TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job)
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask the fleet to cancel the job: its next step (made due now) ends it as cancelled,
        deleting what the provider has unless the provider already finished it."""
        raw = self._call(self.redis.get, wire.job_key(job_id))
        if not raw:
            raise JobNotFound(job_id)
        job, member = public(raw), _member(raw)
        if job["state"] not in wire.TERMINAL:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(wire.cancel_key(job_id), "1", ex=int(wire.CANCEL_TTL))
            if member:  # a wait (a poll, a backoff, a slot) ends now; a queued step sees it when it runs
                pipe.zadd(wire.SCHEDULE, {member: 0}, xx=True)
            self._call(pipe.execute)
        return job

    def events(self, group: str, consumer: str | None = None, *, start: str = "$", block_ms: int = 5000,
               count: int = 100) -> Iterator[dict[str, Any]]:
        """Every job state change, at least once per consumer group: an entry is acknowledged
        when the loop asks for the next one, so a crash redelivers the one being handled.
        A new group starts at ``start`` ("$": from now, "0": all that the stream still holds)."""
        consumer = consumer or f"{os.uname().nodename}-{os.getpid()}"
        try:
            self._call(self.redis.xgroup_create, wire.EVENTS, group, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        pending = "0"  # first what this consumer was given and never acknowledged
        while True:
            read = self._call(self.redis.xreadgroup, group, consumer, {wire.EVENTS: pending},
                              count=count, block=None if pending == "0" else block_ms)
            entries = read[0][1] if read else []
            if pending == "0" and not entries:
                pending = ">"
                continue
            for entry_id, fields in entries:
                if not fields:  # trimmed away while pending
                    self._call(self.redis.xack, wire.EVENTS, group, entry_id)
                    continue
                yield _event(entry_id, fields)
                self._call(self.redis.xack, wire.EVENTS, group, entry_id)


class AsyncClient:
    """:class:`Client` for asyncio applications (redis.asyncio underneath)."""

    def __init__(self, redis_url_: str | None = None, *, socket_timeout: float = 30.0):
        url = redis_url_ or os.environ.get("REDIS_URL") or DEFAULT_URL
        redis_url.check(url)
        if redis_url.sentinel_target(url) is not None:
            raise redis_url.RedisUrlError("REDIS_URL: AsyncClient does not support sentinel:// yet; use Client")
        self.redis = aioredis.Redis.from_url(url, socket_timeout=socket_timeout, socket_connect_timeout=10)
        self._create = self.redis.register_script(wire.create_script())

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise FleetUnavailable(f"Redis cannot be reached: {exc}") from None

    async def _now(self) -> float:
        sec, usec = await self._call(self.redis.time())
        return float(sec) + float(usec) / 1e6

    async def submit(self, intent: Mapping[str, Any] | Intent) -> str:
        providers_raw = await self._call(self.redis.hgetall(wire.SERVED_PROVIDERS))
        accounts_raw = await self._call(self.redis.hgetall(wire.SERVED))
        fleet = await self._call(self.redis.hgetall(wire.FLEET))
        now = await self._now()
        providers, accounts = _served(providers_raw, accounts_raw, now)
        job_id, keys, args, key, digest = _prepare(intent, providers, accounts, fleet, now)
        job_id = _created(await self._call(self._create(keys=keys, args=args)), key, digest)
        needed = int(await self._call(self.redis.hget(wire.FLEET, "min_replicas")) or 0)
        if needed and int(await self._call(self.redis.wait(needed, REPLICA_WAIT_MS))) < needed:
            raise FleetUnavailable(f"the job reached fewer than the {needed} replica(s) the fleet requires")
        return job_id

    async def status(self, job_id: str) -> dict[str, Any]:
        raw = await self._call(self.redis.get(wire.job_key(job_id)))
        if not raw:
            raise JobNotFound(job_id)
        return public(raw)

    async def wait(self, job_id: str, timeout: float | None = None, *, interval: float = 0.5) -> dict[str, Any]:
        import asyncio

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.status(job_id)
            if job["state"] in wire.TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(job)
            await asyncio.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))

    async def cancel(self, job_id: str) -> dict[str, Any]:
        raw = await self._call(self.redis.get(wire.job_key(job_id)))
        if not raw:
            raise JobNotFound(job_id)
        job, member = public(raw), _member(raw)
        if job["state"] not in wire.TERMINAL:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(wire.cancel_key(job_id), "1", ex=int(wire.CANCEL_TTL))
            if member:
                pipe.zadd(wire.SCHEDULE, {member: 0}, xx=True)
            await self._call(pipe.execute())
        return job

    async def events(self, group: str, consumer: str | None = None, *, start: str = "$", block_ms: int = 5000,
                     count: int = 100) -> AsyncIterator[dict[str, Any]]:
        consumer = consumer or f"{os.uname().nodename}-{os.getpid()}"
        try:
            await self._call(self.redis.xgroup_create(wire.EVENTS, group, id=start, mkstream=True))
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        pending = "0"
        while True:
            read = await self._call(self.redis.xreadgroup(group, consumer, {wire.EVENTS: pending}, count=count,
                                                          block=None if pending == "0" else block_ms))
            entries = read[0][1] if read else []
            if pending == "0" and not entries:
                pending = ">"
                continue
            for entry_id, fields in entries:
                if fields:
                    yield _event(entry_id, fields)
                await self._call(self.redis.xack(wire.EVENTS, group, entry_id))

    async def aclose(self) -> None:
        await self.redis.aclose()
