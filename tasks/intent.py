"""The ingest intent and its validation at the door (ARCHITECTURE.md, principle 8), on the
fleet's side: the checks the client also makes (``ingest_fleet.intent``, against the adapters'
capabilities here), then what only the fleet can check: ``INGEST_SOURCE_ROOTS``, each
provider's own rules (``Adapter.validate``) and the account's settings (``check_account``).

An intent is refused before anything is stored or enqueued when any field is wrong, with
an :class:`IntentError` naming the field and the fix. A job the client stored is checked the
same way by the worker that runs its first step (:func:`admit`): a refusal there fails the
job, with the same message.

Example::

    >>> intent = Intent(provider="gcore", source="https://example.com/a.mp4", title="A")
    >>> intent.validate(settings)            # raises IntentError("source", "...") if bad
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest_fleet import intent as door
from ingest_fleet.errors import IntentRefused
from ingest_fleet.wire import intent_digest
from tasks.config import AccountConfig, Settings, account_var, credential_of
from tasks.errors import StepError
from tasks.providers import ADAPTERS
from tasks.transfer.source import open_remote

#: The refused-intent error (the client's class: the same on both sides of the door).
IntentError = IntentRefused
PRIORITIES = door.PRIORITIES
KEY_RE = door.KEY_RE


def capabilities() -> dict[str, door.ProviderCaps]:
    """What each provider this fleet has an adapter for accepts (published for clients)."""
    return {name: door.ProviderCaps(name, frozenset(a.pull_schemes), a.supports_push, dict(a.intent_options))
            for name, a in ADAPTERS.items()}


def _hint(provider: str, account: str) -> str:
    return f"set {account_var(provider, account, credential_of(provider))} on the workers"


class Intent(door.Intent):
    """An intent, validated with the fleet's adapters and settings."""

    def validate(self, settings: Settings, served: Collection[tuple[str, str]] | None = None,
                 account: AccountConfig | None = None) -> ValidatedIntent:
        """Check every field; returns the normalised intent or raises :class:`IntentError`.

        ``served`` are the accounts the fleet serves (default: those configured here);
        ``account``, the account's configuration where the caller has it whole: its settings
        are then checked too (else the worker that takes the job checks them)."""
        checked = door.check(self, capabilities(), settings.accounts if served is None else served,
                             account_hint=_hint)
        source: str = checked.source
        size: int | None = None
        source_stat: dict[str, Any] = {}
        if checked.relay:  # read by the fleet: reachable, sized, and where the fleet may go
            try:
                with open_remote(checked.source, settings) as reader:
                    size, source_stat = reader.size, {**reader.remote.validator, "size": reader.size}
            except StepError as exc:
                raise IntentError("source", str(exc)) from None
        elif checked.mode == "push":
            source, size, source_stat = self._check_file(settings)
        validated = ValidatedIntent(
            provider=checked.provider, account=checked.account, source=source, mode=checked.mode, size=size,
            title=checked.title, description=checked.description, idempotency_key=checked.idempotency_key,
            metadata=checked.metadata, tags=checked.tags, priority=checked.priority, options=checked.options,
            source_stat=source_stat, callback_url=checked.callback_url, relay=checked.relay,
            digest=intent_digest(checked.digest_fields(source)),
        )
        adapter = ADAPTERS[checked.provider]
        adapter.validate(validated)
        if account is None and (checked.provider, checked.account) in settings.accounts:
            account = settings.account(checked.provider, checked.account)
        if account is not None:
            adapter.check_account(validated, account)
        return validated

    def _check_file(self, settings: Settings) -> tuple[str, int, dict[str, int]]:
        raw = self.source
        door.text("source", raw, limit=4096, required=True)
        if not settings.source_roots:
            raise IntentError("source", "local files are refused because INGEST_SOURCE_ROOTS is not set; "
                                        "set it to the folder(s) sources may come from")
        resolved = Path(raw).expanduser().resolve()
        if not any(resolved == root or root in resolved.parents for root in settings.source_roots):
            roots = os.pathsep.join(str(r) for r in settings.source_roots)
            raise IntentError("source", f"{resolved} is outside INGEST_SOURCE_ROOTS ({roots}); "
                                        "move the file there or extend INGEST_SOURCE_ROOTS")
        return door.check_local_file(raw)


@dataclass(frozen=True)
class ValidatedIntent(door.Checked):
    """An intent past every check of the fleet's door, with what the door records."""

    size: int | None = None
    source_stat: dict[str, Any] = field(default_factory=dict)  # a file's fingerprint, a URL's validator
    digest: str = ""  # what makes a later intent with the same idempotency key "the same"


def intent_of(record: Mapping[str, Any]) -> Intent:
    """The intent a job record was made from (for the admission of a job a client stored)."""
    return Intent(provider=record["provider"], source=record["source"], title=record.get("title"),
                  description=record.get("description", ""), account=record.get("account", "default"),
                  idempotency_key=record.get("idempotency_key") or None, metadata=dict(record.get("metadata", {})),
                  tags=list(record.get("tags", [])), priority=record.get("priority", "normal"),
                  options=dict(record.get("options", {})), callback_url=record.get("callback_url"),
                  relay=bool(record.get("relay")))
