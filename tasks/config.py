"""Configuration, read once from the environment.

Every process of the fleet (workers, scheduler, Flower, the CLI) builds the same
:class:`Settings` from its environment, so a container is configured with env vars
alone. Provider credentials are read here and nowhere else: they never travel in a
task message or a job record (ARCHITECTURE.md, principle 1).

Provider settings follow one pattern::

    INGEST_<PROVIDER>_<SETTING>             the "default" account
    INGEST_<PROVIDER>__<ACCOUNT>__<SETTING> a named account, e.g. INGEST_GCORE__TEAMB__API_KEY

Example::

    >>> s = Settings.from_env({"INGEST_GCORE_API_KEY": "k", "REDIS_URL": "redis://r:6379/0"})
    >>> s.account("gcore", "default").base_url
    'https://api.gcore.com'
"""

from __future__ import annotations

import difflib
import os
import re
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest_fleet import redis_url as redis_urls
from tasks.declare import BUDGET_SETTINGS, Setting
from tasks.errors import ConfigError
from tasks.providers import ADAPTERS, REGISTRY
from tasks.sealed import VAR as SEAL_VAR
from tasks.sealed import Sealer
from tasks.transfer.netguard import allow_nets

__all__ = ["ACCOUNT_NAME_RE", "AccountConfig", "ConfigError", "Settings", "account_var", "credential_of", "declared",
           "settings_listing"]

ACCOUNT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def declared(provider: str) -> dict[str, Setting]:
    """The account settings ``provider``'s adapter declares, by name (tasks.declare)."""
    return {s.name: s for s in ADAPTERS[provider].account_settings}


def credential_of(provider: str) -> str:
    """The setting whose presence makes an account exist (``API_KEY``, or ``CLIENT_SECRET``)."""
    return ADAPTERS[provider].credential


def account_var(provider: str, account: str, setting: str) -> str:
    """The environment variable of one setting of one account."""
    prefix = f"INGEST_{provider.upper()}"
    return f"{prefix}_{setting}" if account == "default" else f"{prefix}__{account.upper()}__{setting}"


def settings_listing(providers: Iterable[str] | None = None) -> str:
    """Every declared account setting of ``providers`` (default: all), as commented
    ``# INGEST_<PROVIDER>_<SETTING>=<default>`` lines with what each is for: the providers'
    part of deploy/.env.example, which a test keeps equal to this (``ingest-fleet settings``)."""
    blocks = []
    for provider in providers or REGISTRY:
        lines = [f"# {ADAPTERS[provider].title or provider}"]
        for spec in declared(provider).values():
            text = " ".join(filter(None, (spec.help, "Required." if spec.required else "")))
            if text and spec.name not in BUDGET_SETTINGS:  # the budget four are explained once, above
                lines += [f"# {line}" for line in textwrap.wrap(text, 96)]
            value = spec.example if (spec.secret or not spec.default) and spec.example else spec.default
            lines.append(f"# {account_var(provider, 'default', spec.name)}={value}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


@dataclass(frozen=True)
class AccountConfig:
    """One account at one provider: where to call it, how to authenticate, its budget."""

    provider: str
    name: str
    base_url: str
    secret: str = field(repr=False)  # the API key, or the OAuth client secret
    rate: float  # requests per second, fleet-wide, for this account
    burst: int
    slots: int = 0  # provider-side jobs in flight at once (0 = unlimited)
    entity_rate: float = 0.0  # requests per second on one entity (0 = unlimited)
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def budget_key(self) -> str:
        return f"{self.provider}:{self.name}"

    def setting(self, name: str) -> str:
        """A provider-specific setting (e.g. ``ACCOUNT_ID``), as configured or its declared
        default; checked at start against its declaration (tasks.declare), so never malformed."""
        name = name.upper()
        return self.extra[name] if name in self.extra else declared(self.provider)[name].default

    def number(self, name: str) -> float:
        return float(self.setting(name))

    def whole(self, name: str) -> int:
        return int(self.setting(name))

    def flag(self, name: str) -> bool:
        return self.setting(name) == "true"

    def var(self, name: str) -> str:
        """The environment variable that sets ``name`` for this account."""
        return account_var(self.provider, self.name, name.upper())


@dataclass(frozen=True)
class SourceS3:
    """Where ``s3://`` sources are read (INGEST_SOURCE_S3_*; unset: the standard AWS chain)."""

    endpoint: str = ""
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)


@dataclass(frozen=True)
class Settings:
    redis_url: str
    source_roots: tuple[Path, ...]
    slice_seconds: float
    visibility_timeout: int
    step_grace: float  # a step's time past its slice before the soft time limit (and again before the hard one)
    lease_seconds: float
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    poll_initial: float
    poll_max: float
    await_deadline: float
    tus_chunk_size: int
    http_connect_timeout: float
    http_read_timeout: float
    short_wait: float
    min_upload_rate: float
    budget_headroom: float
    soft_shutdown_timeout: float
    reconcile_seconds: float
    http_server_timeout: float
    redis_min_replicas: int
    webhook_url: str
    webhook_secret: str = field(repr=False)
    secret_key: str = field(repr=False)  # INGEST_SECRET_KEY: seals secrets at rest (tasks.sealed)
    #: INGEST_CALLBACK_SECRET: signs completion callbacks to applications (tasks.completion)
    callback_secret: str = field(repr=False)
    callback_retry_seconds: float  # how long a failing callback is retried
    job_retention: float  # INGEST_JOB_RETENTION: seconds a terminal job's record is kept
    relay_allow_nets: tuple[Any, ...]  # INGEST_RELAY_ALLOW_NETS: private networks relayed sources may be on
    source_s3: SourceS3  # INGEST_SOURCE_S3_*: where s3:// sources are read
    accounts: Mapping[tuple[str, str], AccountConfig] = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        roots = env.get("INGEST_SOURCE_ROOTS", "")
        slice_seconds = _num(env, "INGEST_SLICE_SECONDS", 60.0)
        grace = _positive(env, "INGEST_STEP_GRACE", 30.0)
        vt = int(_num(env, "INGEST_VISIBILITY_TIMEOUT", 300))
        if vt < slice_seconds * 2 + 30 or vt <= slice_seconds + 2 * grace:
            raise ConfigError(
                f"INGEST_VISIBILITY_TIMEOUT={vt} must be at least 2 x INGEST_SLICE_SECONDS + 30 "
                f"(= {slice_seconds * 2 + 30:g}) and more than the hard time limit, INGEST_SLICE_SECONDS "
                f"+ 2 x INGEST_STEP_GRACE (= {slice_seconds + 2 * grace:g}), so a running slice is never redelivered"
            )
        log_level(env)
        if env.get("INGEST_WEBHOOK_URL") and len(env.get("INGEST_WEBHOOK_SECRET", "")) < 16:
            raise ConfigError("INGEST_WEBHOOK_SECRET must be set (16+ characters) when INGEST_WEBHOOK_URL is set")
        return cls(
            redis_url=_redis_url(env),
            source_roots=tuple(Path(p).resolve() for p in roots.split(os.pathsep) if p.strip()),
            slice_seconds=slice_seconds,
            visibility_timeout=vt,
            step_grace=grace,
            lease_seconds=slice_seconds + grace,
            max_attempts=int(_num(env, "INGEST_MAX_ATTEMPTS", 6)),
            backoff_base=_num(env, "INGEST_BACKOFF_BASE", 1.0),
            backoff_cap=_num(env, "INGEST_BACKOFF_CAP", 120.0),
            poll_initial=_num(env, "INGEST_POLL_INITIAL", 1.0),
            poll_max=_num(env, "INGEST_POLL_MAX", 30.0),
            await_deadline=_num(env, "INGEST_AWAIT_DEADLINE", 6 * 3600.0),
            tus_chunk_size=int(_num(env, "INGEST_TUS_CHUNK_SIZE", 10_000_000)),
            http_connect_timeout=_num(env, "INGEST_HTTP_CONNECT_TIMEOUT", 5.0),
            http_read_timeout=_num(env, "INGEST_HTTP_READ_TIMEOUT", 60.0),
            short_wait=_num(env, "INGEST_SHORT_WAIT", 2.0),
            min_upload_rate=_positive(env, "INGEST_MIN_UPLOAD_RATE", 1_000_000.0),
            budget_headroom=min(0.5, _num(env, "INGEST_BUDGET_HEADROOM", 0.05)),
            soft_shutdown_timeout=_num(env, "INGEST_SOFT_SHUTDOWN_TIMEOUT", slice_seconds + 15),
            reconcile_seconds=_num(env, "INGEST_RECONCILE_SECONDS", 60.0),
            http_server_timeout=_positive(env, "INGEST_HTTP_SERVER_TIMEOUT", 10.0),
            redis_min_replicas=int(_num(env, "INGEST_REDIS_MIN_REPLICAS", 0)),
            webhook_url=env.get("INGEST_WEBHOOK_URL", "").rstrip("/"),
            webhook_secret=env.get("INGEST_WEBHOOK_SECRET", ""),
            secret_key=_secret_key(env),
            callback_secret=_callback_secret(env),
            callback_retry_seconds=_positive(env, "INGEST_CALLBACK_RETRY_SECONDS", 86400.0),
            job_retention=_positive(env, "INGEST_JOB_RETENTION", 30 * 86400.0),
            relay_allow_nets=allow_nets(env.get("INGEST_RELAY_ALLOW_NETS", "")),
            source_s3=SourceS3(env.get("INGEST_SOURCE_S3_ENDPOINT", ""), env.get("INGEST_SOURCE_S3_REGION", ""),
                               env.get("INGEST_SOURCE_S3_ACCESS_KEY_ID", ""),
                               env.get("INGEST_SOURCE_S3_SECRET_ACCESS_KEY", "")),
            accounts=_accounts(env),
        )

    def account(self, provider: str, name: str = "default") -> AccountConfig:
        try:
            return self.accounts[(provider, name)]
        except KeyError:
            raise ConfigError(f"no account {name!r} configured for provider {provider!r}: set "
                              f"{account_var(provider, name, credential_of(provider))}") from None

    def accounts_of(self, provider: str) -> list[str]:
        return sorted(n for p, n in self.accounts if p == provider)


def _callback_secret(env: Mapping[str, str]) -> str:
    value = env.get("INGEST_CALLBACK_SECRET", "")
    if value and len(value) < 16:
        raise ConfigError("INGEST_CALLBACK_SECRET must be at least 16 characters (e.g. openssl rand -hex 32)")
    return value


def _secret_key(env: Mapping[str, str]) -> str:
    """INGEST_SECRET_KEY as given; a malformed one is refused here. Unset is allowed: only the
    workers need it, and they refuse to start without it (tasks.sealed, ``ingest-fleet worker``)."""
    value = env.get(SEAL_VAR, "")
    if value.strip():
        Sealer(value)
    return value


#: Every fleet-wide setting (provider settings are their adapters' declarations, tasks.declare).
FLEET_VARS = frozenset({
    "INGEST_SOURCE_ROOTS", "INGEST_SLICE_SECONDS", "INGEST_STEP_GRACE", "INGEST_VISIBILITY_TIMEOUT",
    "INGEST_MAX_ATTEMPTS", "INGEST_BACKOFF_BASE", "INGEST_BACKOFF_CAP", "INGEST_POLL_INITIAL", "INGEST_POLL_MAX",
    "INGEST_AWAIT_DEADLINE", "INGEST_TUS_CHUNK_SIZE", "INGEST_HTTP_CONNECT_TIMEOUT", "INGEST_HTTP_READ_TIMEOUT",
    "INGEST_SHORT_WAIT", "INGEST_MIN_UPLOAD_RATE", "INGEST_BUDGET_HEADROOM", "INGEST_SOFT_SHUTDOWN_TIMEOUT",
    "INGEST_RECONCILE_SECONDS", "INGEST_HTTP_SERVER_TIMEOUT", "INGEST_REDIS_MIN_REPLICAS", "INGEST_WEBHOOK_URL",
    "INGEST_WEBHOOK_SECRET", "INGEST_SECRET_KEY", "INGEST_CALLBACK_SECRET", "INGEST_CALLBACK_RETRY_SECONDS",
    "INGEST_JOB_RETENTION", "INGEST_LOG_LEVEL", "INGEST_HEARTBEAT_FILE", "INGEST_RELAY_ALLOW_NETS",
    "INGEST_SOURCE_S3_ENDPOINT", "INGEST_SOURCE_S3_REGION", "INGEST_SOURCE_S3_ACCESS_KEY_ID",
    "INGEST_SOURCE_S3_SECRET_ACCESS_KEY",
})
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """A warning for each INGEST_* variable no part of the fleet reads, with the closest known
    name (a typo would otherwise leave the default on, silently). Provider settings are
    checked against their declarations when accounts are read (an unknown one is an error)."""
    providers = {p.upper() for p in REGISTRY}
    known = set(FLEET_VARS) | {account_var(p, "default", s) for p in REGISTRY for s in declared(p)}
    out = []
    for name in sorted(env):
        if not name.startswith("INGEST_") or name in known or name.split("_")[1] in providers:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        out.append(f"{name} is not a setting of ingest-fleet" + (f"; did you mean {close[0]}?" if close else ""))
    return out


def log_level(env: Mapping[str, str]) -> str:
    level = env.get("INGEST_LOG_LEVEL", "INFO").upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"INGEST_LOG_LEVEL={env.get('INGEST_LOG_LEVEL')!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _redis_url(env: Mapping[str, str]) -> str:
    url = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis_urls.check(url)
    except redis_urls.RedisUrlError as exc:
        raise ConfigError(str(exc)) from None
    return url


def _num(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _num(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name}={env.get(name)!r} must be greater than 0")
    return value


def _accounts(env: Mapping[str, str]) -> dict[tuple[str, str], AccountConfig]:
    """Collect every configured (provider, account): an account exists once its credential is set.
    A variable under a provider's prefix that its adapter does not declare is refused (a typo
    must not leave a setting silently at its default)."""
    raw: dict[tuple[str, str], dict[str, str]] = {}
    for var, value in env.items():
        if not var.startswith("INGEST_"):
            continue
        rest = var[len("INGEST_"):]
        for provider in REGISTRY:
            prefix = provider.upper()
            if rest.startswith(prefix + "__"):
                account, sep, setting = rest[len(prefix) + 2:].partition("__")
            elif rest.startswith(prefix + "_"):
                account, sep, setting = "default", "_", rest[len(prefix) + 1:]
            else:
                continue
            if not sep or setting not in declared(provider):
                raise ConfigError(f"{var} is not a setting of {provider}; its settings are "
                                  f"{', '.join(declared(provider))} (ingest-fleet settings lists them)")
            raw.setdefault((provider, account.lower()), {})[setting] = value
            break
    accounts = {}
    for (provider, name), values in raw.items():
        credential = credential_of(provider)
        if not values.get(credential):
            continue
        if not ACCOUNT_NAME_RE.match(name):
            raise ConfigError(f"{account_var(provider, name, credential)}: account name {name!r} must be 1-32 "
                              "of a-z, 0-9, _ and -")
        # A named account inherits the default account's settings (not its credential) unless set.
        given = {k: v for k, v in raw.get((provider, "default"), {}).items() if v and k != credential}
        given.update({k: v for k, v in values.items() if v})
        merged: dict[str, str] = {}
        for spec in declared(provider).values():
            var = account_var(provider, name if spec.name in values else "default", spec.name)
            if spec.name in given:
                merged[spec.name] = spec.check(var, given[spec.name])
            elif spec.required:
                raise ConfigError(f"{account_var(provider, name, spec.name)} is not set; {provider} needs it "
                                  f"with {account_var(provider, name, credential)}")
            else:
                merged[spec.name] = spec.default
        accounts[(provider, name)] = AccountConfig(
            provider=provider,
            name=name,
            base_url=merged["BASE_URL"].rstrip("/"),
            secret=merged[credential],
            rate=float(merged["RATE"]),
            burst=max(1, int(merged["BURST"])),
            slots=int(merged["SLOTS"]),
            entity_rate=float(merged["ENTITY_RATE"]),
            extra={k: v for k, v in merged.items() if k not in (credential, "BASE_URL", *BUDGET_SETTINGS)},
        )
    return accounts
