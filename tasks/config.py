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

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Each provider's public API and budget, from shared/design/providers.md; every value can be
#: overridden per account. ``rate`` = requests/s for the account across the fleet (0 = no
#: limit), ``slots`` = provider-side jobs submitted and not yet terminal (0 = no limit),
#: ``entity_rate`` = requests/s on one entity (Brightcove: 10 a minute on one video).
PROVIDER_DEFAULTS: dict[str, dict[str, str]] = {
    # About 4 req/s (third-party figure; Gcore's own page is not public).
    "gcore": {"base_url": "https://api.gcore.com", "rate": "4", "burst": "1", "slots": "0", "entity_rate": "0"},
    # 20 req/s per account across CMS and Dynamic Ingest, <= 10 requests a minute on one video,
    # 200 concurrent normal-priority ingest jobs (Dynamic Ingest best practices).
    "brightcove": {"base_url": "https://cms.api.brightcove.com", "rate": "20", "burst": "1", "slots": "200",
                   "entity_rate": str(10 / 60), "credential": "CLIENT_SECRET", "required": "CLIENT_ID,ACCOUNT_ID",
                   "oauth_url": "https://oauth.brightcove.com", "ingest_url": "https://ingest.api.brightcove.com"},
    # No published numbers: conservative defaults, to be set per account.
    "once": {"base_url": "https://api.unicornmedia.com", "rate": "5", "burst": "1", "slots": "0", "entity_rate": "0",
             "required": "DOMAIN_ID,CATALOG_ID"},
    # API_VERSION: the Accept-Version every call pins (ittybit/sdk-php v1.0.0 pins 2025-08-20).
    "ittybit": {"base_url": "https://api.ittybit.com", "rate": "5", "burst": "1", "slots": "0", "entity_rate": "0",
                "api_version": "2025-08-20"},
    # Server-defined limit announced in X-RateLimit-* on every answer: learned, not configured.
    # PROFILE: the encoding profile (a UUID from GET /encoding/profiles) every job uses.
    "ingestio": {"base_url": "https://api.ingest.io", "rate": "0", "burst": "1", "slots": "0", "entity_rate": "0",
                 "required": "PROFILE"},
}

#: The settings a provider account understands (upper-case env suffixes). An account exists
#: once its credential is set (``API_KEY``, or ``CLIENT_SECRET`` where the provider uses OAuth).
ACCOUNT_SETTINGS = ("API_KEY", "CLIENT_SECRET", "CLIENT_ID", "ACCOUNT_ID", "BASE_URL", "OAUTH_URL", "INGEST_URL",
                    "S3_ENDPOINT", "PROFILE", "CAPTURE_IMAGES", "SINGLE_PUT_MAX", "PART_SIZE", "CHUNK_SIZE",
                    "DOMAIN_ID", "CATALOG_ID", "STAGING_BUCKET", "STAGING_REGION", "STAGING_ACCESS_KEY_ID",
                    "STAGING_SECRET_ACCESS_KEY", "NOTIFY_DEADLINE", "API_VERSION", "LOCK_WAIT",
                    "CUSTOM_FIELDS", "LOW_SLOTS", "PUBLISH",
                    "RATE", "BURST", "SLOTS", "ENTITY_RATE")
_BUDGET_SETTINGS = ("RATE", "BURST", "SLOTS", "ENTITY_RATE")
_META = ("CREDENTIAL", "REQUIRED")
ACCOUNT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


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

    def setting(self, name: str, default: str = "") -> str:
        """A provider-specific setting (e.g. ``ACCOUNT_ID``), as configured or defaulted."""
        return self.extra.get(name.upper()) or default


@dataclass(frozen=True)
class Settings:
    redis_url: str
    source_roots: tuple[Path, ...]
    slice_seconds: float
    visibility_timeout: int
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
    webhook_url: str
    webhook_secret: str = field(repr=False)
    accounts: Mapping[tuple[str, str], AccountConfig] = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        roots = env.get("INGEST_SOURCE_ROOTS", "")
        slice_seconds = _num(env, "INGEST_SLICE_SECONDS", 60.0)
        vt = int(_num(env, "INGEST_VISIBILITY_TIMEOUT", 300))
        if vt < slice_seconds * 2 + 30:
            raise ConfigError(
                f"INGEST_VISIBILITY_TIMEOUT={vt} must be at least 2 x INGEST_SLICE_SECONDS + 30 "
                f"(= {slice_seconds * 2 + 30:g}) so a running slice is never redelivered"
            )
        if env.get("INGEST_WEBHOOK_URL") and len(env.get("INGEST_WEBHOOK_SECRET", "")) < 16:
            raise ConfigError("INGEST_WEBHOOK_SECRET must be set (16+ characters) when INGEST_WEBHOOK_URL is set")
        return cls(
            redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            source_roots=tuple(Path(p).resolve() for p in roots.split(os.pathsep) if p.strip()),
            slice_seconds=slice_seconds,
            visibility_timeout=vt,
            lease_seconds=slice_seconds + 30,
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
            webhook_url=env.get("INGEST_WEBHOOK_URL", "").rstrip("/"),
            webhook_secret=env.get("INGEST_WEBHOOK_SECRET", ""),
            accounts=_accounts(env),
        )

    def account(self, provider: str, name: str = "default") -> AccountConfig:
        try:
            return self.accounts[(provider, name)]
        except KeyError:
            raise ConfigError(
                f"no account {name!r} configured for provider {provider!r}: set "
                + (
                    f"INGEST_{provider.upper()}_{_credential(provider)}"
                    if name == "default"
                    else f"INGEST_{provider.upper()}__{name.upper()}__{_credential(provider)}"
                )
            ) from None

    def accounts_of(self, provider: str) -> list[str]:
        return sorted(n for p, n in self.accounts if p == provider)


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


def _credential(provider: str) -> str:
    return PROVIDER_DEFAULTS[provider].get("credential", "API_KEY")


def _accounts(env: Mapping[str, str]) -> dict[tuple[str, str], AccountConfig]:
    """Collect every configured (provider, account): an account exists once it has a key."""
    raw: dict[tuple[str, str], dict[str, str]] = {}
    for var, value in env.items():
        if not var.startswith("INGEST_"):
            continue
        rest = var[len("INGEST_"):]
        for provider in PROVIDER_DEFAULTS:
            prefix = provider.upper()
            if rest.startswith(prefix + "__"):
                account, sep, setting = rest[len(prefix) + 2:].partition("__")
                if sep and setting in ACCOUNT_SETTINGS:
                    raw.setdefault((provider, account.lower()), {})[setting] = value
            elif rest.startswith(prefix + "_") and rest[len(prefix) + 1:] in ACCOUNT_SETTINGS:
                raw.setdefault((provider, "default"), {})[rest[len(prefix) + 1:]] = value
    accounts = {}
    for (provider, name), values in raw.items():
        credential = _credential(provider)
        if not values.get(credential):
            continue
        # A named account inherits the default account's endpoint and budget unless overridden.
        merged = {k.upper(): v for k, v in PROVIDER_DEFAULTS[provider].items()}
        merged.update({k: v for k, v in raw.get((provider, "default"), {}).items() if v and k != credential})
        merged.update({k: v for k, v in values.items() if v})
        var = f"INGEST_{provider.upper()}" + ("_" if name == "default" else f"__{name.upper()}__")
        if not ACCOUNT_NAME_RE.match(name):
            raise ConfigError(f"{var}{credential}: account name {name!r} must be 1-32 of a-z, 0-9, _ and -")
        for required in filter(None, merged.get("REQUIRED", "").split(",")):
            if not merged.get(required):
                raise ConfigError(f"{var}{required} is not set; {provider} needs it with {var}{credential}")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}|latest", merged.get("API_VERSION", "latest")):
            raise ConfigError(f"{var}API_VERSION={merged['API_VERSION']!r} is not an API version; set a date such as "
                              f"{PROVIDER_DEFAULTS[provider].get('api_version', '2025-08-20')}, or latest")
        try:
            rate, burst = float(merged["RATE"]), int(float(merged["BURST"]))
            slots, entity_rate = int(float(merged["SLOTS"])), float(merged["ENTITY_RATE"])
        except ValueError:
            raise ConfigError(f"{var}RATE, BURST, SLOTS and ENTITY_RATE must be numbers") from None
        if min(rate, burst, slots, entity_rate) < 0:
            raise ConfigError(f"{var}RATE, BURST, SLOTS and ENTITY_RATE must not be negative")
        accounts[(provider, name)] = AccountConfig(
            provider=provider,
            name=name,
            base_url=merged["BASE_URL"].rstrip("/"),
            secret=merged[credential],
            rate=rate,
            burst=max(1, burst),
            slots=slots,
            entity_rate=entity_rate,
            extra={k: v for k, v in merged.items()
                   if k not in (credential, "BASE_URL", *_BUDGET_SETTINGS, *_META)},
        )
    return accounts
