"""What the fleet serves: every worker publishes the provider accounts it is configured for, all
but their secrets, so the processes that hold no provider credential (the scheduler, the
metrics exporter, Flower, an application's producer) still know every account, its budget
and its slot pools (issue 13, item 13; issue 14, item 2).

    if:served   hash "<provider>/<account>" -> {"base_url", "rate", "burst", "slots",
                "entity_rate", "extra": {non-secret settings}, "seen": <Redis time>}
    if:served:providers   hash "<provider>" -> what it accepts (ingest_fleet.intent.ProviderCaps)
    if:workers  hash "<worker>" -> {"queues": [...], "seen": <Redis time>} (``submit`` warns when
                no live worker consumes a job's queue)
    if:fleet    hash: "min_replicas" (INGEST_REDIS_MIN_REPLICAS, which a client's submit waits for),
                "callbacks" (1 once a worker has INGEST_CALLBACK_SECRET: intents may carry callback_url)

A worker writes its accounts when it starts and again every :data:`REFRESH` seconds; an entry
no worker refreshed for :data:`STALE_AFTER` seconds is no longer served (an account taken out
of every worker's configuration). What a process has configured itself always wins over what
the registry says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tasks import keys
from tasks.config import AccountConfig, declared
from tasks.intent import capabilities
from tasks.providers import ADAPTERS
from tasks.redis_text import text

if TYPE_CHECKING:
    from tasks.runtime import Runtime

REFRESH = 600.0
STALE_AFTER = 7 * 86400.0


def _field(provider: str, account: str) -> str:
    return f"{provider}/{account}"


def publish(rt: Runtime) -> int:
    """Write this process's accounts (without secrets) to the registry; returns how many."""
    accounts = rt.settings.accounts
    if not accounts:
        return 0
    now = rt.clock.now()
    pipe = rt.redis.pipeline(transaction=False)
    for (provider, account), cfg in accounts.items():
        visible = declared(provider)
        pipe.hset(keys.SERVED, _field(provider, account), json.dumps({
            "base_url": cfg.base_url, "rate": cfg.rate, "burst": cfg.burst, "slots": cfg.slots,
            "entity_rate": cfg.entity_rate, "seen": now,
            "extra": {k: v for k, v in cfg.extra.items() if k in visible and not visible[k].secret},
        }, sort_keys=True))
    caps = capabilities()
    for provider in sorted({p for p, _ in accounts}):
        pipe.hset(keys.SERVED_PROVIDERS, provider, json.dumps(caps[provider].to_json(), sort_keys=True))
    pipe.hset(keys.FLEET, "min_replicas", rt.settings.redis_min_replicas)
    if rt.settings.callback_secret:  # the workers can sign completion callbacks
        pipe.hset(keys.FLEET, "callbacks", 1)
    pipe.execute()
    return len(accounts)


def accounts(rt: Runtime) -> Mapping[tuple[str, str], AccountConfig]:
    """Every account the fleet serves: this process's own, and those the workers published
    (with an empty secret: enough for budgets, slots, queues and the backlog, never for a call)."""
    found: dict[tuple[str, str], AccountConfig] = {}
    now = rt.clock.now()
    for raw_field, raw in rt.redis.hgetall(keys.SERVED).items():
        provider, _, account = text(raw_field).partition("/")
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if provider not in ADAPTERS or not account or now - float(entry.get("seen", 0)) > STALE_AFTER:
            continue
        found[(provider, account)] = AccountConfig(
            provider=provider, name=account, base_url=str(entry["base_url"]), secret="",
            rate=float(entry["rate"]), burst=int(entry["burst"]), slots=int(entry["slots"]),
            entity_rate=float(entry["entity_rate"]),
            extra={k: str(v) for k, v in dict(entry.get("extra", {})).items()})
    found.update(rt.settings.accounts)
    return dict(sorted(found.items()))


def publish_worker(rt: Runtime, name: str, queues: list[str]) -> None:
    """Record that the worker ``name`` consumes ``queues`` (refreshed with its accounts)."""
    rt.redis.hset(keys.WORKERS, name, json.dumps({"queues": sorted(queues), "seen": rt.clock.now()}))


def forget_worker(rt: Runtime, name: str) -> None:
    rt.redis.hdel(keys.WORKERS, name)


def consumers(rt: Runtime, queue: str) -> list[str]:
    """The live workers (refreshed within three rounds) that consume ``queue``."""
    now = rt.clock.now()
    found = []
    for name, raw in rt.redis.hgetall(keys.WORKERS).items():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if queue in entry.get("queues", ()) and now - float(entry.get("seen", 0)) <= 3 * REFRESH:
            found.append(text(name))
    return sorted(found)
