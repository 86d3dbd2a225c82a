"""Fault injection and the emulated rate limit, configured per provider at runtime.

A provider's configuration (``PUT /_sandbox/faults`` replaces it whole)::

    {
      "provider": "gcore",
      "seed": 7,                       # optional: re-seeds this provider's RNG (default: Sandbox seed)
      "latency_ms": 0,                 # added before answering
      "error_5xx_rate": 0.0,           # answer 500/502/503
      "rate_429": 0.0,                 # answer 429 (+ Retry-After: <retry_after>)
      "retry_after": 1,                # seconds, or null for no Retry-After header on rate_429
      "drop_patch_rate": 0.0,          # cut a PATCH mid-body; the bytes received so far are kept
      "processing_fail_rate": 0.0,     # a stage (e.g. "gcore.processing") ends in failure
      "rate_limit_rps": 0,             # the provider's own limit; over it: 429 + Retry-After; 0 = off
      "processing_seconds": null,      # override the Sandbox's processing time; null = its default
      "rules": [...]                   # scripted faults, see below
    }

Each knob applies to every endpoint of the provider unless its endpoint list is given:
``latency_endpoints``, ``error_5xx_endpoints``, ``rate_429_endpoints``,
``drop_patch_endpoints``, ``processing_fail_endpoints``, ``rate_limit_endpoints``, e.g.
``{"latency_ms": 150, "latency_endpoints": ["gcore.tus_patch"]}``. Rates are
probabilities in [0, 1], drawn from a seeded RNG so a run can be replayed.

Scripted rules make tests deterministic: the first rule that matches a request's endpoint
and still has ``times`` left decides its fate, and ``times`` goes down by one::

    {"endpoint": "gcore.tus_patch", "status": 429, "retry_after": 1, "times": 2, "body": null}
    {"endpoint": "gcore.tus_patch", "action": "drop", "after_bytes": 3000000, "times": 1}
    {"endpoint": "gcore.get_video", "action": "hang", "seconds": 30, "times": 1}
    {"endpoint": "gcore.processing", "action": "fail", "times": 1}

``status`` answers with that status and ``body`` (JSON; a string is sent as text; null
gives ``{"error": "<reason phrase>"}``). ``drop`` reads ``after_bytes`` of the body (the
handler keeps them), then closes the connection abruptly; on a request without a body the
handler runs and its answer is lost. ``hang`` accepts the request and stays silent for
``seconds``, then closes without answering, to exercise client timeouts. ``fail`` applies
to the non-HTTP stages an emulator declares (Gcore: ``gcore.processing``). ``corrupt`` (the
``s3`` endpoints and ``*.tus_patch``) flips one byte of the request body on its way in, as a
damaged link would: S3 refuses it when the client sent a ``Content-MD5``, a TUS server
offering the checksum extension when the PATCH carries ``Upload-Checksum`` (460), and both
store it damaged otherwise.

Order for a request: a scripted rule, else the rate limit, else ``rate_429``, else
``error_5xx_rate``, else ``drop_patch_rate``; ``latency_ms`` is added to whichever applies.

Per provider (:class:`FaultSpec`): ``defaults`` are the values a setting takes when a
configuration leaves it out, so a provider's own limits survive a ``PUT`` and come back on
reset (Brightcove: ``rate_limit_rps`` 20 on its REST endpoints); ``settings`` are extra
entries the provider's emulator reads at runtime (Brightcove: ``token_ttl``,
``per_video_per_minute``, ``callback_duplicates``; Ittybit: ``shape``, ``signature_ttl``,
``webhook_duplicates``); ``error_format`` renders injected
errors that carry no rule ``body`` in the provider's own error format (Brightcove's JSON
array, S3's XML) instead of ``{"error": "<reason phrase>"}``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .web import HttpError, Response

#: Each knob and the key of its optional endpoint list.
KNOBS = {
    "latency_ms": "latency_endpoints",
    "error_5xx_rate": "error_5xx_endpoints",
    "rate_429": "rate_429_endpoints",
    "drop_patch_rate": "drop_patch_endpoints",
    "processing_fail_rate": "processing_fail_endpoints",
    "rate_limit_rps": "rate_limit_endpoints",
}
RATES = ("error_5xx_rate", "rate_429", "drop_patch_rate", "processing_fail_rate")
OTHER_SETTINGS = ("provider", "seed", "retry_after", "processing_seconds", "rules")
ACTIONS = ("drop", "hang", "fail", "corrupt")
SERVER_ERRORS = (500, 502, 503)


class FaultConfigError(ValueError):
    """A fault configuration is invalid; the message names the offending field."""


@dataclass(frozen=True)
class Setting:
    """A provider-specific entry of its fault config, read by its emulator at runtime.

    ``kind`` is ``bool``, ``int`` (a whole number >= 0) or ``str`` (one of ``choices``);
    ``default`` None makes null a valid value too, meaning "the emulator's own default".
    """

    default: Any
    kind: type
    choices: tuple[str, ...] = ()

    def check(self, name: str, value: Any) -> None:
        if value is None and self.default is None:
            return
        or_null = ", or null" if self.default is None else ""
        if self.kind is bool and not isinstance(value, bool):
            raise FaultConfigError(f"{name} must be true or false")
        if self.kind is int and not _is_whole(value):
            raise FaultConfigError(f"{name} must be an integer >= 0{or_null}")
        if self.kind is str and (not isinstance(value, str) or value not in self.choices):
            raise FaultConfigError(f"{name} must be one of {', '.join(map(repr, self.choices))}{or_null}")


@dataclass(frozen=True)
class FaultSpec:
    """What a provider's fault configuration may name, and its provider-specific parts."""

    routes: frozenset[str]  # endpoint names
    stages: frozenset[str] = frozenset()  # non-HTTP stages (``action: "fail"`` targets)
    settings: Mapping[str, Setting] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # values taken when a config omits them
    error_format: Callable[[int], Response] | None = None  # the provider's error body for a status


@dataclass(frozen=True)
class Knob:
    value: float = 0.0
    endpoints: frozenset[str] | None = None

    def applies(self, endpoint: str) -> bool:
        return self.value > 0 and (self.endpoints is None or endpoint in self.endpoints)


@dataclass
class Rule:
    endpoint: str
    times: int
    status: int | None = None
    body: Any = None
    retry_after: int | None = None
    action: str | None = None
    after_bytes: int = 0
    seconds: float = 30.0

    @property
    def fault_name(self) -> str:
        return f"rule:{self.status}" if self.status is not None else f"rule:{self.action}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"endpoint": self.endpoint, "times": self.times}
        if self.status is not None:
            out.update(status=self.status, body=self.body, retry_after=self.retry_after)
        else:
            out["action"] = self.action
            if self.action == "drop":
                out["after_bytes"] = self.after_bytes
            elif self.action == "hang":
                out["seconds"] = self.seconds
        return out


@dataclass(frozen=True)
class Decision:
    """What the server does with one request instead of (or before) running its handler."""

    fault: str | None = None
    latency: float = 0.0  # seconds to wait first
    response: Response | None = None  # answer this instead of running the handler
    hang: float | None = None  # stay silent this long, then close
    drop_after: int | None = None  # cut the body after this many bytes
    corrupt: bool = False  # damage the body on its way in (one byte flipped), as a bad link would


def error_response(status: int, body: Any = None, retry_after: int | None = None) -> Response:
    """``body`` None gives ``{"error": "<reason phrase>"}``; a str is sent as text."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return HttpError(status, body, headers).response()


class ProviderFaults:
    """The faults and rate limit of one provider. Thread-safe."""

    def __init__(self, provider: str, spec: FaultSpec, seed: int):
        self.provider = provider
        self._routes = set(spec.routes)
        self._stages = set(spec.stages)
        self._settings = dict(spec.settings)
        self._defaults = dict(spec.defaults)
        self._error_format = spec.error_format
        self._default_seed = seed
        # Reentrant: ``decide`` renders injected errors under it, and an emulator's
        # ``error_format`` may read its settings (Ittybit's response shape).
        self._lock = threading.RLock()
        self.configure({})

    # -- configuration -------------------------------------------------------------

    def configure(self, config: dict[str, Any]) -> None:
        """Replace the whole configuration; nothing changes if ``config`` is invalid."""
        if not isinstance(config, dict):
            raise FaultConfigError("the fault configuration must be a JSON object")
        unknown = set(config) - set(KNOBS) - set(KNOBS.values()) - set(OTHER_SETTINGS) - set(self._settings)
        if unknown:
            raise FaultConfigError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        config = {**self._defaults, **config}
        settings = {name: config.get(name, setting.default) for name, setting in self._settings.items()}
        for name, value in settings.items():
            self._settings[name].check(name, value)
        knobs = {name: self._knob(name, config.get(name, 0), endpoints, config.get(endpoints))
                 for name, endpoints in KNOBS.items()}
        retry_after = config.get("retry_after", 1)
        if retry_after is not None and not _is_whole(retry_after):
            raise FaultConfigError("retry_after must be whole seconds >= 0, or null")
        processing_seconds = config.get("processing_seconds")
        if processing_seconds is not None and not _is_number(processing_seconds, minimum=0):
            raise FaultConfigError("processing_seconds must be a number of seconds >= 0, or null")
        seed = config.get("seed", self._default_seed)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise FaultConfigError("seed must be an integer")
        rules_raw = config.get("rules", [])
        if not isinstance(rules_raw, list):
            raise FaultConfigError("rules must be a list")
        rules = [self._rule(i, raw) for i, raw in enumerate(rules_raw)]
        with self._lock:
            self._knobs = knobs
            self._retry_after = retry_after
            #: Overrides the sandbox's processing time for this provider when not None.
            self.processing_seconds = processing_seconds
            self._seed = seed
            self._rng = random.Random(f"{seed}:{self.provider}")
            self._rules = rules
            self._setting_values = settings
            rps = knobs["rate_limit_rps"].value
            self._tokens = max(1.0, rps)
            self._refilled = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {}
            for name, endpoints_key in KNOBS.items():
                knob = self._knobs[name]
                out[name] = knob.value
                out[endpoints_key] = sorted(knob.endpoints) if knob.endpoints is not None else None
            out.update(seed=self._seed, retry_after=self._retry_after, processing_seconds=self.processing_seconds,
                       rules=[r.to_json() for r in self._rules], **self._setting_values)
            return out

    def setting(self, name: str) -> Any:
        """The current value of a provider-specific setting (see :class:`Setting`)."""
        with self._lock:
            return self._setting_values[name]

    def _knob(self, name: str, value: Any, endpoints_key: str, endpoints: Any) -> Knob:
        if not _is_number(value, minimum=0) or (name in RATES and value > 1):
            bound = "a probability in [0, 1]" if name in RATES else "a number >= 0"
            raise FaultConfigError(f"{name} must be {bound}")
        if endpoints is None:
            return Knob(float(value))
        if not isinstance(endpoints, list):
            raise FaultConfigError(f"{endpoints_key} must be a list of endpoint names, or null")
        for endpoint in endpoints:
            self._check_endpoint(endpoints_key, endpoint, self._routes | self._stages)
        return Knob(float(value), frozenset(endpoints))

    def _rule(self, index: int, raw: Any) -> Rule:
        where = f"rules[{index}]"
        if not isinstance(raw, dict):
            raise FaultConfigError(f"{where} must be an object")
        times = raw.get("times", 1)
        if not _is_whole(times) or times < 1:
            raise FaultConfigError(f"{where}.times must be an integer >= 1")
        status, action = raw.get("status"), raw.get("action")
        if (status is None) == (action is None):
            raise FaultConfigError(f"{where} needs exactly one of 'status' or 'action'")
        endpoint = raw.get("endpoint")
        if status is not None:
            if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
                raise FaultConfigError(f"{where}.status must be an HTTP status 200..599")
            retry_after = raw.get("retry_after")
            if retry_after is not None and not _is_whole(retry_after):
                raise FaultConfigError(f"{where}.retry_after must be whole seconds >= 0")
            self._check_endpoint(f"{where}.endpoint", endpoint, self._routes)
            return Rule(endpoint, times, status=status, body=raw.get("body"), retry_after=retry_after)
        if action not in ACTIONS:
            raise FaultConfigError(f"{where}.action must be one of {', '.join(ACTIONS)}")
        self._check_endpoint(f"{where}.endpoint", endpoint, self._stages if action == "fail" else self._routes)
        if action == "corrupt" and self.provider != "s3" and not endpoint.endswith(".tus_patch"):
            raise FaultConfigError(f"{where}.action corrupt applies to the s3 endpoints and TUS PATCHes only")
        after_bytes, seconds = raw.get("after_bytes", 0), raw.get("seconds", 30.0)
        if not _is_whole(after_bytes):
            raise FaultConfigError(f"{where}.after_bytes must be an integer >= 0")
        if not _is_number(seconds, minimum=0):
            raise FaultConfigError(f"{where}.seconds must be a number >= 0")
        return Rule(endpoint, times, action=action, after_bytes=after_bytes, seconds=float(seconds))

    def _check_endpoint(self, where: str, endpoint: Any, known: set[str]) -> None:
        if endpoint not in known:
            raise FaultConfigError(f"{where}: unknown endpoint {endpoint!r} for {self.provider} "
                                   f"(known: {', '.join(sorted(known))})")

    # -- decisions -----------------------------------------------------------------

    def decide(self, endpoint: str, method: str, content_length: int) -> Decision:
        """How to treat one incoming request to ``endpoint``."""
        with self._lock:
            knobs = self._knobs
            latency = knobs["latency_ms"].value / 1000 if knobs["latency_ms"].applies(endpoint) else 0.0
            rule = self._take_rule(endpoint, stage=False)
            if rule is not None:
                if rule.status is not None:
                    return Decision(rule.fault_name, latency, self._error(rule.status, rule.retry_after, rule.body))
                if rule.action == "hang":
                    return Decision(rule.fault_name, latency, hang=rule.seconds)
                if rule.action == "corrupt":
                    return Decision(rule.fault_name, latency, corrupt=True)
                return Decision(rule.fault_name, latency, drop_after=rule.after_bytes)
            wait = self._rate_limited(endpoint)
            if wait is not None:
                return Decision("rate_limit_rps", latency, self._error(429, wait))
            if self._hit("rate_429", endpoint):
                return Decision("rate_429", latency, self._error(429, self._retry_after))
            if self._hit("error_5xx_rate", endpoint):
                return Decision("error_5xx_rate", latency, self._error(self._rng.choice(SERVER_ERRORS)))
            if method == "PATCH" and content_length > 0 and self._hit("drop_patch_rate", endpoint):
                return Decision("drop_patch_rate", latency, drop_after=int(self._rng.random() * content_length))
            return Decision("latency_ms" if latency else None, latency)

    def stage_fails(self, stage: str) -> str | None:
        """Whether a non-HTTP stage (e.g. ``gcore.processing``) fails; the fault name if so."""
        with self._lock:
            rule = self._take_rule(stage, stage=True)
            if rule is not None:
                return rule.fault_name
            return "processing_fail_rate" if self._hit("processing_fail_rate", stage) else None

    def _error(self, status: int, retry_after: int | None = None, body: Any = None) -> Response:
        """An injected error: a rule's ``body`` if it has one, else the provider's error format."""
        if body is not None or self._error_format is None:
            return error_response(status, body, retry_after)
        response = self._error_format(status)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    def _take_rule(self, endpoint: str, *, stage: bool) -> Rule | None:
        for rule in self._rules:
            if rule.endpoint == endpoint and (rule.action == "fail") == stage:
                rule.times -= 1
                if rule.times == 0:
                    self._rules.remove(rule)
                return rule
        return None

    def _hit(self, knob: str, endpoint: str) -> bool:
        k = self._knobs[knob]
        return k.applies(endpoint) and self._rng.random() < k.value

    def _rate_limited(self, endpoint: str) -> int | None:
        """Token bucket of ``rate_limit_rps`` tokens/s, burst of one second's worth.

        Returns None when the request may pass (and takes its token), else the whole
        seconds until a token is free, for Retry-After.
        """
        limit = self._knobs["rate_limit_rps"]
        if not limit.applies(endpoint):
            return None
        rps = limit.value
        now = time.monotonic()
        self._tokens = min(max(1.0, rps), self._tokens + (now - self._refilled) * rps)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        return max(1, math.ceil((1 - self._tokens) / rps))


class FaultRegistry:
    """The :class:`ProviderFaults` of every provider, addressed by provider name."""

    def __init__(self, providers: dict[str, FaultSpec], seed: int):
        self._providers = {name: ProviderFaults(name, spec, seed) for name, spec in providers.items()}

    def __getitem__(self, provider: str) -> ProviderFaults:
        return self._providers[provider]

    def configure(self, config: Any) -> None:
        if not isinstance(config, dict) or config.get("provider") not in self._providers:
            raise FaultConfigError(f"'provider' must be one of {', '.join(sorted(self._providers))}")
        self._providers[config["provider"]].configure(config)

    def snapshot(self) -> dict[str, Any]:
        return {name: faults.snapshot() for name, faults in self._providers.items()}

    def reset(self) -> None:
        for faults in self._providers.values():
            faults.configure({})


def _is_whole(value: Any) -> bool:
    """An int >= 0 (HTTP's Retry-After is whole seconds; JSON true is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: Any, *, minimum: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= minimum

