"""The sandbox: every provider emulator on one local HTTP/1.1 port, with faults and a log.

Example::

    with Sandbox(data_dir=tmp, media_dir=media, processing_seconds=0) as sb:
        os.environ.update(sb.env())   # INGEST_GCORE_BASE_URL, INGEST_ITTYBIT_API_KEY, ...
        ...                           # run the fleet against sb.url
        sb.log.entries(endpoint="gcore.tus_patch")

One :class:`~http.server.ThreadingHTTPServer` (a daemon thread per connection, keep-alive)
serves the emulators' routes, ``/media/`` (:mod:`sandbox.media`) and the admin API under
``/_sandbox/`` (:mod:`sandbox.admin`). For each provider request the server consults the
provider's faults (:mod:`sandbox.faults`), runs the handler, keeps the connection usable by
draining any unread body, and appends one entry to the request log
(:mod:`sandbox.requestlog`). An emulator may screen its requests before the faults
(:meth:`~sandbox.emulator.Emulator.admit`) and stamp headers on every answer
(:meth:`~sandbox.emulator.Emulator.finish`). S3 (:mod:`sandbox.s3`, provider ``s3``)
listens on a port of its own, :attr:`Sandbox.s3` ``.url``, with the same faults and log.

To add a provider, write ``sandbox/<provider>.py`` (or a package ``sandbox/<provider>/``) with
an :class:`~sandbox.emulator.Emulator` subclass and list it in :data:`EMULATORS`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from .admin import ADMIN, admin_routes
from .brightcove import BrightcoveEmulator
from .emulator import Context, Emulator
from .faults import FaultRegistry, FaultSpec
from .gcore import GcoreEmulator
from .ingestio import IngestioEmulator
from .ittybit import IttybitEmulator
from .media import MediaServer
from .once import OnceEmulator
from .requestlog import RequestLog
from .s3 import S3Server
from .scheduler import Scheduler
from .web import (
    ClientGone,
    HttpError,
    Request,
    Response,
    Router,
    TrackedHTTPServer,
    abort_connection,
    json_response,
    write_response,
)

log = logging.getLogger(__name__)

#: Every provider emulator the sandbox mounts.
EMULATORS: tuple[type[Emulator], ...] = (GcoreEmulator, BrightcoveEmulator, IttybitEmulator, OnceEmulator,
                                          IngestioEmulator)


class Sandbox:
    """All emulators on ``host:port`` (0 = a free port); the socket is bound at construction.

    ``data_dir`` holds uploaded bytes (a temporary directory, removed on :meth:`stop`, if
    None). ``media_dir`` is served under ``/media/``. ``processing_seconds`` is how long
    emulated processing takes (0 = instant; a provider's fault config can override it).
    ``seed`` seeds the fault RNGs. Emulator options are passed as ``<provider>_<option>``:
    ``gcore_api_key`` (default ``"sandbox-gcore-key"``), ``gcore_client_id`` (default 4242),
    ``brightcove_client_id`` (``"sandbox-bc-client"``), ``brightcove_client_secret``
    (``"sandbox-bc-secret"``), ``brightcove_account_id`` (``"6200000000001"``),
    ``brightcove_token_ttl`` (300 seconds), ``ittybit_api_key`` (``"sandbox-ittybit-key"``),
    ``ittybit_shape`` (``"envelope"`` or ``"bare"``), ``ittybit_project`` (``"sandbox"``),
    ``ingestio_jwt_secret`` (``"sandbox-ingestio-secret"``) and ``ingestio_network_id`` (a
    fixed UUID).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, data_dir: str | Path | None = None,
                 media_dir: str | Path | None = None, processing_seconds: float = 3.0, seed: int = 0,
                 client_timeout: float = 120.0, **provider_options: Any):
        options = _split_options(provider_options)
        #: Seconds of client silence before a connection is dropped (a stalled body too).
        self.client_timeout = client_timeout
        self.processing_seconds = processing_seconds
        self._tmp_dir = None if data_dir is not None else tempfile.mkdtemp(prefix="ingest-sandbox-")
        self.data_dir = Path(data_dir if data_dir is not None else self._tmp_dir)
        self.log = RequestLog()
        self._stopping = threading.Event()
        self._scheduler = Scheduler()
        self._httpd = _HTTPServer((host, port), self)
        bound_host, bound_port = self._httpd.server_address[:2]
        address = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        #: Base URL, e.g. ``http://127.0.0.1:40123``.
        self.url = f"http://{address}"
        #: moto's S3 behind a logging, faulting proxy on a port of its own (``self.s3.url``).
        self.s3 = S3Server(bound_host, log=self.log, faults=lambda: self.faults[S3Server.provider],
                           stopping=self._stopping)
        self.router = Router()
        self.router.add(*admin_routes(self))
        self.media = MediaServer(media_dir)
        self.router.add(*self.media.routes())
        self.emulators: dict[str, Emulator] = {}
        for cls in EMULATORS:
            ctx = Context(data_dir=self.data_dir / cls.name, address=address,
                          processing_seconds=partial(self._processing_seconds, cls.name),
                          stage_fails=partial(self._stage_fails, cls.name),
                          setting=partial(self._setting, cls.name), s3=self.s3,
                          scheduler=self._scheduler, stopping=self._stopping)
            ctx.data_dir.mkdir(parents=True, exist_ok=True)
            emulator = cls(ctx, **options.get(cls.name, {}))
            self.emulators[cls.name] = emulator
            self.router.add(*emulator.routes())
        providers = {
            MediaServer.provider: FaultSpec(frozenset(self.router.names(MediaServer.provider))),
            S3Server.provider: S3Server.fault_spec(),
            # error_format is taken from the instance: it may depend on runtime state (Ittybit's shape).
            **{name: FaultSpec(frozenset(self.router.names(name)), frozenset(e.stages), e.settings,
                               e.fault_defaults, e.error_format) for name, e in self.emulators.items()},
        }
        #: Fault configuration of every provider (also ``GET``/``PUT /_sandbox/faults``).
        self.faults = _FaultRegistry(providers, seed, self.emulators)
        self._thread: threading.Thread | None = None

    def start(self) -> Sandbox:
        """Serve in a background thread; returns self."""
        if self._thread is None:
            self.s3.start()
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="sandbox-http", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, end background work; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()  # wakes hanging requests, latency sleeps and pull retries
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._scheduler.stop()
        for emulator in self.emulators.values():
            emulator.stop()
        self.s3.stop()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The fleet settings that point every provider at this sandbox."""
        env: dict[str, str] = {}
        for emulator in self.emulators.values():
            env.update(emulator.env(self.url))
        return env

    def reset(self) -> None:
        """Forget the request log, every fault configuration and every entity (S3's too)."""
        self.log.clear()
        self.faults.reset()
        self.s3.reset()
        for emulator in self.emulators.values():
            emulator.reset()

    def _processing_seconds(self, provider: str) -> float:
        override = self.faults[provider].processing_seconds
        return self.processing_seconds if override is None else override

    def _stage_fails(self, provider: str, stage: str) -> str | None:
        return self.faults[provider].stage_fails(stage)

    def _setting(self, provider: str, name: str) -> Any:
        return self.faults[provider].setting(name)

    # -- request handling (called on the connection's thread) ----------------------

    def _serve(self, h: _Handler) -> None:
        started = time.time()
        req = Request(h.command, h.path, h.headers, h.rfile)
        response: Response | None
        if req.framing_error is not None:
            # Without a trustworthy length the body cannot be skipped: answer, then close.
            response = req.framing_error.response()
            h.close_connection = True
        else:
            try:
                response = self._respond(req)
                req.drain()  # keep-alive: the next request starts where this body ends
            except ClientGone:
                response = None
        emulator = self._emulator(req)
        if response is not None and emulator is not None:
            emulator.finish(req, response)
        # Account for the request before answering: once a client has its answer, the log
        # and the state it reads must already include this request.
        req.finish()
        if req.route is None or req.route.provider != ADMIN:
            self.log.record(t=started, provider=req.route.provider if req.route else None, method=req.method,
                            path=req.path, endpoint=req.endpoint, status=response.status if response else None,
                            bytes_in=req.bytes_in, entity=req.entity, fault=req.fault, client=h.client_address[0])
        if response is None:
            abort_connection(h)
        else:
            write_response(h, req, response)

    def _emulator(self, req: Request) -> Emulator | None:
        """The emulator whose route the request took, if any."""
        return self.emulators.get(req.route.provider) if req.route is not None else None

    def _respond(self, req: Request) -> Response:
        """Route, apply the provider's faults, run the handler. ClientGone = answer nothing."""
        try:
            route, req.params = self.router.match(req.method, req.path)
        except HttpError as exc:
            return exc.response()
        req.route = route
        try:
            if route.entity is not None:
                req.entity = route.entity(req)
            emulator = self._emulator(req)
            if emulator is not None:
                refusal = emulator.admit(req)
                if refusal is not None:
                    return refusal
            if route.provider != ADMIN:
                decision = self.faults[route.provider].decide(route.name, req.method, req.content_length)
                req.fault = decision.fault
                if decision.latency:
                    self._stopping.wait(decision.latency)
                if decision.response is not None:
                    return decision.response
                if decision.hang is not None:
                    self._stopping.wait(decision.hang)
                    raise ClientGone("hang fault: closing without an answer")
                if decision.drop_after is not None:
                    req.cut_after(decision.drop_after)
                if decision.corrupt:
                    req.damage()
            return route.handler(req)
        except HttpError as exc:
            return exc.response()
        except ClientGone:
            raise
        except Exception:
            log.exception("sandbox handler %s failed on %s %s", route.name, req.method, req.path)
            return json_response({"error": "Internal Server Error"}, 500)


class _FaultRegistry(FaultRegistry):
    """The fault registry that tells an emulator when its configuration was replaced."""

    def __init__(self, providers: dict[str, FaultSpec], seed: int, emulators: dict[str, Emulator]):
        super().__init__(providers, seed)
        self._emulators = emulators

    def configure(self, config: Any) -> None:
        super().configure(config)
        emulator = self._emulators.get(config["provider"])
        if emulator is not None:
            emulator.configured()


def _split_options(provider_options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"gcore_api_key": k}`` -> ``{"gcore": {"api_key": k}}``; unknown names raise TypeError."""
    options: dict[str, dict[str, Any]] = {}
    for key, value in provider_options.items():
        for cls in EMULATORS:
            option = key.removeprefix(cls.name + "_")
            if option != key and option in cls.options:
                if value is not None:
                    options.setdefault(cls.name, {})[option] = value
                break
        else:
            raise TypeError(f"Sandbox() got an unexpected option {key!r}")
    return options


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections as with real APIs
    server_version = "ingest-fleet-sandbox"
    # Headers and body go out in separate writes; with Nagle on, the client's delayed ACK
    # stalls every kept-alive response by ~40 ms.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        self.timeout = self.server.sandbox.client_timeout  # client silence before the connection is dropped
        super().setup()

    def _serve(self) -> None:
        self.server.sandbox._serve(self)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the sandbox keeps its own request log."""


class _HTTPServer(TrackedHTTPServer):
    def __init__(self, address: tuple[str, int], sandbox: Sandbox):
        self.sandbox = sandbox
        super().__init__(address, _Handler)
