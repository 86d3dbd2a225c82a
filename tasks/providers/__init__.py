"""Provider adapters, one module each; adding a provider = one adapter + one sandbox file."""

from tasks.providers.base import Adapter, Status, StepContext
from tasks.providers.brightcove import BrightcoveAdapter
from tasks.providers.gcore import GcoreAdapter
from tasks.providers.ingestio import IngestioAdapter
from tasks.providers.ittybit import IttybitAdapter
from tasks.providers.once import OnceAdapter

ADAPTERS: dict[str, Adapter] = {a.name: a for a in (GcoreAdapter(), BrightcoveAdapter(), IttybitAdapter(),
                                                    OnceAdapter(), IngestioAdapter())}

__all__ = ["ADAPTERS", "Adapter", "Status", "StepContext"]
