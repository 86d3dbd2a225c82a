"""The contract between the :class:`~sandbox.server.Sandbox` and a provider emulator.

Adding a provider means one module ``sandbox/<provider>.py`` (or, for a large contract, a
package ``sandbox/<provider>/`` split by resource) with an :class:`Emulator` subclass, listed
in :data:`sandbox.server.EMULATORS`. The sandbox gives it a :class:`Context`, mounts its
:meth:`~Emulator.routes` on the shared port, applies the provider's faults and logs its
requests; the emulator only speaks its provider's contract. The base class keeps what every
emulator needs alike: a lock over its entities, :meth:`~Emulator.reset` (forget them and the
stored bytes), and thread pools for background work that :meth:`~Emulator.stop` ends.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .faults import Setting
from .scheduler import Scheduler
from .web import Request, Response, Route

if TYPE_CHECKING:
    from .s3 import S3Server


@dataclass(frozen=True)
class Context:
    """What the sandbox lends an emulator."""

    data_dir: Path  # the emulator's own directory for stored bytes (wiped on reset)
    address: str  # "host:port" the sandbox listens on, as a client would dial it
    #: How long emulated processing takes now (0 = instant): the provider's runtime
    #: ``processing_seconds`` fault setting if set, else the Sandbox's.
    processing_seconds: Callable[[], float]
    #: ``stage_fails("gcore.processing")`` -> the injected fault's name, or None. The
    #: sandbox applies HTTP faults itself; only non-HTTP stages need to ask.
    stage_fails: Callable[[str], str | None]
    #: ``setting("token_ttl")`` -> the current value of one of the emulator's
    #: :attr:`Emulator.settings` in its provider's fault config.
    setting: Callable[[str], Any]
    s3: S3Server  # the sandbox's S3 (moto behind a logging, faulting proxy), for upload targets
    scheduler: Scheduler  # shared timer thread for delayed state changes
    stopping: threading.Event  # set when the sandbox stops; background work should end


class Emulator:
    """Base class of a provider emulator."""

    #: Provider name: prefix of its endpoint names, its fault-config key, its state URL.
    name: ClassVar[str]
    #: Constructor options, ``{option: (default, help)}``; ``Sandbox(<name>_<option>=...)``
    #: and the command line (``--<name>-<option>``) set them.
    options: ClassVar[dict[str, tuple[Any, str]]] = {}
    #: Names of non-HTTP stages that fault rules may target (``action: "fail"``).
    stages: ClassVar[tuple[str, ...]] = ()
    #: Provider-specific entries of the provider's fault config, read through ``ctx.setting``.
    settings: ClassVar[dict[str, Setting]] = {}
    #: Fault-config values the provider has unless a configuration sets them (e.g. its
    #: documented rate limit); they also come back on reset.
    fault_defaults: ClassVar[dict[str, Any]] = {}
    #: ``error_format(status)`` -> an injected error in the provider's own format, or None
    #: for the sandbox's ``{"error": "<reason phrase>"}``.
    error_format: ClassVar[Callable[[int], Response] | None] = None

    def __init__(self, ctx: Context, **options: Any):
        self.ctx = ctx
        #: Guards the emulator's entities; :meth:`reset` holds it while :meth:`clear` runs.
        self._lock = threading.RLock()
        self._pools: list[ThreadPoolExecutor] = []

    def pool(self, name: str, workers: int) -> ThreadPoolExecutor:
        """A pool of ``workers`` threads named ``<provider>-<name>`` for background work (source
        fetches, notification deliveries); :meth:`stop` shuts it down, dropping queued work."""
        executor = ThreadPoolExecutor(workers, thread_name_prefix=f"{self.name}-{name}")
        self._pools.append(executor)
        return executor

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def env(self, base_url: str) -> dict[str, str]:
        """The fleet settings (env vars) that point an account at this emulator."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """Everything the emulator holds, for ``GET /_sandbox/state/<name>``."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget every entity and stored byte: :meth:`clear` under the lock, then an empty data dir."""
        with self._lock:
            self.clear()
            shutil.rmtree(self.ctx.data_dir, ignore_errors=True)
            self.ctx.data_dir.mkdir(parents=True, exist_ok=True)

    def clear(self) -> None:
        """Forget every entity and counter; :meth:`reset` calls it holding the lock."""
        raise NotImplementedError

    def stop(self) -> None:
        """Release background resources; called once when the sandbox stops. The base shuts down
        every :meth:`pool` without waiting; a subclass that holds more calls ``super().stop()``."""
        for executor in self._pools:
            executor.shutdown(wait=False, cancel_futures=True)

    def admit(self, req: Request) -> Response | None:
        """Screen a request routed to this provider before its faults are decided.

        Called after routing (``req.route``, ``req.params`` and ``req.entity`` are set),
        before the provider's faults and the handler. A Response answers the request
        instead (a provider's version negotiation or authentication, its own rate
        limit); None lets it go on. The default admits everything.
        """
        return None

    def finish(self, req: Request, response: Response) -> None:
        """Adjust ``response.headers`` of every answer on this provider's routes.

        Called just before sending, for handler answers, :meth:`admit` rejections and
        injected fault answers alike (not when no answer is sent: drops and hangs),
        so a provider can stamp headers its API puts on every response (a request id,
        rate-limit counters). The default changes nothing.
        """

    def configured(self) -> None:
        """Called after ``PUT /_sandbox/faults`` replaced this provider's fault configuration,
        so an emulator can re-arm settings that count down (reset calls :meth:`reset`)."""
