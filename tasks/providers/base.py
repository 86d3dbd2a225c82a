"""What a provider adapter is: the five steps of the chain mapped onto one provider's calls.

An adapter is small and declarative. It does not know about Celery: the step runner
(tasks.steps) gives it a :class:`StepContext` with the job record, the account's
configuration, budgeted HTTP clients and a ``checkpoint()`` that writes progress under
the job's fenced lease. Each method is idempotent: it first reads what the record says
was already done and re-uses it.

A step a provider or mode does not need is skipped (:meth:`Adapter.needs`), e.g. a pull
skips both upload steps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar, cast

import requests

from ingest_fleet.urls import secret_forms
from tasks import keys
from tasks.declare import Setting
from tasks.errors import ConfigError, PermanentError
from tasks.http import default_error_text
from tasks.logs import register_secret
from tasks.retry import Outcome, renew
from tasks.shutdown import stopping
from tasks.transfer.source import open_remote, open_source

if TYPE_CHECKING:
    from tasks.clock import FleetClock
    from tasks.config import AccountConfig, Settings
    from tasks.http import BoundClient, ProviderClient
    from tasks.intent import ValidatedIntent
    from tasks.jobstore import Job
    from tasks.sealed import Sealer


@dataclass
class Status:
    """The provider's view of an ingest: ``processing``, ``ready`` or ``failed``."""

    state: str
    progress: int | None = None
    message: str = ""
    provider_state: str = ""


class StepContext:
    """Everything one step of one job may use."""

    def __init__(self, *, job: Job, settings: Settings, account: AccountConfig,
                 http: Callable[[str], ProviderClient | BoundClient], checkpoint: Callable[[], None], deadline: float,
                 log: Any, redis: Any = None, sealer: Callable[[], Sealer] | None = None,
                 clock: FleetClock | None = None):
        self.job = job
        self._clock = clock
        self._sealer = sealer
        self.redis = redis  # for provider state shared by the fleet (OAuth tokens, upload credentials)
        self.settings = settings
        self.account = account
        self.http = http
        self._checkpoint = checkpoint
        self.deadline = deadline
        self.log = log

    def now(self) -> float:
        """Seconds since the epoch by the fleet's clock (Redis's), for times another host compares."""
        return self._clock.now() if self._clock is not None else time.time()

    @property
    def sealer(self) -> Sealer:
        """Seals what the step keeps secret in Redis (tasks.sealed); built on first use, so only a
        step that keeps a secret needs INGEST_SECRET_KEY (ConfigError naming it otherwise)."""
        if self._sealer is None:
            raise ConfigError("this step keeps a secret in Redis but was given no INGEST_SECRET_KEY")
        return self._sealer()

    def open_source(self) -> BinaryIO:
        """The job's source opened for reading, re-checked at every open: a local file must still
        be the file submitted, a regular file under INGEST_SOURCE_ROOTS; a relayed URL or S3
        object is read in ranges, each conditional on its first read (tasks.transfer.source)."""
        if "://" in self.job.source:
            reader = open_remote(self.source_url(), self.settings, self.job.source_stat or None)
            if not self.job.source_stat:  # the first read: what every later read must match
                self.job.source_stat = {**reader.remote.validator, "size": reader.size}
                self.job.bytes_total = reader.size
            return cast(BinaryIO, reader)
        expected = self.job.source_stat or ({"size": self.job.bytes_total} if self.job.bytes_total else None)
        if expected and "ino" not in expected:  # a record from before fingerprints: its size only
            f = open_source(self.job.source, self.settings.source_roots, None)
            size = os.fstat(f.fileno()).st_size
            if size != expected["size"]:
                f.close()
                raise PermanentError(f"source changed since submit: {size} bytes, expected {expected['size']}")
            return f
        return open_source(self.job.source, self.settings.source_roots, expected)

    def source_url(self) -> str:
        """The source as the provider must be given it: a URL with credentials unsealed (the
        record shows it masked), else ``job.source``."""
        if not self.job.source_sealed:
            return self.job.source
        url = self.sealer.open(self.job.source_sealed)
        if url is None:
            raise PermanentError("the source URL's credentials cannot be opened with INGEST_SECRET_KEY (sealed "
                                 "under a key that was dropped); submit the job again")
        for secret in secret_forms(url):
            register_secret(secret)
        return url

    def checkpoint(self) -> None:
        """Write the job record now (fenced; raises StaleLease if the job was taken over)."""
        self._checkpoint()

    def progress(self, step: str = "upload") -> None:
        """The provider acknowledged more bytes: the step's attempts start again (its retry
        budget is for failures in a row, not for the whole of a long upload), and the record
        is written now, so a resumed run starts from here."""
        renew(self.job, step)
        self.checkpoint()

    def sending(self, marker: str, value: Any = None) -> Callable[[], None]:
        """An ``on_send`` hook for a call that is not idempotent: once the budget lets the
        request go (never before), record ``job.provider_ids[marker]`` (the time, or
        ``value``) and checkpoint, so a re-run knows to look for what it may have created.
        Recorded earlier, a deferred step would come back to a lookup it need not make and
        spend the token it waited for on it (issue 11)."""

        def mark() -> None:
            self.job.provider_ids[marker] = self.now() if value is None else value
            self.checkpoint()

        mark.fenced = True  # type: ignore[attr-defined]  # its checkpoint checks the lease (tasks.http.BoundClient)
        return mark

    def time_left(self) -> float:
        """Seconds this step may still work; 0 once the worker is shutting down, so a slice
        ends at its next chunk and hands the job on."""
        return 0.0 if stopping() else self.deadline - time.monotonic()


class Adapter:
    """Base of every provider adapter; override the steps the provider has."""

    name: str = ""
    #: One line a person reads in listings (``ingest-fleet settings``, deploy/.env.example).
    title: str = ""
    #: The account setting whose presence makes an account exist.
    credential: ClassVar[str] = "API_KEY"
    #: Every setting an account of this provider has (tasks.declare): ``BASE_URL``, the
    #: credential and the four budget settings (``budget()``) at least.
    account_settings: ClassVar[tuple[Setting, ...]] = ()
    pull_schemes: frozenset[str] = frozenset({"http", "https"})
    supports_push: bool = True
    #: Answers that differ from the default policy (tasks.http.DEFAULT_POLICY), by status.
    retry_policy: ClassVar[dict[int, Outcome]] = {}
    #: The provider announces its budget in X-RateLimit-Limit/Remaining/Reset (Ingest.io).
    learns_rate_limit: bool = False
    #: Hooks are registered per account and signed by the provider (Ingest.io): the webhook
    #: receiver serves them on an account path and asks ``webhook_verified``/``webhook_refs``.
    account_webhooks: bool = False
    #: A job that fails for good releases what it holds at the provider (``cancel``), e.g.
    #: Ingest.io's open multipart upload; others keep it so ``retry`` can resume it.
    cancel_on_failure: bool = False
    #: Provider-specific intent options and their types (``--opt NAME=VALUE``).
    intent_options: ClassVar[dict[str, type]] = {}

    def classify(self, resp: requests.Response) -> Outcome | None:
        """How to treat an error answer the status alone does not tell, or None for the policy."""
        return None

    def slot_step(self, job: Job) -> str:
        """The step whose provider call starts work that holds a provider-side job slot."""
        return "submit"

    def webhook_is_relevant(self, payload: Any) -> bool:
        """Whether a notification is worth an immediate status poll (default: any)."""
        return True

    def webhook_refusal(self, raw: bytes, payload: Any) -> tuple[int, str] | None:
        """``(4xx status, reason)`` to refuse a per-job notification outright, or None (default)."""
        return None

    def webhook_verified(self, secret: str, headers: dict[str, str], raw: bytes) -> bool:
        """An account-wide hook's notification carries the provider's valid signature."""
        return False

    def webhook_refs(self, payload: Any) -> list[str]:
        """The provider's ids an account-wide notification is about (see webhooks.remember_ref)."""
        return []

    def ensure_account_hook(self, ctx: StepContext, url: str | None, *, cache_seconds: int,
                            find: Callable[[], dict[str, Any] | None], create: Callable[[], Any]) -> None:
        """Register the account's webhook (``url``) at the provider once for the whole fleet:
        one worker at a time looks for it (``find``) and creates it if missing (``create``,
        which returns the provider's answer). The outcome is remembered for ``cache_seconds``,
        after which it is looked for again (a provider that lost it gets it back). Best effort:
        a refusal is noted on the job and the job goes on by polling."""
        if not url:
            return
        key = keys.account_hook(self.name, ctx.account.name)
        if ctx.redis.get(key) or not ctx.redis.set(f"{key}:lock", 1, nx=True, ex=30):
            return
        try:
            found = find()
            if found is None:
                found = create()
                ctx.job.note("webhook.registered", hook_id=found.get("id") if isinstance(found, dict) else None)
            ctx.redis.set(key, (found.get("id") if isinstance(found, dict) else None) or "1", ex=cache_seconds)
        except PermanentError as exc:  # e.g. no permission, or an http:// receiver refused
            ctx.job.note("webhook.unavailable", error=str(exc))
            ctx.redis.set(key, "unavailable", ex=cache_seconds)
        finally:
            ctx.redis.delete(f"{key}:lock")

    def probe(self, ctx: StepContext) -> str:
        """One cheap authenticated read (``ingest-fleet config check``): what it saw, or the
        provider's error (a StepError: the credential or the setting that is wrong)."""
        raise NotImplementedError(f"{self.name} has no credential check")

    def cancel(self, ctx: StepContext) -> None:
        """Best effort: release what the job holds at the provider (e.g. an open upload).
        Called on an operator's cancel, and when the job fails for good if ``cancel_on_failure``."""

    def auth_headers(self, account: AccountConfig) -> dict[str, str]:
        return {}

    def error_text(self, resp: requests.Response) -> str:
        return default_error_text(resp)

    def validate(self, intent: ValidatedIntent) -> None:
        """Provider-specific checks at submit; raise IntentError naming the field."""

    def check_account(self, intent: ValidatedIntent, account: AccountConfig) -> None:
        """Settings of the account this intent needs, checked at submit; raise IntentError naming
        the variable and the fix."""

    def slot_pool(self, job: Job, account: AccountConfig) -> tuple[str, int]:
        """The provider-side slot pool ``job`` takes: (suffix of the pool's key, its limit).
        Default: one pool per account of ``account.slots`` (e.g. Brightcove keeps low priority apart)."""
        return "", account.slots

    def slot_pools(self, account: AccountConfig) -> list[tuple[str, int]]:
        """Every pool :meth:`slot_pool` may answer for the account (the reaper visits each)."""
        return [("", account.slots)]

    def needs(self, step: str, job: Job) -> bool:
        return not (job.mode == "pull" and step in ("target", "upload"))

    def create_entity(self, ctx: StepContext) -> None:
        """Find or create the provider's entity; record its id in ``job.provider_ids``."""

    def obtain_upload_target(self, ctx: StepContext) -> None:
        """Open an upload session; record it (never a secret) in ``job.upload``."""

    def upload_slice(self, ctx: StepContext) -> bool:
        """Send chunks until done or ``ctx.time_left()`` runs out; True when complete."""
        return True

    def submit_ingest(self, ctx: StepContext) -> None:
        """Ask the provider to ingest what was uploaded (or to pull the URL)."""

    def poll_status(self, ctx: StepContext) -> Status:
        raise NotImplementedError
