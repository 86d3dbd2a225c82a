"""The sandbox's own API under ``/_sandbox/`` (no auth; the sandbox binds to loopback).

==========================  ===============================================================
``GET /_sandbox/health``    ``{"ok": true}``
``GET /_sandbox/log``       ``{"entries": [...]}`` (see :mod:`sandbox.requestlog`); filters
                            ``since=<epoch seconds>`` (arrived strictly after),
                            ``endpoint=<name>``, ``provider=<name>``
``GET /_sandbox/faults``    ``{"<provider>": <config>, ...}``, normalised, with each rule's
                            remaining ``times`` (see :mod:`sandbox.faults`)
``PUT /_sandbox/faults``    body ``{"provider": "gcore", ...}`` replaces that provider's
                            config; answers its normalised config, or 400 naming the field
``POST /_sandbox/reset``    clears the log, every fault config and every entity
``GET /_sandbox/state/<p>`` everything emulator ``<p>`` holds (Gcore: videos with
                            ``sha256`` of the stored file, TUS uploads, tokens issued)
==========================  ===============================================================

Admin requests are neither logged nor subject to faults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .faults import FaultConfigError
from .web import HttpError, Request, Response, Route, json_response, route

if TYPE_CHECKING:
    from .server import Sandbox

#: The pseudo-provider of admin routes: never logged, never faulted.
ADMIN = "sandbox"


def admin_routes(sandbox: Sandbox) -> list[Route]:
    api = _AdminApi(sandbox)
    return [
        route("GET", r"/_sandbox/health", "sandbox.health", api.health, provider=ADMIN),
        route("GET", r"/_sandbox/log", "sandbox.log", api.log, provider=ADMIN),
        route("GET", r"/_sandbox/faults", "sandbox.get_faults", api.get_faults, provider=ADMIN),
        route("PUT", r"/_sandbox/faults", "sandbox.put_faults", api.put_faults, provider=ADMIN),
        route("POST", r"/_sandbox/reset", "sandbox.reset", api.reset, provider=ADMIN),
        route("GET", r"/_sandbox/state/(?P<provider>[\w-]+)", "sandbox.state", api.state, provider=ADMIN),
    ]


class _AdminApi:
    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox

    def health(self, req: Request) -> Response:
        return json_response({"ok": True})

    def log(self, req: Request) -> Response:
        since = req.arg("since")
        try:
            since_t = float(since) if since else None
        except ValueError:
            raise HttpError(400, {"error": "since must be epoch seconds"}) from None
        entries = self.sandbox.log.entries(since=since_t, endpoint=req.arg("endpoint"), provider=req.arg("provider"))
        return json_response({"entries": entries})

    def get_faults(self, req: Request) -> Response:
        return json_response(self.sandbox.faults.snapshot())

    def put_faults(self, req: Request) -> Response:
        config = req.json()
        try:
            self.sandbox.faults.configure(config)
        except FaultConfigError as exc:
            raise HttpError(400, {"error": str(exc)}) from None
        return json_response({"provider": config["provider"], **self.sandbox.faults[config["provider"]].snapshot()})

    def reset(self, req: Request) -> Response:
        self.sandbox.reset()
        return json_response({"ok": True})

    def state(self, req: Request) -> Response:
        emulator = self.sandbox.emulators.get(req.params["provider"])
        if emulator is None:
            raise HttpError(404, {"error": f"no emulator {req.params['provider']!r}"})
        return json_response(emulator.state())
