"""How a provider declares its account settings: one :class:`Setting` per environment suffix.

An adapter lists its settings in ``Adapter.account_settings`` (name, default, type, secret or
not, required or not, what it is for); everything else is derived from that one list:
:mod:`tasks.config` reads and checks the environment with it, ``ingest-fleet settings``
prints the providers' part of ``deploy/.env.example`` from it, and the tests check the
sandbox's printed settings, the demo, the test environment and ``deploy/`` against it.

Example::

    account_settings = (
        Setting("API_KEY", secret=True, example="<gcore-api-key>"),
        Setting("BASE_URL", "https://api.gcore.com"),
        Setting("LOCK_WAIT", "600", float, help="How long a locked upload is waited for (s)."),
        *budget(rate=4, burst=1, slots=0, entity_rate=0),
    )

This module imports only :mod:`tasks.errors` (a leaf), so an adapter, the configuration and
the tests can all use it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from tasks.errors import ConfigError

#: The four budget settings every provider has (tasks.budget): requests/s of the account across
#: the fleet, requests allowed at once above it, provider-side jobs in flight, requests/s on one entity.
BUDGET_SETTINGS = ("RATE", "BURST", "SLOTS", "ENTITY_RATE")

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    """One account setting: ``INGEST_<PROVIDER>_<name>`` (and per named account).

    ``kind`` is ``str``, ``int``, ``float`` or ``bool``; numbers must not be negative.
    ``secret`` settings are never printed or logged and belong in a Secret, not a ConfigMap.
    ``required`` ones must be set once the account exists (its credential is set).
    ``pattern``: a ``str`` value must match it whole; ``hint`` says what a good value is.
    ``example``: the placeholder shown where there is no default (e.g. ``<client-id>``).
    """

    name: str
    default: str = ""
    kind: type = str
    secret: bool = False
    required: bool = False
    help: str = ""
    pattern: str = ""
    hint: str = ""
    example: str = ""

    def check(self, var: str, raw: str) -> str:
        """``raw`` as the canonical text of a valid value, or ConfigError naming ``var`` and the fix."""
        value = raw.strip()
        if self.kind is bool:
            if value.lower() not in _TRUE + _FALSE:
                raise ConfigError(f"{var}={raw!r} is not a boolean; set it to true or false")
            return "true" if value.lower() in _TRUE else "false"
        if self.kind in (int, float):
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not a number; {self.hint or 'write e.g. ' + (self.default or '1')}"
                                  ) from None
            if not math.isfinite(number) or number < 0:
                raise ConfigError(f"{var}={raw!r} must be a number, 0 or more")
            if self.kind is int and number != int(number):
                raise ConfigError(f"{var}={raw!r} must be a whole number")
            return str(int(number)) if self.kind is int else value
        if self.pattern and not re.fullmatch(self.pattern, value):
            raise ConfigError(f"{var}={raw!r} is not valid; set {self.hint or 'a value matching ' + self.pattern}")
        return raw


def budget(*, rate: float, burst: int = 1, slots: int = 0, entity_rate: float = 0.0) -> tuple[Setting, ...]:
    """The four budget settings with this provider's defaults (every one can be set per account)."""
    return (
        Setting("RATE", f"{rate:g}", float, help="Fleet-wide requests/s of the account (0 = no limit)."),
        Setting("BURST", str(burst), int, help="Requests allowed at once above the rate."),
        Setting("SLOTS", str(slots), int, help="Provider-side jobs in flight per account (0 = no limit)."),
        Setting("ENTITY_RATE", f"{entity_rate:g}", float, help="Requests/s on one entity (0 = no limit)."),
    )
