"""The Ittybit emulator: its options and settings, its routes and its state."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, ClassVar

from ..emulator import Context, Emulator
from ..faults import Setting
from ..media import file_sha256
from ..web import Response, Route, json_response, route
from .api import FAULT_KINDS, SHAPES, Api
from .files import Files, StoredFile
from .tasks import Task, Tasks, _task_input
from .uploads import Upload, Uploads, _upload_path
from .webhooks import WebhookEndpoint, Webhooks

WORKERS = 8  # concurrent task fetches, and concurrent webhook deliveries


class IttybitEmulator(Api, Files, Tasks, Uploads, Webhooks, Emulator):
    """Ittybit files, ingest tasks and uploads, in the envelope or the bare response shape."""

    name = "ittybit"
    options: ClassVar[dict[str, tuple[Any, str]]] = {
        "api_key": ("sandbox-ittybit-key", "API key accepted in 'Authorization: Bearer <key>'"),
        "shape": ("envelope", "response shape: 'envelope' (API version 2025-01-01) or 'bare' (later versions)"),
        "project": ("sandbox", "project name, for the envelope's project_id and org_id"),
    }
    stages = ("ittybit.processing",)
    settings: ClassVar[dict[str, Setting]] = {  # see the docstrings of .api, .files, .uploads and .webhooks
        "shape": Setting(None, str, SHAPES),  # null: the shape option
        "signature_ttl": Setting(None, int),  # null: signatures live as long as asked
        "webhook_duplicates": Setting(False, bool),
        "create_file_answer_delay": Setting(0, int),  # seconds POST /files waits after creating the file
    }

    def __init__(self, ctx: Context, *, api_key: str = "sandbox-ittybit-key", shape: str = "envelope",
                 project: str = "sandbox"):
        super().__init__(ctx)
        if shape not in SHAPES:
            raise ValueError(f"ittybit shape must be one of {', '.join(SHAPES)}, got {shape!r}")
        self.api_key = api_key
        self.shape = shape
        self.project = project
        self._base = f"http://{ctx.address}"
        self._files: dict[str, StoredFile] = {}
        self._tasks: dict[str, Task] = {}  # creation order: lists reverse it
        self._uploads: dict[str, Upload] = {}
        self._signatures_issued: list[dict[str, Any]] = []
        self._webhooks_sent: list[dict[str, Any]] = []
        self._endpoints: dict[str, WebhookEndpoint] = {}
        self._versions_seen: dict[str, int] = {}  # API calls per Accept-Version ("" = without one)
        self._fetches = self.pool("fetch", WORKERS)
        self._deliveries = self.pool("webhook", WORKERS)

    # -- Emulator ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        p = self.name
        return [
            route("POST", r"/files/?", "ittybit.create_file", self._create_file, provider=p),
            route("GET", r"/files/?", "ittybit.list_files", self._list_files, provider=p),
            route("GET", r"/files/(?P<file_id>[^/]+)", "ittybit.get_file", self._get_file, provider=p,
                  entity=lambda req: req.params["file_id"]),
            route("POST", r"/tasks/?", "ittybit.create_task", self._create_task, provider=p),
            route("GET", r"/tasks/?", "ittybit.list_tasks", self._list_tasks, provider=p),
            route("GET", r"/tasks/(?P<task_id>[^/]+)", "ittybit.get_task", self._get_task, provider=p,
                  entity=lambda req: req.params["task_id"]),
            route("POST", r"/webhooks/endpoints/?", "ittybit.create_webhook_endpoint", self._create_endpoint,
                  provider=p),
            route("GET", r"/webhooks/endpoints/?", "ittybit.list_webhook_endpoints", self._list_endpoints,
                  provider=p),
            route("DELETE", r"/webhooks/endpoints/(?P<endpoint_id>[^/]+)", "ittybit.delete_webhook_endpoint",
                  self._delete_endpoint, provider=p),
            route("POST", r"/signatures/?", "ittybit.create_signature", self._create_signature, provider=p),
            route("PUT", r"/upload/(?P<path>.+)", "ittybit.upload_put", self._upload_put, provider=p,
                  entity=_upload_path),
            route("HEAD", r"/upload/(?P<path>.+)", "ittybit.upload_head", self._upload_head, provider=p,
                  entity=_upload_path),
        ]

    def env(self, base_url: str) -> dict[str, str]:
        return {"INGEST_ITTYBIT_API_KEY": self.api_key, "INGEST_ITTYBIT_BASE_URL": base_url}

    def state(self) -> dict[str, Any]:
        """``files`` (with the sha256 of the stored bytes), ``tasks``, ``uploads`` per path,
        ``signatures_issued`` and ``webhooks_sent``; task statuses are the envelope's names."""
        with self._lock:
            files = [({"id": f.id, "folder": f.folder, "filename": f.filename, "status": f.status,
                       "filesize": f.filesize, "ref": f.ref}, f.path) for f in self._files.values()]
            out = {
                "tasks": [{"id": t.id, "status": t.status, "input": _task_input(t), "error": t.error,
                           "ref": t.ref} for t in self._tasks.values()],
                "uploads": [{"path": u.path, "received": u.received, "total": u.total,
                             "bytes_received_total": u.bytes_received_total} for u in self._uploads.values()],
                "signatures_issued": [dict(s) for s in self._signatures_issued],
                "webhooks_sent": [dict(w) for w in self._webhooks_sent],
                "webhook_endpoints": [e.json() for e in self._endpoints.values()],
                "api_versions": dict(self._versions_seen),
            }
        # Hash outside the lock: a 2 GiB file takes seconds and the API must keep answering.
        return {"files": [{**row, "sha256": file_sha256(path)} for row, path in files], **out}

    def clear(self) -> None:
        self._files.clear()
        self._tasks.clear()
        self._uploads.clear()
        self._signatures_issued.clear()
        self._webhooks_sent.clear()
        self._endpoints.clear()
        self._versions_seen.clear()

    def error_format(self, status: int) -> Response:
        """Injected errors in the current shape (read per request, so a runtime switch applies)."""
        message = "Too many requests" if status == 429 else HTTPStatus(status).phrase
        kind = FAULT_KINDS.get(status, HTTPStatus(status).name.lower())
        return json_response(self._error_body(self._shape(), message, kind), status)
