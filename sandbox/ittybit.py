"""Ittybit emulator: files, ingest tasks, signed and resumable uploads, task webhooks.

Follows Ittybit's ingest guide (``shared/seeds/ittybit-ingest.txt``, "the seed": ``POST
/files`` ingests synchronously, ``POST /tasks`` with ``kind: "ingest"`` asynchronously, then
poll ``GET /tasks/{id}`` or take a webhook) and ``design/providers.md`` §3 (envelope and
later response shapes, File and Task fields, signatures, resumable uploads, errors; from
Ittybit's API docs I1-I5, I7 and the PHP SDK I6). The paths are Ittybit's, so the fleet only
swaps the base URL of ``api.ittybit.com`` (and of the ``{project}.ittybit.net`` delivery
domain of signed URLs), both of which are the sandbox here.

Endpoints, by the names the request log and fault rules use:

=========================  =================================  =======================================
ittybit.create_file        ``POST /files``                    201 File (synchronous ingest) / 400
ittybit.list_files         ``GET /files?limit=&page=``        200 list, newest first
ittybit.get_file           ``GET /files/{id}``                200 File / 404
ittybit.create_task        ``POST /tasks``                    201 Task ``pending`` / 400
ittybit.list_tasks         ``GET /tasks?limit=&page=``        200 list, newest first (limit 20, max 100)
ittybit.get_task           ``GET /tasks/{id}``                200 Task / 404
ittybit.create_webhook_endpoint ``POST /webhooks/endpoints``  201 Webhook Endpoint / 400
ittybit.list_webhook_endpoints  ``GET /webhooks/endpoints``   200 list, newest first
ittybit.delete_webhook_endpoint ``DELETE /webhooks/endpoints/{id}`` 204 / 404
ittybit.create_signature   ``POST /signatures``               201 signed URL
ittybit.upload_put         ``PUT /upload/{folder/}{name}``    201 File, 202 chunk stored / 400 403 409
ittybit.upload_head        ``HEAD /upload/{folder/}{name}``   200 + ``Upload-Offset`` / 403
ittybit.processing         (no HTTP) a task's processing      target of ``action: "fail"`` rules
=========================  =================================  =======================================

Shapes. Ittybit's API changed shape over 2025 (providers.md §3). ``envelope`` (the
``ittybit_shape`` option's default; the seed's ``2025-01-01`` era) wraps every answer as
``{"meta": {"request_id", "org_id", "project_id", "version", "type"}, "data", "error",
"links": {"self"}}``; lists add ``limit, total, page, pages`` to ``meta`` and ``first, prev,
next, last`` page URLs to ``links``; errors are ``{"meta": {"request_id", "type": "error"},
"data": null, "error": {"message"}, "links": {}}``. ``bare`` (later versions) answers the
object or array itself and errors as ``{"kind", "message"}`` (I2). The ``shape`` entry of
the ittybit fault config switches at runtime. Only the shape of answers changes; requests
are the same in both. ``Accept-Version`` selects the version of an API call (ittybit.com/api/
versioning): ``2025-01-01`` answers in the envelope, ``2025-08-20`` and ``latest`` bare (the
values the 2025-08-20 reference lists; sdk-php v1.0.0 decodes bare answers under that pin);
without the header a call gets the default version, i.e. the ``shape`` above; any other
value is 400 ``request_invalid`` (*assumed*: Ittybit documents no answer). The state's
``api_versions`` counts API calls per value (``""`` = no header). Bare lists carry
``Has-More`` and ``Limit`` headers (ittybit.com/api/responses).

Authentication: ``Authorization: Bearer <key>`` on every API call, else 401 "Invalid API
key" (bare kind ``token_invalid``). Uploads are authorised by their signed URL instead.

Errors (message; bare ``kind``), the kinds from Ittybit's error reference (I2) where it has
one, else the emulator's choice:

* 400 ``Invalid JSON body``, ``<field> must be ...`` (``request_invalid``); ``url is
  required`` (``url_required``); ``Unsupported file type`` (``format_unsupported``) - the
  source is no MP4/MOV/Matroska/WebM container (:func:`sandbox.media.is_video_container`);
  ``Could not fetch url`` (``url_unreachable``) - no http(s) URL, or three attempts at it
  failed (the reason is logged);
* 403 ``Invalid signature`` (``signature_invalid``), ``Signature expired``
  (``signature_expired``);
* 404 ``Task not found`` (``task_not_found``), ``File not found`` (``file_not_found``);
* 409 chunk at the wrong offset (``upload_offset_mismatch``), see Uploads - *assumed*: only
  ``Content-Range`` 202/201 is documented (I4), the 409 and ``HEAD`` resync are this emulator's;
* injected errors: the status's reason phrase, ``Too many requests`` for 429 (kind
  ``rate_limited``; ``internal_error`` for 500, else the snake-cased status name).

Request fields (*assumed* strictness: Ittybit documents none): ``POST /tasks`` accepts
``kind, url, filename, folder, ref`` (the 2025-08-20 reference), ``POST /files`` ``url,
media_id, folder, filename, ref, metadata, label, async`` (sdk-php v1.0.0 / v0.7.4), ``POST
/webhooks/endpoints`` ``url, topics``; any other field is 400 ``unknown field …``. A task's
``webhook_url`` is 400 "no longer supported" (changelog 2025-12-01 replaced it with Webhook
Endpoints; the 400 itself is assumed).

Files. ``POST /files`` ``{url, filename?, folder?, metadata?, label?, ref?}`` downloads the URL
while the client waits (http/https, up to 3 attempts expecting 200, streamed to disk),
checks the container and answers 201 with the File: ``id`` (``file_…``), ``object``,
``kind`` ``video``, ``type`` (``video/mp4``, or ``video/webm`` for Matroska), ``width``,
``height``, ``duration``, ``fps``, ``filesize``, ``url`` (``<sandbox>/files-cdn/{folder/}
{filename}``; the sandbox does not serve it), ``folder``, ``filename`` (default: the URL's
last path segment), ``status`` ``ready``, ``metadata``, ``label``, ``ref``, ``created``,
``updated`` (ISO 8601, UTC, seconds). The ``create_file_answer_delay`` setting (seconds)
makes ``POST /files`` answer that much later *after* the file exists, as when a client's
read timeout fires while Ittybit finishes. ``GET /files`` lists files newest first (``limit``,
``page``; sdk-php v1.0.0 ``FilesListRequest``).

Tasks. ``POST /tasks`` ``{kind: "ingest", url, filename?, folder?, ref?}`` answers 201 with
the Task (``id`` ``task_…``, ``object``, ``kind``, ``status``, ``progress``, ``error``,
``input`` ``{url, filename, folder}``, ``options`` ``{ref}`` (as the reference's example
echoes ``ref`` there), ``output``, ``results``, ``created``, ``updated``); other
kinds are not emulated (400). Over ``processing_seconds`` (the Sandbox's, or the ittybit
fault config's; 0 = instant) the task goes ``pending`` (progress 0) -> ``processing`` (10
at 20 %, 50 once the source is fetched and checked) -> ``completed`` (100, 80 % later) with
``output`` = the File, or ends ``failed`` with ``error: {"message": ...}``: ``Could not
fetch url``, ``Unsupported file type``, or ``Processing failed`` when the
``ittybit.processing`` stage fails (a ``fail`` rule or ``processing_fail_rate``). As in the
seed, ``output.status`` is ``complete`` in the envelope shape; the bare shape says
``succeeded`` for the task (I7) and ``ready`` for its File.

Webhooks (ittybit.com/docs/webhooks, changelog 2025-12-01). ``POST /webhooks/endpoints
{url, topics}`` answers 201 ``{id we_…, object: "webhook_endpoint", url, topics, status:
"active", created_at, updated_at}`` (unix seconds); ``url`` must be https ("HTTP endpoints
will be rejected"; the sandbox lets a loopback http URL through), ``topics`` a non-empty
list of task.created|updated|succeeded|failed, run.* (runs are not emulated). A task's
creation, status/progress changes and end send ``{id evt_…, object: "event", kind, data:
<the task, bare vocabulary>, created_at}`` to every active endpoint subscribed to the kind,
from a background thread: up to 3 attempts (network error or non-2xx, 5 s timeout), 1 s then
2 s apart. No signature header (none is documented). Each delivery is recorded in the state's
``webhooks_sent`` (and the endpoints in ``webhook_endpoints``); ``webhook_duplicates: true``
sends each twice; a reset forgets the endpoints, as a provider that lost them.

Uploads (I3, I4). ``POST /signatures`` ``{filename, folder?, expiry? (unix seconds, default
an hour from now), method: "get"|"put" (default "get")}`` answers 201 ``{domain, filename,
folder, expiry, method, signature, url}`` with ``url`` = ``<sandbox>/upload/{folder/}
{filename}?expiry=…&method=…&signature=…``; the signature is an HMAC of the path, expiry
and method keyed with the API key, and ``signature_ttl`` (seconds, null = off) caps how
long new signatures live, so tests can watch one expire. Each is recorded in the state's
``signatures_issued``. ``PUT`` to a ``put`` URL (403 if the signature does not match,
then if it has expired):

* without ``Content-Range`` the body is the whole file: 201 File, or 400 ``Unsupported
  file type``; it replaces any partial upload of the path;
* with ``Content-Range: bytes=START-END/TOTAL`` (END inclusive; the RFC 9110 form ``bytes
  START-END/TOTAL`` works too) the chunk is written at START of the path's upload, which
  outlives the signature (renew it and go on). START must be the size received so far,
  else 409 naming it, with ``Upload-Offset: <size>``; START 0 with another TOTAL, or on a
  finished upload, starts the path over. A chunk counts only once its whole body arrived:
  if the client goes away mid-chunk, the upload stays where it was. Intermediate chunks
  answer 202 ``{"received": <bytes>}``, the last (END + 1 = TOTAL) 201 File; sent again
  after the upload finished (its answer was lost), the last chunk gets the same File. Ittybit
  accepts chunks in parallel and out of order (I4); the emulator takes them in order only.

*Assumed* (Ittybit documents no such call): ``HEAD`` on a signed upload URL (``get`` or
``put``) answers 200 with ``Upload-Offset`` (0 for a path never written) and, once known,
``Upload-Length``, so a client that lost track can resync. Bodies are streamed to disk in 1 MiB blocks. The state's ``uploads``
count per path every body byte a ``PUT`` handler received (``bytes_received_total``),
rejected and repeated chunks included; bodies answered by an injected fault show only in
the request log. Gcore's TUS server shares the ``/upload/`` prefix: a ``HEAD`` to a
folder-less name of exactly 32 lowercase hex digits reaches Gcore.

Limits. Ittybit publishes no number (providers.md §6): ``rate_limit_rps`` is 0 (off) unless
a fault config sets it; throttled requests get 429 with ``Retry-After``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import logging
import math
import os
import re
import secrets
import shutil
import string
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlsplit

from .emulator import Context, Emulator
from .faults import Setting
from .media import EBML_MAGIC, file_sha256, is_video_container
from .notify import post_json
from .web import BLOCK_SIZE, ClientGone, HttpError, Request, Response, Route, json_response, route

log = logging.getLogger(__name__)

SHAPES = ("envelope", "bare")
API_VERSION = "2025-01-01"  # the envelope era of the seed (providers.md §3)
#: ``Accept-Version`` values and the shape each answers in: ``2025-01-01`` is the envelope
#: era (ittybit.com/api/tasks/create, older page); ``2025-08-20`` and ``latest`` the values
#: the 2025-08-20 reference lists for the header, answered bare (ittybit/sdk-php v1.0.0
#: decodes bare objects and arrays under that pin). A request without the header gets the
#: default version (ittybit.com/api/versioning), here the ``shape`` option or setting.
VERSIONS = {"2025-01-01": "envelope", "2025-08-20": "bare", "latest": "bare"}
#: Body fields per endpoint: the 2025-08-20 reference (POST /tasks) and SDK v1.0.0
#: ``FilesCreateRequest`` (POST /files; ``label`` and ``async`` from SDK v0.7.4). Anything
#: else is refused with 400 - strictness is *assumed*, Ittybit documents none.
TASK_FIELDS = frozenset({"kind", "url", "filename", "folder", "ref"})
FILE_FIELDS = frozenset({"url", "media_id", "folder", "filename", "ref", "metadata", "label", "async"})
#: Webhook Endpoint topics (ittybit.com/docs/webhooks, changelog 2025-12-01).
TOPICS = ("task.created", "task.updated", "task.succeeded", "task.failed",
          "run.created", "run.updated", "run.succeeded", "run.failed")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ID_ALPHABET = string.ascii_lowercase + string.digits
SIGNATURE_TTL = 3600  # "default +60 min" (I3)
METHODS = ("get", "put")
LIST_LIMIT, LIST_MAX = 20, 100
FETCH_ATTEMPTS = 3
FETCH_RETRY_DELAY = 0.25  # seconds times the attempt number; short so tests stay fast
FETCH_TIMEOUT = 30.0
WORKERS = 8  # concurrent task fetches, and concurrent webhook deliveries
WEBHOOK_TIMEOUT = 5.0  # Ittybit expects an answer within 5 s (I5)
WEBHOOK_BACKOFF = (1.0, 2.0)  # waits before the 2nd and 3rd attempt
LOCK_TIMEOUT = 10.0  # how long a chunk waits for another request writing the same upload
# The File's media properties: plausible constants, the duration derived from the size.
WIDTH, HEIGHT, FPS = 1920, 1080, 30
SOURCE_BYTES_PER_SECOND = 500_000
CONTENT_RANGE = re.compile(r"bytes[= ](\d+)-(\d+)/(\d+)")
UNSUPPORTED = "Unsupported file type"
UNFETCHABLE = "Could not fetch url"
#: Bare-shape kinds of injected errors that differ from the snake-cased status name (I2).
FAULT_KINDS = {401: "token_invalid", 429: "rate_limited", 500: "internal_error"}


@dataclass
class StoredFile:
    id: str
    folder: str | None
    filename: str
    type: str
    filesize: int
    path: Path  # the stored bytes
    metadata: dict[str, Any]
    label: str | None
    created: str
    status: str = "ready"
    ref: str | None = None


@dataclass
class Task:
    id: str
    url: str
    filename: str | None
    folder: str | None
    ref: str | None
    created: str
    updated: str
    status: str = "pending"  # pending, processing, completed, failed (the envelope's names)
    progress: int = 0
    error: str | None = None
    source: tuple[Path, int, str] | None = None  # fetched and checked: (path, size, type)
    file: StoredFile | None = None


@dataclass
class WebhookEndpoint:
    """A Webhook Endpoint (``POST /webhooks/endpoints``): every event of its topics goes to ``url``."""

    id: str
    url: str
    topics: list[str]
    created_at: int
    status: str = "active"

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "webhook_endpoint", "url": self.url, "topics": list(self.topics),
                "status": self.status, "created_at": self.created_at, "updated_at": self.created_at}


@dataclass
class Upload:
    """What a path received through ``PUT /upload/{path}``."""

    path: str  # "folder/filename"
    data: Path  # the partial file: exactly ``received`` bytes until it becomes a File
    received: int = 0
    total: int | None = None  # TOTAL of the chunks' Content-Range (the size, for a whole PUT)
    file_id: str | None = None  # the File the finished upload became
    bytes_received_total: int = 0  # every body byte, rejected and repeated chunks included
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def complete(self) -> bool:
        return self.received == self.total


class _Rejected(Exception):
    """A source cannot be ingested: the client-facing message and its bare-shape ``kind``."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class _FetchFailed(Exception):
    """One download attempt failed; the reason is logged, the client sees ``Could not fetch url``."""


class IttybitEmulator(Emulator):
    """Ittybit files, ingest tasks and uploads, in the envelope or the bare response shape."""

    name = "ittybit"
    options: ClassVar[dict[str, tuple[Any, str]]] = {
        "api_key": ("sandbox-ittybit-key", "API key accepted in 'Authorization: Bearer <key>'"),
        "shape": ("envelope", "response shape: 'envelope' (API version 2025-01-01) or 'bare' (later versions)"),
        "project": ("sandbox", "project name, for the envelope's project_id and org_id"),
    }
    stages = ("ittybit.processing",)
    settings: ClassVar[dict[str, Setting]] = {  # see "Shapes", "Webhooks" and "Uploads" above
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
        self._lock = threading.RLock()
        self._files: dict[str, StoredFile] = {}
        self._tasks: dict[str, Task] = {}  # creation order: lists reverse it
        self._uploads: dict[str, Upload] = {}
        self._signatures_issued: list[dict[str, Any]] = []
        self._webhooks_sent: list[dict[str, Any]] = []
        self._endpoints: dict[str, WebhookEndpoint] = {}
        self._versions_seen: dict[str, int] = {}  # API calls per Accept-Version ("" = without one)
        self._fetches = ThreadPoolExecutor(WORKERS, thread_name_prefix="ittybit-fetch")
        self._deliveries = ThreadPoolExecutor(WORKERS, thread_name_prefix="ittybit-webhook")

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

    def reset(self) -> None:
        with self._lock:
            self._files.clear()
            self._tasks.clear()
            self._uploads.clear()
            self._signatures_issued.clear()
            self._webhooks_sent.clear()
            self._endpoints.clear()
            self._versions_seen.clear()
            shutil.rmtree(self.ctx.data_dir, ignore_errors=True)
            self.ctx.data_dir.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        self._fetches.shutdown(wait=False, cancel_futures=True)
        self._deliveries.shutdown(wait=False, cancel_futures=True)

    def error_format(self, status: int) -> Response:
        """Injected errors in the current shape (read per request, so a runtime switch applies)."""
        message = "Too many requests" if status == 429 else HTTPStatus(status).phrase
        kind = FAULT_KINDS.get(status, HTTPStatus(status).name.lower())
        return json_response(self._error_body(self._shape(), message, kind), status)

    # -- shapes --------------------------------------------------------------------

    def _shape(self) -> str:
        return self.ctx.setting("shape") or self.shape

    def _envelope(self, shape: str, data: Any, self_link: str, *, kind: str = "object",
                  meta: dict[str, Any] | None = None, links: dict[str, Any] | None = None) -> Any:
        """``data`` as the shape answers it: itself (bare), or inside the 2025-01-01 envelope."""
        if shape == "bare":
            return data
        return {
            "meta": {"request_id": _new_id("req_", 16), "org_id": f"org_{self.project}",
                     "project_id": f"prj_{self.project}", "version": API_VERSION, "type": kind, **(meta or {})},
            "data": data, "error": None, "links": {"self": self_link, **(links or {})},
        }

    def _error_body(self, shape: str, message: str, kind: str) -> dict[str, Any]:
        if shape == "bare":
            return {"kind": kind, "message": message}
        return {"meta": {"request_id": _new_id("req_", 16), "type": "error"}, "data": None,
                "error": {"message": message}, "links": {}}

    def _error(self, shape: str, status: int, message: str, kind: str,
               headers: dict[str, str] | None = None) -> HttpError:
        return HttpError(status, self._error_body(shape, message, kind), headers)

    def _file_json(self, f: StoredFile, status: str | None = None) -> dict[str, Any]:
        path = f"{f.folder}/{f.filename}" if f.folder else f.filename
        return {
            "id": f.id, "object": "file", "kind": "video", "type": f.type, "width": WIDTH, "height": HEIGHT,
            "duration": round(f.filesize / SOURCE_BYTES_PER_SECOND, 3), "fps": FPS, "filesize": f.filesize,
            "url": f"{self._base}/files-cdn/{quote(path)}", "folder": f.folder, "filename": f.filename,
            "status": status or f.status, "metadata": f.metadata, "label": f.label, "ref": f.ref, "created": f.created,
            "updated": f.created,
        }

    def _task_json(self, t: Task, shape: str) -> dict[str, Any]:
        """The Task; caller holds the lock. The shape decides the success vocabulary (see Tasks)."""
        status = "succeeded" if shape == "bare" and t.status == "completed" else t.status
        output = None
        if t.file is not None:
            output = self._file_json(t.file, "ready" if shape == "bare" else "complete")
        return {
            "id": t.id, "object": "task", "kind": "ingest", "status": status, "progress": t.progress,
            "error": {"message": t.error} if t.error else None, "input": _task_input(t),
            "options": {"ref": t.ref} if t.ref else {}, "output": output, "results": None,
            "created": t.created, "updated": t.updated,
        }

    def _file_response(self, shape: str, f: StoredFile, status: int = 200) -> Response:
        return json_response(self._envelope(shape, self._file_json(f), f"{self._base}/files/{f.id}"), status)

    def _task_payload(self, shape: str, t: Task) -> Any:
        return self._envelope(shape, self._task_json(t, shape), f"{self._base}/tasks/{t.id}")

    # -- API handlers --------------------------------------------------------------

    def _api(self, req: Request) -> str:
        """Authenticate an API call; returns the shape of the ``Accept-Version`` it asked for."""
        version = (req.header("Accept-Version") or "").strip()
        with self._lock:
            self._versions_seen[version] = self._versions_seen.get(version, 0) + 1
        shape = VERSIONS.get(version) if version else self._shape()
        if shape is None:  # Ittybit documents no answer for an unknown version: assumed
            raise self._error(self._shape(), 400, f"Accept-Version {version!r} is not an API version; use one of "
                                                  f"{', '.join(VERSIONS)}", "request_invalid")
        scheme, _, token = (req.header("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise self._error(shape, 401, "Invalid API key", "token_invalid")
        return shape

    def _create_file(self, req: Request) -> Response:
        """``POST /files``: fetch and check the source while the client waits (seed, option 1)."""
        shape = self._api(req)
        body = self._json_body(req, shape, FILE_FIELDS)
        url, filename, folder, metadata = self._ingest_fields(body, shape)
        label = _optional_str(body, "label", self._invalid(shape))
        ref = _optional_str(body, "ref", self._invalid(shape))
        try:
            path, size, mime = self._acquire(url, lambda: True)
        except _Rejected as exc:
            raise self._error(shape, 400, str(exc), exc.kind) from None
        f = self._add_file(path, size, mime, folder, filename or _default_filename(url), metadata, label, ref)
        req.entity = f.id
        delay = self.ctx.setting("create_file_answer_delay")
        if delay:  # the file exists; its answer is late (a client's read timeout, see Files)
            self.ctx.stopping.wait(delay)
        return self._file_response(shape, f, 201)

    def _list_files(self, req: Request) -> Response:
        """``GET /files``: newest first, paged by ``limit`` and ``page`` (SDK v1.0.0 ``FilesListRequest``)."""
        shape = self._api(req)
        with self._lock:
            files = [self._file_json(f) for f in reversed(self._files.values())]
        return self._list_response(req, shape, files, "/files")

    def _get_file(self, req: Request) -> Response:
        shape = self._api(req)
        with self._lock:
            f = self._files.get(req.params["file_id"])
        if f is None:
            raise self._error(shape, 404, "File not found", "file_not_found")
        return self._file_response(shape, f)

    def _create_task(self, req: Request) -> Response:
        """``POST /tasks`` ``kind: "ingest"``: 201 ``pending``; the source is fetched in the background."""
        shape = self._api(req)
        if "webhook_url" in (body := self._json_body(req, shape)):  # changelog 2025-12-01; the 400 is assumed
            raise self._error(shape, 400, "webhook_url is no longer supported: register a webhook endpoint "
                                          "(POST /webhooks/endpoints)", "request_invalid")
        self._check_fields(body, TASK_FIELDS, shape)
        kind = body.get("kind")
        if kind is None:
            raise self._error(shape, 400, "kind is required", "request_invalid")
        if kind != "ingest":
            raise self._error(shape, 400, f"kind {kind!r} is not supported: the sandbox emulates 'ingest' tasks",
                              "request_invalid")
        url, filename, folder, _ = self._ingest_fields(body, shape)
        ref = _optional_str(body, "ref", self._invalid(shape))
        now = _now()
        task = Task(id=_new_id("task_"), url=url, filename=filename, folder=folder, ref=ref, created=now, updated=now)
        with self._lock:
            self._tasks[task.id] = task
            answer = self._task_payload(shape, task)
            self._emit(task, "task.created")
        req.entity = task.id
        self._after(0.2, self._start, task)
        return json_response(answer, 201)

    def _get_task(self, req: Request) -> Response:
        shape = self._api(req)
        with self._lock:
            task = self._tasks.get(req.params["task_id"])
            if task is None:
                raise self._error(shape, 404, "Task not found", "task_not_found")
            return json_response(self._task_payload(shape, task))

    def _list_tasks(self, req: Request) -> Response:
        """``GET /tasks``: newest first, paged by ``limit`` and ``page``."""
        shape = self._api(req)
        with self._lock:
            tasks = [self._task_json(t, shape) for t in reversed(self._tasks.values())]
        return self._list_response(req, shape, tasks, "/tasks")

    def _list_response(self, req: Request, shape: str, items: list[Any], path: str) -> Response:
        """One page of ``items``: envelope ``meta``/``links``, or bare with ``Has-More``/``Limit``
        headers (ittybit.com/api/responses; its ``Link`` header is left out)."""
        limit = self._int_arg(req, "limit", LIST_LIMIT, shape)
        page = self._int_arg(req, "page", 1, shape)
        if not 1 <= limit <= LIST_MAX or page < 1:
            raise self._error(shape, 400, f"limit must be 1..{LIST_MAX} and page >= 1", "request_invalid")
        data = items[(page - 1) * limit: page * limit]
        total, pages = len(items), math.ceil(len(items) / limit)

        def page_url(n: int) -> str:
            return f"{self._base}{path}?limit={limit}&page={n}"

        if shape == "bare":
            return json_response(data, headers={"Has-More": "true" if page < pages else "false", "Limit": str(limit)})
        links = {"first": page_url(1), "prev": page_url(page - 1) if page > 1 else None,
                 "next": page_url(page + 1) if page < pages else None, "last": page_url(max(pages, 1))}
        return json_response(self._envelope(shape, data, page_url(page), kind="list", links=links,
                                            meta={"limit": limit, "total": total, "page": page, "pages": pages}))

    def _create_signature(self, req: Request) -> Response:
        """``POST /signatures``: a URL that lets its holder GET or PUT one path until ``expiry`` (I3)."""
        shape = self._api(req)
        body = self._json_body(req, shape)
        invalid = self._invalid(shape)
        filename = body.get("filename")
        if filename is None:
            raise invalid("filename is required")
        filename, folder = _check_name(filename, invalid), _check_folder(body.get("folder"), invalid)
        method = body.get("method", "get")
        if not isinstance(method, str) or method.lower() not in METHODS:
            raise invalid("method must be 'get' or 'put'")
        method = method.lower()
        now = int(time.time())
        expiry = body.get("expiry")
        if expiry is None:
            expiry = now + SIGNATURE_TTL
        elif not isinstance(expiry, int) or isinstance(expiry, bool) or expiry <= now:
            raise invalid("expiry must be a unix time in the future")
        ttl = self.ctx.setting("signature_ttl")
        if ttl is not None:
            expiry = min(expiry, now + ttl)
        path = f"{folder}/{filename}" if folder else filename
        signature = self._sign(path, expiry, method)
        url = f"{self._base}/upload/{quote(path)}?expiry={expiry}&method={method}&signature={signature}"
        with self._lock:
            self._signatures_issued.append({"path": path, "method": method, "expiry": expiry, "signature": signature})
        answer = {"domain": self.ctx.address, "filename": filename, "folder": folder, "expiry": expiry,
                  "method": method, "signature": signature, "url": url}
        return json_response(self._envelope(shape, answer, f"{self._base}/signatures"), 201)

    # -- uploads -------------------------------------------------------------------

    def _upload_put(self, req: Request) -> Response:
        """``PUT /upload/{path}``: the whole file, or one ``Content-Range`` chunk of it."""
        shape = self._shape()
        path = _upload_path(req)
        # Count the body whatever happens next: the server drains rejected bodies too.
        req.on_finish(lambda r: self._count(path, r.bytes_in))
        self._check_signature(req, path, ("put",), shape)
        content_range = req.header("Content-Range")
        chunk = None if content_range is None else self._parse_range(content_range, req.content_length, shape)
        with self._lock:
            upload = self._upload(path)
        if not upload.lock.acquire(timeout=LOCK_TIMEOUT):
            raise self._error(shape, 409, f"Another request is writing this upload; {upload.received} bytes "
                                          "have been received", "upload_offset_mismatch",
                              {"Upload-Offset": str(upload.received)})
        try:
            if chunk is None:
                return self._put_whole(req, shape, upload)
            return self._put_chunk(req, shape, upload, *chunk)
        finally:
            upload.lock.release()

    def _upload_head(self, req: Request) -> Response:
        """``HEAD /upload/{path}``: how much of the path's upload has been received."""
        path = _upload_path(req)
        self._check_signature(req, path, METHODS, self._shape())
        with self._lock:
            upload = self._uploads.get(path)
        headers = {"Upload-Offset": str(upload.received if upload else 0)}
        if upload is not None and upload.total is not None:
            headers["Upload-Length"] = str(upload.total)
        return Response(200, headers=headers)

    def _put_whole(self, req: Request, shape: str, upload: Upload) -> Response:
        """The body is the file: store it, then replace whatever the path held (caller holds the upload)."""
        incoming = self._incoming()
        try:
            size = _receive(req, incoming, 0)
        except ClientGone:
            incoming.unlink(missing_ok=True)
            raise
        mime = _video_type(incoming)
        if mime is None:
            incoming.unlink(missing_ok=True)
            raise self._error(shape, 400, UNSUPPORTED, "format_unsupported")
        upload.data.unlink(missing_ok=True)
        upload.received = upload.total = size
        return self._upload_done(shape, upload, incoming, mime)

    def _put_chunk(self, req: Request, shape: str, upload: Upload, start: int, end: int, total: int) -> Response:
        """Write one chunk at ``start``: 202 while bytes are missing, 201 + File after the last."""
        if start == 0 and (upload.complete or upload.total != total):
            # A new file for this path (overwriting, as a PUT to a path does).
            upload.data.unlink(missing_ok=True)
            upload.received, upload.total, upload.file_id = 0, total, None
        with self._lock:
            done = self._files.get(upload.file_id) if upload.file_id and upload.complete else None
        if done is not None and end + 1 == total == upload.total:
            # The last chunk again: its 201 was lost on the way. Ittybit takes chunks retried
            # singly (I4); answering 409 here would leave the client no way to learn the File.
            return self._file_response(shape, done, 201)
        if start != upload.received:
            raise self._error(shape, 409, f"Content-Range starts at {start} but {upload.received} bytes have "
                                          "been received", "upload_offset_mismatch",
                              {"Upload-Offset": str(upload.received)})
        if total != upload.total:
            raise self._error(shape, 400, f"Content-Range total {total} does not match this upload's total "
                                          f"{upload.total}", "request_invalid")
        _receive(req, upload.data, start)
        upload.received = end + 1
        if not upload.complete:
            link = f"{self._base}/upload/{quote(upload.path)}"
            return json_response(self._envelope(shape, {"received": upload.received}, link), 202)
        mime = _video_type(upload.data)
        if mime is None:
            upload.data.unlink(missing_ok=True)
            raise self._error(shape, 400, UNSUPPORTED, "format_unsupported")
        return self._upload_done(shape, upload, upload.data, mime)

    def _upload_done(self, shape: str, upload: Upload, data: Path, mime: str) -> Response:
        """The path's bytes are complete and checked: they become a File."""
        folder, _, filename = upload.path.rpartition("/")
        f = self._add_file(data, upload.received, mime, folder or None, filename, {}, None)
        upload.file_id = f.id
        return self._file_response(shape, f, 201)

    def _check_signature(self, req: Request, path: str, methods: tuple[str, ...], shape: str) -> None:
        expiry = req.arg("expiry") or ""
        method = (req.arg("method") or "get").lower()
        signature = req.arg("signature") or ""
        if not (expiry.isdigit() and method in methods
                and hmac.compare_digest(signature.encode(), self._sign(path, int(expiry), method).encode())):
            raise self._error(shape, 403, "Invalid signature", "signature_invalid")
        if time.time() >= int(expiry):
            raise self._error(shape, 403, "Signature expired", "signature_expired")

    def _sign(self, path: str, expiry: int, method: str) -> str:
        # URL-safe base64: the signature travels in a query string, where '+' would become ' '.
        digest = hmac.new(self.api_key.encode(), f"{path}\n{expiry}\n{method}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _parse_range(self, header: str, length: int, shape: str) -> tuple[int, int, int]:
        m = CONTENT_RANGE.fullmatch(header.strip())
        if m is None:
            raise self._error(shape, 400, "Content-Range must look like bytes=START-END/TOTAL", "request_invalid")
        start, end, total = map(int, m.groups())
        if not start <= end < total:
            raise self._error(shape, 400, f"Content-Range {header} is not a range within the file", "request_invalid")
        if end - start + 1 != length:
            raise self._error(shape, 400, f"Content-Range {header} covers {end - start + 1} bytes but the body has "
                                          f"{length}", "request_invalid")
        return start, end, total

    def _upload(self, path: str) -> Upload:
        """The path's upload, created on first use; caller holds the lock."""
        upload = self._uploads.get(path)
        if upload is None:
            name = hashlib.sha256(path.encode()).hexdigest()[:32]
            upload = self._uploads[path] = Upload(path, self.ctx.data_dir / "uploads" / name)
        return upload

    def _count(self, path: str, nbytes: int) -> None:
        with self._lock:
            self._upload(path).bytes_received_total += nbytes

    # -- ingest --------------------------------------------------------------------

    def _acquire(self, url: str, alive: Callable[[], bool]) -> tuple[Path, int, str]:
        """Fetch ``url`` and check it is a video: ``(path, size, type)``, else :class:`_Rejected`."""
        path = self._incoming()
        try:
            size = self._fetch(url, path, alive)
        except _FetchFailed as exc:
            path.unlink(missing_ok=True)
            log.info("ittybit: could not fetch %s: %s", url, exc)
            raise _Rejected(UNFETCHABLE, "url_unreachable") from None
        mime = _video_type(path)
        if mime is None:
            path.unlink(missing_ok=True)
            raise _Rejected(UNSUPPORTED, "format_unsupported")
        return path, size, mime

    def _fetch(self, url: str, path: Path, alive: Callable[[], bool]) -> int:
        """Download ``url`` to ``path``: up to 3 attempts expecting 200."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise _FetchFailed(f"unsupported URL scheme {scheme!r}")
        attempt = 1
        while True:
            try:
                return self._download(url, path, alive)
            except _FetchFailed:
                if attempt == FETCH_ATTEMPTS or not alive() or self.ctx.stopping.wait(FETCH_RETRY_DELAY * attempt):
                    raise
            attempt += 1

    def _download(self, url: str, path: Path, alive: Callable[[], bool]) -> int:
        try:
            with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as resp:
                if resp.status != 200:
                    raise _FetchFailed(f"HTTP {resp.status}")
                size = 0
                with open(path, "wb") as f:
                    while block := resp.read(BLOCK_SIZE):
                        if not alive() or self.ctx.stopping.is_set():
                            raise _FetchFailed("cancelled")
                        f.write(block)
                        size += len(block)
                return size
        except urllib.error.HTTPError as exc:
            exc.close()
            raise _FetchFailed(f"HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise _FetchFailed(str(exc.reason)) from None
        except (OSError, ValueError, http.client.HTTPException) as exc:  # ValueError: a malformed URL
            raise _FetchFailed(str(exc) or type(exc).__name__) from None

    def _add_file(self, data: Path, size: int, mime: str, folder: str | None, filename: str,
                  metadata: dict[str, Any], label: str | None, ref: str | None = None) -> StoredFile:
        """Move checked bytes into the project's files."""
        file_id = _new_id("file_")
        path = self.ctx.data_dir / "files" / file_id
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(data, path)  # same filesystem: a rename, even for 2 GiB
        f = StoredFile(id=file_id, folder=folder, filename=filename, type=mime, filesize=size, path=path,
                       metadata=metadata, label=label, created=_now(), ref=ref)
        with self._lock:
            self._files[f.id] = f
        return f

    def _incoming(self) -> Path:
        path = self.ctx.data_dir / "incoming" / uuid.uuid4().hex
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # -- task processing -----------------------------------------------------------

    def _after(self, fraction: float, step: Callable[[Task], None], task: Task) -> None:
        """Run ``step(task)`` after ``fraction`` of ``processing_seconds`` (at once if 0)."""
        seconds = self.ctx.processing_seconds()
        if seconds > 0:
            self.ctx.scheduler.call_later(fraction * seconds, step, task)
        else:
            step(task)

    def _start(self, task: Task) -> None:
        # The fetch may take minutes: off the scheduler's (or the request's) thread.
        if not self.ctx.stopping.is_set():
            self._fetches.submit(self._ingest, task)

    def _ingest(self, task: Task) -> None:
        with self._lock:
            if not self._alive(task):
                return
            task.status, task.progress, task.updated = "processing", 10, _now()
            self._emit(task, "task.updated")
        try:
            source = self._acquire(task.url, lambda: self._alive(task))
        except _Rejected as exc:
            self._end(task, error=str(exc))
            return
        with self._lock:
            if not self._alive(task):
                source[0].unlink(missing_ok=True)
                return
            task.source, task.progress, task.updated = source, 50, _now()
            self._emit(task, "task.updated")
        self._after(0.8, self._complete, task)

    def _complete(self, task: Task) -> None:
        """Processing is over: a failure here is the ``ittybit.processing`` stage's."""
        failed = self.ctx.stage_fails("ittybit.processing")
        with self._lock:
            if not self._alive(task) or task.source is None:
                return
            path, size, mime = task.source
            if failed:
                path.unlink(missing_ok=True)
                self._end(task, error="Processing failed")
                return
            f = self._add_file(path, size, mime, task.folder, task.filename or _default_filename(task.url),
                               {}, None, task.ref)
            self._end(task, file=f)

    def _end(self, task: Task, *, error: str | None = None, file: StoredFile | None = None) -> None:
        """Terminal state, then the events."""
        with self._lock:
            if not self._alive(task):
                return
            task.status = "failed" if error else "completed"
            if file is not None:
                task.progress = 100
            task.error, task.file, task.source, task.updated = error, file, None, _now()
            self._emit(task, "task.updated")
            self._emit(task, "task.failed" if error else "task.succeeded")

    def _emit(self, task: Task, kind: str) -> None:
        """Send the task's ``kind`` event to every active endpoint subscribed to it; caller holds the lock.
        The event is ``{id evt_…, object: "event", kind, data: <task>, created_at}`` with the task
        in the later (bare) vocabulary, as ittybit.com/docs/webhooks shows it."""
        urls = [e.url for e in self._endpoints.values() if e.status == "active" and kind in e.topics]
        if not urls or self.ctx.stopping.is_set():
            return
        event = {"id": _new_id("evt_", 16), "object": "event", "kind": kind, "data": self._task_json(task, "bare"),
                 "created_at": int(time.time())}
        copies = 2 if self.ctx.setting("webhook_duplicates") else 1
        for url in urls:
            self._deliveries.submit(self._deliver, task.id, url, event, copies)

    # -- webhook endpoints ---------------------------------------------------------

    def _create_endpoint(self, req: Request) -> Response:
        """``POST /webhooks/endpoints {url, topics}`` -> 201 Webhook Endpoint (ittybit.com/docs/webhooks)."""
        shape = self._api(req)
        body = self._json_body(req, shape, frozenset({"url", "topics"}))
        invalid = self._invalid(shape)
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise invalid("url is required")
        parts = urlsplit(url)
        # "HTTP endpoints will be rejected"; the sandbox lets a loopback receiver use http.
        if not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)):
            raise invalid("url must be an https URL")
        topics = body.get("topics")
        if not isinstance(topics, list) or not topics or any(t not in TOPICS for t in topics):
            raise invalid(f"topics must be a non-empty list of: {', '.join(TOPICS)}")
        endpoint = WebhookEndpoint(_new_id("we_", 16), url, list(dict.fromkeys(topics)), int(time.time()))
        with self._lock:
            self._endpoints[endpoint.id] = endpoint
        return json_response(self._envelope(shape, endpoint.json(), f"{self._base}/webhooks/endpoints/{endpoint.id}"),
                             201)

    def _list_endpoints(self, req: Request) -> Response:
        shape = self._api(req)
        with self._lock:
            endpoints = [e.json() for e in reversed(self._endpoints.values())]
        return self._list_response(req, shape, endpoints, "/webhooks/endpoints")

    def _delete_endpoint(self, req: Request) -> Response:
        shape = self._api(req)
        with self._lock:
            if self._endpoints.pop(req.params["endpoint_id"], None) is None:
                raise self._error(shape, 404, "Webhook endpoint not found", "webhook_endpoint_not_found")
        return Response(204)

    def _alive(self, task: Task) -> bool:
        """False once the sandbox was reset after the task was created."""
        with self._lock:
            return self._tasks.get(task.id) is task

    # -- webhooks ------------------------------------------------------------------

    def _deliver(self, task_id: str, url: str, payload: Any, copies: int) -> None:
        for _ in range(copies):
            self._post(task_id, url, payload)

    def _post(self, task_id: str, url: str, payload: Any) -> None:
        """POST one webhook: up to 3 attempts, 1 s then 2 s apart; the outcome goes to ``webhooks_sent``."""
        sent = post_json(url, payload, timeout=WEBHOOK_TIMEOUT, backoff=WEBHOOK_BACKOFF, stopping=self.ctx.stopping)
        if sent is None:
            return
        with self._lock:
            self._webhooks_sent.append({"t": time.time(), "task_id": task_id, "url": url, "payload": payload,
                                        "status": sent.status, "attempts": sent.attempts, "error": sent.error})

    # -- request parsing -----------------------------------------------------------

    def _invalid(self, shape: str) -> Callable[[str], HttpError]:
        return lambda message: self._error(shape, 400, message, "request_invalid")

    def _check_fields(self, body: dict[str, Any], allowed: frozenset[str], shape: str) -> None:
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise self._invalid(shape)(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                       f"accepted: {', '.join(sorted(allowed))}")

    def _json_body(self, req: Request, shape: str, allowed: frozenset[str] | None = None) -> dict[str, Any]:
        try:
            body = req.json()
        except HttpError as exc:
            message = "Request body too large" if exc.status == 413 else "Invalid JSON body"
            raise self._error(shape, exc.status, message, "request_invalid") from None
        if not isinstance(body, dict):
            raise self._invalid(shape)("The request body must be a JSON object")
        if allowed is not None:
            self._check_fields(body, allowed, shape)
        return body

    def _ingest_fields(self, body: dict[str, Any], shape: str) -> tuple[str, str | None, str | None, dict[str, Any]]:
        """``url``, ``filename``, ``folder``, ``metadata`` of a file or ingest-task body."""
        invalid = self._invalid(shape)
        url = body.get("url")
        if url is None or url == "":
            raise self._error(shape, 400, "url is required", "url_required")
        if not isinstance(url, str):
            raise invalid("url must be a string")
        filename = body.get("filename")
        if filename is not None:
            filename = _check_name(filename, invalid)
        metadata = body.get("metadata")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, dict):
            raise invalid("metadata must be an object")
        return url, filename, _check_folder(body.get("folder"), invalid), metadata

    def _int_arg(self, req: Request, name: str, default: int, shape: str) -> int:
        raw = req.arg(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise self._invalid(shape)(f"{name} must be an integer") from None


def _upload_path(req: Request) -> str:
    return unquote(req.params["path"])


def _task_input(t: Task) -> dict[str, Any]:
    return {"url": t.url, "filename": t.filename, "folder": t.folder}


def _optional_str(body: dict[str, Any], name: str, invalid: Callable[[str], HttpError]) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    return value


def _check_name(value: Any, invalid: Callable[[str], HttpError]) -> str:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value in (".", "..") \
            or len(value) > 255:
        raise invalid("filename must be a file name of 1..255 characters without '/'")
    return value


def _check_folder(value: Any, invalid: Callable[[str], HttpError]) -> str | None:
    """``a/b`` for ``a/b``, ``/a/b/`` or ``a/b/``; None for no folder."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid("folder must be a string")
    folder = value.strip("/")
    if folder and any(part in ("", ".", "..") or "\\" in part for part in folder.split("/")):
        raise invalid("folder must be a path of names separated by '/'")
    return folder or None


def _default_filename(url: str) -> str:
    """The URL's last path segment, as Ittybit names an ingested file by default."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name if name and name not in (".", "..") and "\\" not in name and len(name) <= 255 else "file"


def _receive(req: Request, path: Path, offset: int) -> int:
    """Write the body at ``offset`` of ``path`` in 1 MiB blocks; all or nothing. Returns its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if offset else "wb") as f:
        f.seek(offset)
        try:
            f.writelines(req.iter_body())
        except ClientGone:
            f.truncate(offset)  # a chunk counts whole or not at all: the client resends it whole
            raise
    return req.bytes_in


def _video_type(path: Path) -> str | None:
    """The MIME type of a video container, or None (the emulators' stand-in for a probe)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None
    if not is_video_container(head):
        return None
    return "video/webm" if head.startswith(EBML_MAGIC) else "video/mp4"


def _new_id(prefix: str, length: int = 12) -> str:
    """``file_abcdefgh1234``-style ids (seed)."""
    return prefix + "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
