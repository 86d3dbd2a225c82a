"""The provider registry: one line per provider, ``name -> "module:Class"`` of its adapter.

Adapters are imported when first used (as libcloud's provider registry does), so the registry
imports none of them: an adapter may use the intent model, and the intent model may use the
registry, without an import circle. ``ADAPTERS`` is a read-only mapping of adapter instances.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from tasks.providers.base import Adapter, Status, StepContext

#: Adding a provider: its adapter module, its emulator, its tests, and one line here.
REGISTRY: dict[str, str] = {
    "gcore": "tasks.providers.gcore:GcoreAdapter",
    "brightcove": "tasks.providers.brightcove:BrightcoveAdapter",
    "ittybit": "tasks.providers.ittybit:IttybitAdapter",
    "once": "tasks.providers.once:OnceAdapter",
    "ingestio": "tasks.providers.ingestio:IngestioAdapter",
}


class _Adapters(Mapping[str, Adapter]):
    """Each provider's adapter, built once on first use."""

    def __init__(self, registry: Mapping[str, str]):
        self._registry = registry
        self._built: dict[str, Adapter] = {}

    def __getitem__(self, name: str) -> Adapter:
        if name not in self._built:
            module, _, cls = self._registry[name].partition(":")
            adapter = getattr(importlib.import_module(module), cls)()
            if adapter.name != name:
                raise RuntimeError(f"REGISTRY names {name!r} for an adapter named {adapter.name!r}")
            self._built[name] = adapter
        return self._built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)


ADAPTERS: Mapping[str, Adapter] = _Adapters(REGISTRY)

__all__ = ["ADAPTERS", "REGISTRY", "Adapter", "Status", "StepContext"]
