"""The ingest intent and the checks every submitter makes at the door, on both sides: the
client checks against what the fleet publishes (its providers' capabilities and the accounts
its workers serve); the fleet (``tasks.intent``) checks the same against its adapters, then
what only it can see (``INGEST_SOURCE_ROOTS``, each provider's own rules).

An intent is refused before anything is stored when any field is wrong, with an
:class:`~ingest_fleet.errors.IntentRefused` naming the field and the fix.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from ingest_fleet.errors import IntentRefused
from ingest_fleet.urls import secrets_in

PRIORITIES = ("high", "normal", "low")
TITLE_MAX = 255
DESCRIPTION_MAX = 4000
URL_MAX = 2048
KEY_RE = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")
META_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
META_MAX_ITEMS = 50
META_VALUE_MAX = 1024
TAGS_MAX = 100
#: URL schemes the fleet reads itself to relay a source (tasks.transfer.relay).
RELAY_SCHEMES = ("http", "https", "s3")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "dict": dict}


@dataclass(frozen=True)
class ProviderCaps:
    """What one provider accepts: URL schemes it can fetch, whether it takes a pushed file,
    its intent options by name and type."""

    name: str
    pull_schemes: frozenset[str]
    push: bool
    options: Mapping[str, type]

    def to_json(self) -> dict[str, Any]:
        return {"pull_schemes": sorted(self.pull_schemes), "push": self.push,
                "options": {k: v.__name__ for k, v in self.options.items()}}

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> ProviderCaps:
        return cls(name, frozenset(data.get("pull_schemes", ())), bool(data.get("push")),
                   {k: _TYPES.get(v, str) for k, v in dict(data.get("options", {})).items()})


def text(field_name: str, value: Any, *, limit: int, required: bool) -> str:
    """``value`` as checked text: a str, valid UTF-8, no control characters, within ``limit``."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise IntentRefused(field_name, f"must be text, got {type(value).__name__}")
    # Arguments that were not valid UTF-8 arrive as lone surrogates (surrogateescape).
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise IntentRefused(field_name, "is not valid UTF-8 text; re-encode it as UTF-8") from None
    if _CONTROL.search(value):
        raise IntentRefused(field_name, "contains control characters; remove them")
    if required and not value.strip():
        raise IntentRefused(field_name, "is empty; give a non-empty value")
    if len(value) > limit:
        raise IntentRefused(field_name, f"is {len(value)} characters long; the limit is {limit}")
    return value


def fingerprint(info: os.stat_result) -> dict[str, int]:
    """What identifies a local file's content as submitted (st_dev is left out: it differs
    between hosts that mount one shared volume). Workers compare it at every open."""
    return {"size": info.st_size, "ino": info.st_ino, "mtime_ns": info.st_mtime_ns}


def check_local_file(raw: str) -> tuple[str, int, dict[str, int]]:
    """A local source as this host sees it: (resolved path, size, fingerprint)."""
    text("source", raw, limit=4096, required=True)
    resolved = Path(raw).expanduser().resolve()
    try:
        info = resolved.stat()
    except FileNotFoundError:
        raise IntentRefused("source", f"file not found: {raw}; give an existing file or an http(s) URL") from None
    except OSError as exc:
        raise IntentRefused("source", f"cannot read {raw}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        raise IntentRefused("source", f"{raw} is a directory; give a video file")
    if not stat.S_ISREG(info.st_mode):
        raise IntentRefused("source", f"{raw} is not a regular file")
    if info.st_size == 0:
        raise IntentRefused("source", f"{raw} is empty")
    if not os.access(resolved, os.R_OK):
        raise IntentRefused("source", f"{raw} is not readable by this user")
    return str(resolved), info.st_size, fingerprint(info)


def check_callback_url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    url = text("callback_url", value, limit=URL_MAX, required=True).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise IntentRefused("callback_url", f"must be an http(s) URL with a host, got {url[:80]!r}")
    if secrets_in(url):
        raise IntentRefused("callback_url", "carries credentials, which would be kept and shown with the job; "
                                            "check the X-Ingest-Fleet-Signature header instead")
    return url


@dataclass
class Intent:
    """What an application asks for: put ``source`` into ``provider``/``account``."""

    provider: str
    source: str
    title: str | None = None
    description: str = ""
    account: str = "default"
    idempotency_key: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    priority: str = "normal"
    options: dict[str, Any] = field(default_factory=dict)  # provider-specific, e.g. Ittybit's folder
    callback_url: str | None = None  # POSTed the signed job record on each terminal state
    relay: bool = False  # read the URL in the fleet and push it, even where the provider could fetch it

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        if not isinstance(data, Mapping):
            raise IntentRefused("intent", f"must be a mapping of fields, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise IntentRefused(unknown[0], f"is not an intent field; known fields: {', '.join(sorted(known))}")
        for required in ("provider", "source"):
            if not data.get(required):
                raise IntentRefused(required, "is required")
        return cls(**dict(data))

    @property
    def is_url(self) -> bool:
        return isinstance(self.source, str) and "://" in self.source


@dataclass(frozen=True)
class Checked:
    """An intent that passed the checks both sides make; ``source`` is the URL, or the local
    path as given (each side then checks the file as it sees it)."""

    provider: str
    account: str
    source: str
    mode: str
    title: str
    description: str
    idempotency_key: str | None
    metadata: dict[str, str]
    tags: list[str]
    priority: str
    options: dict[str, Any]
    callback_url: str | None
    relay: bool  # a URL the fleet reads and pushes (mode "push" with a URL source)

    def digest_fields(self, source: str) -> dict[str, Any]:
        """The fields that make two intents the same (``source`` as the submitter resolved it)."""
        fields = {"provider": self.provider, "account": self.account, "source": source, "title": self.title,
                  "description": self.description, "metadata": self.metadata, "tags": self.tags,
                  "priority": self.priority, "options": self.options, "callback_url": self.callback_url}
        return {**fields, "relay": True} if self.relay else fields


def check(intent: Intent, providers: Mapping[str, ProviderCaps], accounts: Collection[tuple[str, str]],
          *, account_hint: Callable[[str, str], str] | None = None) -> Checked:
    """Every check that needs no file system and no provider credential. ``providers`` are the
    providers served, ``accounts`` the (provider, account) pairs served; ``account_hint(provider,
    account)`` is added to the refusal of an unknown account (how to make it known)."""
    provider = (intent.provider or "").strip().lower() if isinstance(intent.provider, str) else ""
    if provider not in providers:
        served = ", ".join(sorted(providers)) or "none (no worker has registered yet)"
        raise IntentRefused("provider", f"unknown provider {intent.provider!r}; choose one of: {served}")
    caps = providers[provider]
    account = text("account", intent.account or "default", limit=64, required=True).lower()
    if (provider, account) not in accounts:
        raise IntentRefused("account", f"no account {account!r} is served for provider {provider!r}"
                            + (f": {account_hint(provider, account)}" if account_hint else ""))

    if not isinstance(intent.source, str) or not intent.source.strip():
        raise IntentRefused("source", "is required: a file path or a URL")
    relay = False
    if intent.is_url:
        source = _check_url_shape(intent.source)
        scheme = urlsplit(source).scheme.lower()
        relay = bool(intent.relay) or scheme not in caps.pull_schemes or bool(secrets_in(source))
        if not relay:
            mode = "pull"
        elif not caps.push:
            raise IntentRefused("source", f"{caps.name} takes no pushed file, so the fleet cannot relay this URL "
                                          "to it; give a URL it fetches itself")
        elif scheme not in RELAY_SCHEMES:
            raise IntentRefused("source", f"URL scheme {scheme!r} is not supported: {caps.name} fetches "
                                          f"{', '.join(sorted(caps.pull_schemes)) or 'no URL'}, the fleet relays "
                                          f"{', '.join(RELAY_SCHEMES)}")
        else:
            mode = "push"
    else:
        source, mode = intent.source, "push"
        if not caps.push:
            raise IntentRefused("source", f"{provider} can only pull from a URL; give an http(s) URL")

    default_title = Path(urlsplit(source).path if "://" in source else source).name or "untitled"
    title = text("title", intent.title if intent.title is not None else default_title, limit=TITLE_MAX, required=True)
    description = text("description", intent.description, limit=DESCRIPTION_MAX, required=False)

    key = intent.idempotency_key
    if key is not None and (not isinstance(key, str) or not KEY_RE.match(key)):
        raise IntentRefused("idempotency_key", "must be 1-128 characters of letters, digits and ._:@/-")

    if not isinstance(intent.metadata, Mapping):
        raise IntentRefused("metadata", "must be a mapping of text keys to text values")
    if len(intent.metadata) > META_MAX_ITEMS:
        raise IntentRefused("metadata", f"has {len(intent.metadata)} entries; the limit is {META_MAX_ITEMS}")
    metadata = {}
    for k, v in intent.metadata.items():
        if not isinstance(k, str) or not META_KEY_RE.match(k):
            raise IntentRefused(f"metadata.{k}", "keys must be 1-64 characters of letters, digits and _.-")
        metadata[k] = text(f"metadata.{k}", v, limit=META_VALUE_MAX, required=False)

    if not isinstance(intent.tags, (list, tuple)) or len(intent.tags) > TAGS_MAX:
        raise IntentRefused("tags", f"must be a list of at most {TAGS_MAX} tags")
    tags = []
    for i, tag in enumerate(intent.tags):
        tag = text(f"tags[{i}]", tag, limit=128, required=True)
        if "," in tag:
            raise IntentRefused(f"tags[{i}]", "must not contain commas (providers split tags on them)")
        tags.append(tag)

    priority = (intent.priority or "normal").lower() if isinstance(intent.priority, str) else ""
    if priority not in PRIORITIES:
        raise IntentRefused("priority", f"must be one of {', '.join(PRIORITIES)}")

    return Checked(provider=provider, account=account, source=source, mode=mode, title=title,
                   description=description, idempotency_key=key, metadata=metadata, tags=tags, priority=priority,
                   options=_check_options(intent.options, caps), callback_url=check_callback_url(intent.callback_url),
                   relay=relay)


def _check_url_shape(raw: str) -> str:
    source = text("source", raw.strip(), limit=URL_MAX, required=True)
    parts = urlsplit(source)
    if not parts.hostname:
        raise IntentRefused("source", f"URL {parts.scheme}://{parts.hostname or ''}{parts.path} has no host")
    return source


def _check_options(given: Any, caps: ProviderCaps) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise IntentRefused("options", "must be a mapping of option names to values")
    options = {}
    for name, value in given.items():
        if name not in caps.options:
            known = ", ".join(sorted(caps.options)) or "none"
            raise IntentRefused(f"options.{name}", f"is not an option of {caps.name}; its options: {known}")
        kind = caps.options[name]
        if kind in (list, dict) and isinstance(value, str):
            try:  # from the command line: JSON text
                value = json.loads(value)
            except ValueError:
                raise IntentRefused(f"options.{name}", "is not valid JSON") from None
        if kind is bool and isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            value = value.lower() in ("true", "1", "yes")
        if not isinstance(value, kind):
            raise IntentRefused(f"options.{name}", f"must be {kind.__name__}")
        options[name] = text(f"options.{name}", value, limit=255, required=True) if kind is str else value
    return options
