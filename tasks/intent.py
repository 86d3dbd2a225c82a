"""The ingest intent and its validation at the door (ARCHITECTURE.md, principle 8).

An intent is refused before anything is stored or enqueued when any field is wrong, with
an :class:`IntentError` naming the field and the fix.

Example::

    >>> intent = Intent(provider="gcore", source="https://example.com/a.mp4", title="A")
    >>> intent.validate(settings)            # raises IntentError("source", "...") if bad
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tasks.config import ConfigError, Settings
from tasks.providers import ADAPTERS
from tasks.transfer.source import fingerprint
from tasks.urls import redacted

PRIORITIES = ("high", "normal", "low")
TITLE_MAX = 255
DESCRIPTION_MAX = 4000
KEY_RE = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")
META_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
META_MAX_ITEMS = 50
META_VALUE_MAX = 1024
TAGS_MAX = 100
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class IntentError(ValueError):
    """A refused intent: ``field`` names what is wrong, the message says how to fix it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _text(field_name: str, value: Any, *, limit: int, required: bool) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise IntentError(field_name, f"must be text, got {type(value).__name__}")
    # Arguments that were not valid UTF-8 arrive as lone surrogates (surrogateescape).
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise IntentError(field_name, "is not valid UTF-8 text; re-encode it as UTF-8") from None
    if _CONTROL.search(value):
        raise IntentError(field_name, "contains control characters; remove them")
    if required and not value.strip():
        raise IntentError(field_name, "is empty; give a non-empty value")
    if len(value) > limit:
        raise IntentError(field_name, f"is {len(value)} characters long; the limit is {limit}")
    return value


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Intent:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise IntentError(unknown[0], f"is not an intent field; known fields: {', '.join(sorted(known))}")
        for required in ("provider", "source"):
            if not data.get(required):
                raise IntentError(required, "is required")
        return cls(**dict(data))

    @property
    def is_url(self) -> bool:
        return "://" in self.source

    def validate(self, settings: Settings) -> ValidatedIntent:
        """Check every field; returns the normalised intent or raises :class:`IntentError`."""
        provider = (self.provider or "").strip().lower()
        if provider not in ADAPTERS:
            raise IntentError("provider", f"unknown provider {self.provider!r}; choose one of: {', '.join(sorted(ADAPTERS))}")
        adapter = ADAPTERS[provider]
        account = _text("account", self.account or "default", limit=64, required=True).lower()
        try:
            settings.account(provider, account)
        except ConfigError as exc:
            raise IntentError("account", str(exc)) from None

        if not isinstance(self.source, str) or not self.source.strip():
            raise IntentError("source", "is required: a file path or a URL")
        source_stat: dict[str, int] = {}
        if self.is_url:
            source, mode, size = self._check_url(adapter), "pull", None
        else:
            source, size, source_stat = self._check_file(settings)
            mode = "push"
            if not adapter.supports_push:
                raise IntentError("source", f"{provider} can only pull from a URL; give an http(s) URL")

        default_title = Path(urlsplit(source).path if mode == "pull" else source).name or "untitled"
        title = _text("title", self.title if self.title is not None else default_title, limit=TITLE_MAX, required=True)
        description = _text("description", self.description, limit=DESCRIPTION_MAX, required=False)

        key = self.idempotency_key
        if key is not None and not KEY_RE.match(key):
            raise IntentError("idempotency_key", "must be 1-128 characters of letters, digits and ._:@/-")

        if not isinstance(self.metadata, Mapping):
            raise IntentError("metadata", "must be a mapping of text keys to text values")
        if len(self.metadata) > META_MAX_ITEMS:
            raise IntentError("metadata", f"has {len(self.metadata)} entries; the limit is {META_MAX_ITEMS}")
        metadata = {}
        for k, v in self.metadata.items():
            if not isinstance(k, str) or not META_KEY_RE.match(k):
                raise IntentError(f"metadata.{k}", "keys must be 1-64 characters of letters, digits and _.-")
            metadata[k] = _text(f"metadata.{k}", v, limit=META_VALUE_MAX, required=False)

        if not isinstance(self.tags, (list, tuple)) or len(self.tags) > TAGS_MAX:
            raise IntentError("tags", f"must be a list of at most {TAGS_MAX} tags")
        tags = []
        for i, tag in enumerate(self.tags):
            tag = _text(f"tags[{i}]", tag, limit=128, required=True)
            if "," in tag:
                raise IntentError(f"tags[{i}]", "must not contain commas (providers split tags on them)")
            tags.append(tag)

        priority = (self.priority or "normal").lower()
        if priority not in PRIORITIES:
            raise IntentError("priority", f"must be one of {', '.join(PRIORITIES)}")

        if not isinstance(self.options, Mapping):
            raise IntentError("options", "must be a mapping of option names to values")
        options = {}
        for name, value in self.options.items():
            if name not in adapter.intent_options:
                known = ", ".join(sorted(adapter.intent_options)) or "none"
                raise IntentError(f"options.{name}", f"is not an option of {provider}; its options: {known}")
            kind = adapter.intent_options[name]
            if kind in (list, dict) and isinstance(value, str):
                try:  # from the command line: JSON text
                    value = json.loads(value)
                except ValueError:
                    raise IntentError(f"options.{name}", "is not valid JSON") from None
            if kind is bool and isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                value = value.lower() in ("true", "1", "yes")
            if not isinstance(value, kind):
                raise IntentError(f"options.{name}", f"must be {kind.__name__}")
            options[name] = _text(f"options.{name}", value, limit=255, required=True) if kind is str else value

        validated = ValidatedIntent(
            provider=provider, account=account, source=source, mode=mode, size=size, title=title,
            description=description, idempotency_key=key, metadata=metadata, tags=tags, priority=priority,
            options=options, source_stat=source_stat,
        )
        adapter.validate(validated)
        adapter.check_account(validated, settings.account(provider, account))
        return validated

    def _check_url(self, adapter: Any) -> str:
        source = self.source.strip()
        _text("source", source, limit=2048, required=True)
        parts = urlsplit(source)
        scheme = parts.scheme.lower()
        if not adapter.pull_schemes:
            raise IntentError("source", f"{adapter.name} cannot fetch a URL (it has no URL ingest); give a local "
                                        "file path under INGEST_SOURCE_ROOTS")
        if scheme not in adapter.pull_schemes:
            raise IntentError(
                "source",
                f"URL scheme {scheme!r} is not supported by {adapter.name}; use one of: "
                f"{', '.join(sorted(adapter.pull_schemes))}",
            )
        if not parts.netloc:
            raise IntentError("source", f"URL {redacted(source)!r} has no host")
        return source

    def _check_file(self, settings: Settings) -> tuple[str, int, dict[str, int]]:
        raw = self.source
        _text("source", raw, limit=4096, required=True)
        if not settings.source_roots:
            raise IntentError("source", "local files are refused because INGEST_SOURCE_ROOTS is not set; "
                                        "set it to the folder(s) sources may come from")
        resolved = Path(raw).expanduser().resolve()
        if not any(resolved == root or root in resolved.parents for root in settings.source_roots):
            roots = os.pathsep.join(str(r) for r in settings.source_roots)
            raise IntentError("source", f"{resolved} is outside INGEST_SOURCE_ROOTS ({roots}); "
                                        "move the file there or extend INGEST_SOURCE_ROOTS")
        try:
            info = resolved.stat()
        except FileNotFoundError:
            raise IntentError("source", f"file not found: {raw}; give an existing file or an http(s) URL") from None
        except OSError as exc:
            raise IntentError("source", f"cannot read {raw}: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            raise IntentError("source", f"{raw} is a directory; give a video file")
        if not stat.S_ISREG(info.st_mode):
            raise IntentError("source", f"{raw} is not a regular file")
        if info.st_size == 0:
            raise IntentError("source", f"{raw} is empty")
        if not os.access(resolved, os.R_OK):
            raise IntentError("source", f"{raw} is not readable by this user")
        return str(resolved), info.st_size, fingerprint(info)


@dataclass(frozen=True)
class ValidatedIntent:
    provider: str
    account: str
    source: str
    mode: str
    size: int | None
    title: str
    description: str
    idempotency_key: str | None
    metadata: dict[str, str]
    tags: list[str]
    priority: str
    options: dict[str, Any]
    source_stat: dict[str, int] = field(default_factory=dict)
