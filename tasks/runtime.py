"""Per-process handles: settings, the Redis client, the job store, budgets, HTTP clients.

Built lazily once per process (a forked pool child builds its own connections).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import redis
from celery import Celery

from ingest_fleet import redis_url
from tasks import served
from tasks.broker import producer_app
from tasks.budget import ProviderBudget, ProviderSlots
from tasks.clock import FleetClock
from tasks.config import AccountConfig, Settings, declared
from tasks.http import ProviderClient
from tasks.jobstore import JobStore
from tasks.logs import register_secret
from tasks.providers import ADAPTERS
from tasks.sealed import Sealer

#: Seconds a process keeps its copy of the served accounts (tasks.served).
SERVED_TTL = 5.0


class Runtime:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings.from_env()
        self._clients: dict[tuple[str, str, str], ProviderClient] = {}
        self._served: tuple[float, Mapping[tuple[str, str], AccountConfig]] | None = None
        register_secret(self.settings.callback_secret, pinned=True)
        register_secret(self.settings.source_s3.secret_access_key, pinned=True)
        for account in self.settings.accounts.values():
            register_secret(account.secret, pinned=True)
            for name, value in account.extra.items():
                if declared(account.provider)[name].secret:
                    register_secret(value, pinned=True)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis_url.client(self.settings.redis_url, socket_timeout=30, socket_connect_timeout=10,
                                health_check_interval=25)

    @cached_property
    def celery(self) -> Celery:
        """The producer of step messages (configured as the workers' app: tasks.broker)."""
        return producer_app(self.settings)

    @cached_property
    def sealer(self) -> Sealer:
        """Seals what is kept secret in Redis; ConfigError (naming INGEST_SECRET_KEY) without a key."""
        return Sealer(self.settings.secret_key)

    @cached_property
    def clock(self) -> FleetClock:
        """Redis's clock, for times that hosts compare (tasks.clock)."""
        return FleetClock(self.redis)

    @cached_property
    def store(self) -> JobStore:
        return JobStore(self.redis, self.clock, min_replicas=self.settings.redis_min_replicas,
                        retention=self.settings.job_retention)

    def served(self) -> Mapping[tuple[str, str], AccountConfig]:
        """Every account the fleet serves (tasks.served): this process's own and those the
        workers published, read from Redis at most every few seconds."""
        if self._served is None or time.monotonic() - self._served[0] > SERVED_TTL:
            self._served = (time.monotonic(), served.accounts(self))
        return self._served[1]

    def account(self, provider: str, account: str) -> AccountConfig:
        """The account as configured here, else as the workers published it (no secret):
        for budgets, slots and the backlog. A provider call needs ``settings.account``."""
        if (provider, account) in self.settings.accounts:
            return self.settings.accounts[(provider, account)]
        found = self.served().get((provider, account))
        return found if found is not None else self.settings.account(provider, account)  # ConfigError

    def budget(self, provider: str, account: str, kind: str = "api") -> ProviderBudget:
        """``api`` calls share the account's configured rate; ``upload`` traffic (e.g. TUS
        PATCHes to upload hosts) is not rate limited but honours its own 429 cooldown."""
        cfg = self.account(provider, account)
        rate = cfg.rate if kind == "api" else 0
        key = cfg.budget_key if kind == "api" else f"{cfg.budget_key}:{kind}"
        return ProviderBudget(self.redis, key, rate=rate, burst=cfg.burst, headroom=self.settings.budget_headroom,
                              cooldown_cap=self.settings.backoff_cap)

    def entity_budget(self, provider: str, account: str, entity: str) -> ProviderBudget:
        cfg = self.account(provider, account)
        return ProviderBudget(self.redis, f"{cfg.budget_key}:entity:{entity}", rate=cfg.entity_rate, burst=1,
                              headroom=self.settings.budget_headroom, cooldown_cap=self.settings.backoff_cap)

    def slots(self, provider: str, account: str, job: Any = None) -> ProviderSlots:
        """The slot pool of ``job`` (the adapter's ``slot_pool``), or the account's default pool."""
        cfg = self.account(provider, account)
        pool, limit = ADAPTERS[provider].slot_pool(job, cfg) if job is not None else ("", cfg.slots)
        return ProviderSlots(self.redis, f"{cfg.budget_key}:{pool}" if pool else cfg.budget_key, limit=limit)

    def slot_pools(self, provider: str, account: str) -> list[ProviderSlots]:
        cfg = self.account(provider, account)
        return [ProviderSlots(self.redis, f"{cfg.budget_key}:{pool}" if pool else cfg.budget_key, limit=limit)
                for pool, limit in ADAPTERS[provider].slot_pools(cfg)]

    def client(self, provider: str, account: str, kind: str = "api") -> ProviderClient:
        key = (provider, account, kind)
        if key not in self._clients:
            adapter = ADAPTERS[provider]
            cfg = self.settings.account(provider, account)
            api = kind == "api"
            self._clients[key] = ProviderClient(
                provider, self.budget(provider, account, kind),
                timeouts=(self.settings.http_connect_timeout, self.settings.http_read_timeout),
                headers=adapter.auth_headers(cfg) if api else {},
                max_wait=self.settings.short_wait, error_text=adapter.error_text,
                policy=adapter.retry_policy, classify=adapter.classify,
                entity_budget=(lambda e: self.entity_budget(provider, account, e)) if api and cfg.entity_rate else None,
                learn_rate_headers=api and adapter.learns_rate_limit,
            )
        return self._clients[key]


_runtime: tuple[int, Runtime] | None = None


def runtime() -> Runtime:
    """This process's runtime (rebuilt after a fork)."""
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        _runtime = (os.getpid(), Runtime())
    return _runtime[1]
