"""Ingest.io emulator: videos, encoding inputs with signed S3-style uploads, jobs, webhooks.

Follows ``design/providers.md`` §4 and Ingest's API reference (``ingest/api-reference``,
seed ``shared/seeds/ingestio-api-reference.md``; "the docs": ``versioning.md``,
``rate-limiting.md``, ``pagination.md``, ``request-ids.md``, ``inputs/upload-*.md``,
``jobs/object.md``, ``webhooks/*.md``, ``events/*.md``). The paths are Ingest's, so the fleet
only swaps the base URL of ``api.ingest.io``; the signed part URLs point at the sandbox too.

Endpoints, by the names the request log and fault rules use:

========================  ===========================================  ================================
ingestio.create_video     ``POST /videos``                             201 video ``CREATED`` / 400
ingestio.publish_videos   ``POST /videos/publish [ids]``               200 videos ``PUBLISHED`` / 400 404 409
ingestio.list_videos      ``GET /videos?search=&status=``              200/206 page, oldest first
ingestio.count_videos     ``HEAD /videos?status=``                     204 + ``Resource-Count``
ingestio.get_video        ``GET /videos/{id}``                         200 / 404
ingestio.create_input     ``POST /encoding/inputs``                    201 input ``uploading`` / 400
ingestio.list_inputs      ``GET /encoding/inputs``, ``GET /inputs``    200/206 page; ``filter=<state>``
ingestio.count_inputs     ``HEAD /encoding/inputs``, ``HEAD /inputs``  204 + ``Resource-Count``
ingestio.get_input        ``GET /encoding/inputs/{id}``, ``/inputs/…``  200 / 404
ingestio.upload_init      ``POST /encoding/inputs/{id}/upload``        201 ``{key[, uploadId, …]}``
ingestio.upload_sign      ``POST …/upload/sign``                       200 signed part PUT
ingestio.part_put         ``PUT /ingestio-s3/{key}``                   200 + ``ETag`` / 403 404 (S3 XML)
ingestio.upload_complete  ``POST …/upload/complete``                   200 input / 404 409
ingestio.upload_abort     ``POST …/upload/abort``                      201 input / 404 409
ingestio.list_profiles    ``GET /encoding/profiles``                   200 page (the default profile)
ingestio.get_profile      ``GET /encoding/profiles/{id}``              200 / 404
ingestio.create_job       ``POST /encoding/jobs``                      201 job ``status: 0`` / 400 404 409
ingestio.list_jobs        ``GET /encoding/jobs?video=``                200/206 page
ingestio.count_jobs       ``HEAD /encoding/jobs``                      204 + ``Resource-Count``
ingestio.get_job          ``GET /encoding/jobs/{id}``                  200 / 404
ingestio.job_progress     ``GET /encoding/jobs/{id}/progress``         200 ``{progress, status}``
ingestio.create_hook      ``POST /hooks``                              201 hook / 400
ingestio.list_hooks       ``GET /hooks``                               200/206 page
ingestio.get_hook         ``GET /hooks/{id}`` (``/hooks/{event}``)     200 hook (page of its hooks) / 404
ingestio.delete_hook      ``DELETE /hooks/{id}``                       204 / 404
ingestio.processing       (no HTTP) a job's encoding                   target of ``action: "fail"`` rules
========================  ===========================================  ================================

Every API call (all but ``part_put``) needs ``Accept: application/vnd.ingest.v1+json``
(docs: versioning; else 406) and ``Authorization: Bearer <JWT>``: an HS256 JWT signed with
the ``jwt_secret`` option, whose ``exp`` is in the future and whose ``network_id`` is the
emulator's one network (else 401). :func:`mint_token` makes such tokens (and
:func:`default_profile_id` names the profile) without a running sandbox; ``env()`` hands the
fleet one valid for ten years. JSON bodies may come as
``application/vnd.ingest.v1+json`` (the JS SDK) or ``application/json`` (else 415); an
empty body counts as ``{}``. Ids are UUID4 strings, times RFC 3339 (UTC, microseconds).

Every API answer carries ``Request-Id`` (a fresh UUID; docs: request ids) and
``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` (whole seconds until the window ends).
The limit is the provider's own (docs: rate limiting): a fixed window of ``rate_window``
seconds (fault setting, default 60) starting with the first request after the previous
window ended, ``rate_limit`` requests (default 600; 0 = off, and then no X-RateLimit
headers); over it: 429 with an empty body, ``Retry-After`` and Remaining 0. Every admitted
API call counts, including those a fault then answers; 406/401 refusals do not. The
sandbox's generic knobs (``rate_429``, ``error_5xx_rate``, rules, latency) apply on top,
after the version, token and limit checks; their 429s have an empty body too, and carry
the same headers with Remaining 0 and, when they have a ``Retry-After``, a Reset equal to
it (so a client that waits for the reset waits as long as the 429 asked, not for the rest of
the emulator's own window).

Errors are ``{"errors": ["<message>"]}`` (not documented; the JS SDK looks for ``errors``),
injected ones with the status's reason phrase; 429s have an empty body. 400 names the
field (``title is required``, ``size must be an integer >= 1``), 404 the unknown id, 409
the conflict. The signed part PUT answers as S3 does: ``<Error><Code>…</Code><Message>…
</Message></Error>`` as XML (403 ``SignatureDoesNotMatch``, 403 ``AccessDenied`` "Request
has expired", 404 ``NoSuchUpload``); injected faults there use the JSON format above.

Lists (videos, inputs, jobs, hooks, profiles) are pages, oldest first (docs: pagination):
``page_size`` items (fault setting, default 10) unless a ``Range: items <first>-<last>``
header asks for fewer; the answer carries ``Content-Range: items <first>-<last>/<total>``
(``items */<total>`` for an empty page) and, when more remain, is a **206** with
``Next-Range: items <next_first>-<next_last>``, which the client sends back verbatim as
``Range``. A malformed Range is 416; one past the end is an empty 200. ``GET /videos``
filters by ``search`` (case-insensitive substring of the title) and ``status``
(comma-separated: created, published, draft, processing, trashed, error; **default
draft,published** as the docs say, so a just-created video is listed only with
``status=created``); ``GET /encoding/inputs`` by ``filter`` (one of uploading, queued,
processing, error, ready: the reference's input states, which exist **only** as this filter -
the Input object has no ``status`` field, so the emulator shows none; the reference's
``video-only``, ``audio-only``, ``has-video``, ``has-audio``, ``trashed`` are not emulated, 400)
and ``search`` (case-insensitive substring of the file name; the node SDK's
``Inputs.search`` sends ``?search=…&filter=…``, the reference does not list it);
``GET /encoding/jobs`` by ``video`` (*assumed*: not documented). Videos carry their status upper-case,
as the docs' ``"CREATED"``: ``CREATED`` -> ``PROCESSING`` (a job runs) -> ``DRAFT``
(encoded, with a playback URL under ``<sandbox>/ingestio-play/``, not served) or ``ERROR``; a
``DRAFT`` video becomes ``PUBLISHED`` through ``POST /videos/publish``.

Uploads (docs: inputs/upload-*; the node SDK's uploader). ``POST /encoding/inputs
{filename, type, size}`` creates an input (state ``uploading``; its ``path``, the
upload's ``key``, is ``<network>/<input id>/<filename>``). Then:

* init ``POST …/upload?type=amazonMP|amazon {type, size}`` -> 201. ``amazonMP``:
  ``{key, uploadId, pieceCount, pieceSize}``, ``pieceSize`` the ``piece_size`` setting
  (default and minimum 5 MiB), ``pieceCount`` = ceil(size / pieceSize). ``amazon``:
  ``{key}``. Another init replaces the input's open upload (its uploadId is unknown
  afterwards); an input whose upload completed answers 409.
* sign ``POST …/upload/sign {partNumber, uploadId, contentType}`` (``{contentType}`` for
  ``amazon``; the reference lists ``partNumber``, ``uploadId``, ``contentMd5``, the node SDK's
  ``UploaderBase._signChunk`` also sends ``contentType: 'application/octet-stream'``) -> 200
  ``{authHeader, dateHeader, url, securityToken}``: ``url`` is
  ``<sandbox>/ingestio-s3/<key>?partNumber=N&uploadId=U`` (no query for ``amazon``),
  ``authHeader`` an ``AWS4-HMAC-SHA256 …, Signature=<hex>`` whose signature is an
  HMAC-SHA256 of the method, path, query, the signed ``contentType`` (empty if the sign
  call named none), ``dateHeader`` and ``securityToken``, keyed with a secret of the
  emulator: a PUT whose ``Content-Type`` is not exactly the signed one (or that sends one
  the sign call did not name) is 403 ``SignatureDoesNotMatch``, as S3 refuses a signature
  that covers ``content-type``. The state records each part's last signed type
  (``signed_types``). ``dateHeader`` is an ``x-amz-date`` (``YYYYMMDDTHHMMSSZ``); the
  signature expires ``sign_ttl`` seconds later (setting, default 900). The setting
  ``expire_next_signatures: N`` makes the next N signatures (counted from the ``PUT
  /_sandbox/faults`` that set it) come out already expired. A missing field is 400, an
  unknown uploadId 404; a partNumber outside 1..pieceCount, an upload no longer open or
  none initialised 409 (the same for complete and abort).
* ``PUT <url>`` with ``Authorization``, ``x-amz-date``, ``x-amz-security-token`` as
  signed (no Accept, no bearer, no X-RateLimit headers): 200 + ``ETag: "<md5 hex>"``. The
  body is streamed to disk and stored only once it arrived whole, replacing a previous copy
  of that part; a body cut short (client gone, ``drop`` fault) stores nothing. An
  ``amazon`` PUT is the whole file and completes the upload (there is no complete call for
  it, though one answers 200 once the file is in). A PUT for an upload that is no longer
  open (completed, aborted, replaced by another init) is 404 ``NoSuchUpload`` (a sign
  for it 409 or 404); a client that lost a PUT's 200 finds the input under ``filter=ready``.
* complete ``POST …/upload/complete {uploadId}`` -> 200 + the input: parts 1..pieceCount
  must all be stored and all but the last exactly pieceSize (else 409 naming them); they
  are joined in order into one file (streamed), whose size and sha256 the state shows.
  While the join runs the input is ``processing`` and the upload answers 409 ``upload is
  being completed`` (a client whose complete timed out finds the input under
  ``filter=processing``, then ``ready``). Again on a completed upload: 409 ``upload already
  completed`` (the reference only says "409 if the upload isn't properly canceled"). The
  setting ``lose_next_complete_answers: N`` carries out the next N completes and then closes
  their connection without an answer (armed by the ``PUT /_sandbox/faults`` that sets it).
* abort ``POST …/upload/abort {uploadId}`` -> 201 + the input: the stored parts are
  dropped, the input stays ``uploading`` (a new init may start over); 409 on an upload that
  is completed or already aborted. ``amazon`` uploads have nothing to abort (409).

A completed file makes the input ``ready`` if it is an MP4/MOV/Matroska/WebM container
(:func:`sandbox.media.is_video_container`, the emulators' stand-in for a probe), else
``error``; either way ``inputs.complete`` is emitted (the state's ``status`` tells which).
``inputs.cancelled`` follows an abort.

Jobs (docs: ``jobs/object.md``, ``jobs/get.md`` (the list), ``jobs/count.md``, on the
api-reference's ``encoding-jobs`` branch only; ``GET /encoding/jobs/{id}`` is *assumed* from
the node SDK's ``Resource.getById`` (``lib/core/Resource.js``), ``/progress`` from its
``lib/resources/Jobs.js``; the ``?video=`` list filter is *assumed*, documented nowhere).
``POST /encoding/jobs {inputs: [id], profile, video}`` -> 201 job
``{id, url, status: 0, progress: 0, profile, video, inputs, created_at, updated_at,
deleted_at}``; every input must exist and be ``ready`` (409), profile and video must exist
(404). There is no idempotency: two POSTs make two jobs. Over ``processing_seconds`` (the
Sandbox's, or the ingestio fault config's) progress goes 10, 50, 90 (at 20/50/80 %), then
the job ends ``status: 1``, ``progress: 100`` with the video ``DRAFT``, or - when the
``ingestio.processing`` stage fails (a ``fail`` rule or ``processing_fail_rate``) -
``status: 10`` with the video ``ERROR``. The profile is the default one
(``INGEST_INGESTIO_PROFILE``, a UUID derived from the network, so it survives reset).

Webhooks (docs: webhooks/*, events/*). ``POST /hooks {event_names, url, enabled?
(default true), secret?}`` -> 201 ``{id, event_names, url, enabled, secret, created_at}``
(a 16-hex-digit secret is generated if none is given); event names must be among the
documented ones. The emulator emits ``videos.create``, ``videos.update`` (status changes),
``inputs.complete``, ``inputs.cancelled``, ``jobs.create``, ``jobs.complete`` and
``jobs.error``. For each enabled hook subscribed to the event it POSTs, from a background
thread, ``{"event", "URL": <API URL of the resource>, "event_object": {"event_id",
"network_id", "event_name", "created_at", "data": <the resource as GET answers it>}}``
with ``X-Ingest-Signature`` (hex HMAC-SHA1 of the raw body keyed with the hook's secret),
``X-Ingest-Request-Attempt`` (1..3) and, on attempts 2 and 3, ``X-Ingest-Retry-Reason``
(why the previous one failed: ``HTTP 500``, or the network error). Up to 3 attempts
(non-2xx or network error, 5 s timeout), 0.5 s then 1 s apart; an answer carrying
``X-Ingest-No-Retry`` ends them. Each delivery goes to the state's ``webhooks_sent``;
``webhook_duplicates: true`` sends each twice (same ``event_id``).

Not emulated: updates and deletes of videos and inputs, ETag/304 on reads, thumbnails,
live streams, networks, ``DELETE /hooks`` with a body, the docs' POST-policy variant of
``amazon`` uploads (the SDK signs a PUT for those too, as here).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, unquote, urlencode, urlsplit
from xml.sax.saxutils import escape

from .emulator import Context, Emulator
from .faults import FaultConfigError, Setting
from .media import is_video_container
from .notify import post_json
from .web import BLOCK_SIZE, ClientGone, HttpError, Request, Response, Route, json_response, route

ACCEPT = "application/vnd.ingest.v1+json"
JSON_TYPES = (ACCEPT, "application/json")
DEFAULT_SECRET = "sandbox-ingestio-secret"
DEFAULT_NETWORK = "4a7d1ed4-14c7-4a8b-9b3e-5e3b1f0c2d66"
TOKEN_LIFETIME = 10 * 365 * 24 * 3600  # the token env() hands out
MiB = 1024 * 1024
MIN_PIECE_SIZE = 5 * MiB  # S3's minimum part size, the docs' "minimum size of 5MB per part"
UPLOAD_TYPES = ("amazonMP", "amazon")
VIDEO_STATUSES = ("created", "published", "draft", "processing", "trashed", "error")
DEFAULT_VIDEO_STATUSES = ("draft", "published")
INPUT_STATES = ("uploading", "queued", "processing", "error", "ready")
JOB_IN_PROGRESS, JOB_COMPLETED, JOB_FAILED = 0, 1, 10
PROGRESS_STEPS = ((0.2, 10), (0.5, 50), (0.8, 90))  # (fraction of processing_seconds, progress)
#: The documented event names (events/supported.md); hooks may subscribe to any of them.
EVENTS = (
    "users.delete", "videos.create", "videos.update", "videos.delete", "videos.thumbnails.create",
    "videos.thumbnails.delete", "inputs.create", "inputs.complete", "inputs.update", "inputs.delete",
    "inputs.cancelled", "jobs.create", "jobs.error", "jobs.complete", "networks.update", "networks.update_status",
    "networks.users.create", "networks.users.delete", "networks.keys.create", "networks.keys.update",
    "networks.keys.delete", "profiles.create", "profiles.update", "profiles.delete", "roles.create",
    "roles.update", "roles.delete",
)
WORKERS = 8  # concurrent webhook deliveries
WEBHOOK_TIMEOUT = 5.0
WEBHOOK_BACKOFF = (0.5, 1.0)  # waits before the 2nd and 3rd attempt
NO_RETRY_HEADER = "X-Ingest-No-Retry"
RANGE = re.compile(r"items\s+(\d+)-(\d+)")
S3_PREFIX = "/ingestio-s3/"
AMZ_DATE = "%Y%m%dT%H%M%SZ"
ACCESS_KEY = "ASIASANDBOXINGESTIO00"
SIGNATURE = re.compile(r"Signature=([0-9a-f]{64})")
PART_PUT = "ingestio.part_put"


def mint_token(secret: str, *, exp: int, network_id: str = DEFAULT_NETWORK, sub: str | None = None) -> str:
    """An HS256 JWT ``{"sub", "network_id", "exp"}`` as the emulator accepts it when
    ``secret`` is its ``jwt_secret`` (``sub`` defaults to the network's user), so a test can
    make the token before the sandbox runs, or an expired or foreign one."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"sub": sub or default_user_id(network_id), "network_id": network_id, "exp": exp}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def default_profile_id(network_id: str = DEFAULT_NETWORK) -> str:
    """The id of a network's default encoding profile: fixed per network, so a test can know it
    before the sandbox runs (``INGEST_INGESTIO_PROFILE``)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ingestio:{uuid.UUID(network_id)}:default-profile"))


def default_user_id(network_id: str = DEFAULT_NETWORK) -> str:
    """The user a network's minted tokens speak for (their ``sub``)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ingestio:{uuid.UUID(network_id)}:user"))


@dataclass(frozen=True)
class _AtLeast(Setting):
    """A whole-number setting with a lower bound; a configuration below it is rejected."""

    minimum: int = 0

    def check(self, name: str, value: Any) -> None:
        super().check(name, value)
        if value < self.minimum:
            raise FaultConfigError(f"{name} must be an integer >= {self.minimum}")


@dataclass
class Video:
    id: str
    title: str
    description: str | None
    tags: list[str]
    author: str
    created_at: str
    updated_at: str
    status: str = "CREATED"  # CREATED, PROCESSING, DRAFT, ERROR, PUBLISHED (POST /videos/publish); TRASHED: not here
    playback_urls: list[str] = field(default_factory=list)
    published_at: str | None = None


@dataclass
class Part:
    """One part number of an upload: its stored copy (size and etag None until a PUT of it
    arrived whole) and every PUT of it that passed the signature check."""

    size: int | None = None
    etag: str | None = None
    puts: int = 0
    bytes_received: int = 0  # body bytes of those PUTs, cut ones included


@dataclass
class Upload:
    type: str  # amazonMP or amazon
    upload_id: str | None  # None for amazon
    size: int  # as declared at init
    piece_size: int
    piece_count: int
    dir: Path  # where its parts are stored
    state: str = "open"  # open, completing, completed, aborted
    parts: dict[int, Part] = field(default_factory=dict)


@dataclass
class Input:
    id: str
    filename: str
    type: str
    size: int
    path: str  # the upload key: <network>/<id>/<filename>
    created_at: str
    updated_at: str
    status: str = "uploading"
    upload: Upload | None = None
    signatures: Counter[int] = field(default_factory=Counter)  # part number -> signatures issued
    signed_types: dict[int, str | None] = field(default_factory=dict)  # part number -> contentType last signed
    assembled_size: int | None = None
    sha256: str | None = None


@dataclass
class Job:
    id: str
    profile: str
    video: str
    inputs: list[str]
    created_at: str
    updated_at: str
    status: int = JOB_IN_PROGRESS
    progress: int = 0


@dataclass
class Hook:
    id: str
    event_names: list[str]
    url: str
    enabled: bool
    secret: str
    created_at: str


class _BadToken(Exception):
    """The bearer token is not acceptable; the message says why (it goes into the 401)."""


class _S3Error(HttpError):
    """An error of the signed part PUT, in S3's XML format."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(status, message)
        self.code = code

    def response(self) -> Response:
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code>'
               f"<Message>{escape(self.body)}</Message><RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>")
        return Response(self.status, xml.encode(), {"Content-Type": "application/xml"})


def _no_such_upload() -> _S3Error:
    return _S3Error(404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, "
                                         "or the upload may have been aborted or completed.")


class IngestioEmulator(Emulator):
    """Ingest.io's videos, inputs and their signed uploads, encoding jobs and webhooks, for one network."""

    name = "ingestio"
    options: ClassVar[dict[str, tuple[Any, str]]] = {
        "jwt_secret": (DEFAULT_SECRET, "HS256 secret of the bearer JWTs the API accepts"),
        "network_id": (DEFAULT_NETWORK, "UUID of the emulated network (the JWTs' network_id claim)"),
    }
    stages = ("ingestio.processing",)
    settings: ClassVar[dict[str, Setting]] = {  # see the module docstring
        "rate_limit": Setting(600, int),  # requests per window; 0 = off
        "rate_window": _AtLeast(60, int, minimum=1),  # seconds
        "page_size": _AtLeast(10, int, minimum=1),
        "piece_size": _AtLeast(MIN_PIECE_SIZE, int, minimum=MIN_PIECE_SIZE),
        "sign_ttl": Setting(900, int),  # seconds a part signature lives
        "expire_next_signatures": Setting(0, int),
        "lose_next_complete_answers": Setting(0, int),
        "webhook_duplicates": Setting(False, bool),
    }

    def __init__(self, ctx: Context, *, jwt_secret: str = DEFAULT_SECRET, network_id: str = DEFAULT_NETWORK):
        super().__init__(ctx)
        self.jwt_secret = jwt_secret
        self.network_id = str(uuid.UUID(network_id))
        #: The user the minted token speaks for (``sub``; a video's ``author`` by default).
        self.user_id = default_user_id(self.network_id)
        #: The network's default encoding profile (``INGEST_INGESTIO_PROFILE``).
        self.profile_id = default_profile_id(self.network_id)
        #: A token valid for ten years, for the fleet (``INGEST_INGESTIO_API_KEY``).
        self.api_key = mint_token(jwt_secret, exp=int(time.time()) + TOKEN_LIFETIME, network_id=self.network_id)
        self._s3_secret = secrets.token_bytes(32)
        self._base = f"http://{ctx.address}"
        self._profile_time = _now()
        self._lock = threading.RLock()
        self._deliveries = ThreadPoolExecutor(WORKERS, thread_name_prefix="ingestio-webhook")
        self._generation = 0  # bumped by reset, so late deliveries of a previous test are not recorded
        self._clear()

    def _clear(self) -> None:
        """Forget every entity and counter; caller holds the lock (or is the constructor)."""
        self._videos: dict[str, Video] = {}  # insertion order = creation order: lists are oldest first
        self._inputs: dict[str, Input] = {}
        self._jobs: dict[str, Job] = {}
        self._hooks: dict[str, Hook] = {}
        self._webhooks_sent: list[dict[str, Any]] = []
        self._requests: Counter[str] = Counter()
        self._throttled = 0
        self._window_end = 0.0  # monotonic time the current rate window ends
        self._window_used = 0
        self._expire_left = 0
        self._lose_complete_left = 0

    # -- Emulator ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        p = self.name
        video = r"/videos/(?P<video_id>[^/]+)"
        inputs = r"/(?:encoding/)?inputs/?"
        upload = r"/encoding/inputs/(?P<input_id>[^/]+)/upload"
        job = r"/encoding/jobs/(?P<job_id>[^/]+)"

        def param(name: str) -> Callable[[Request], str]:
            return lambda req: req.params[name]

        return [
            route("POST", r"/videos/?", "ingestio.create_video", self._create_video, provider=p),
            route("POST", r"/videos/publish/?", "ingestio.publish_videos", self._publish_videos, provider=p),
            route("GET", r"/videos/?", "ingestio.list_videos", self._list_videos, provider=p),
            route("HEAD", r"/videos/?", "ingestio.count_videos", self._count_videos, provider=p),
            route("GET", video, "ingestio.get_video", self._get_video, provider=p, entity=param("video_id")),
            route("POST", r"/encoding/inputs/?", "ingestio.create_input", self._create_input, provider=p),
            route("GET", inputs, "ingestio.list_inputs", self._list_inputs, provider=p),
            route("HEAD", inputs, "ingestio.count_inputs", self._count_inputs, provider=p),
            route("GET", r"/(?:encoding/)?inputs/(?P<input_id>[^/]+)", "ingestio.get_input", self._get_input,
                  provider=p, entity=param("input_id")),
            route("POST", upload + "/?", "ingestio.upload_init", self._upload_init, provider=p,
                  entity=param("input_id")),
            route("POST", upload + "/sign/?", "ingestio.upload_sign", self._upload_sign, provider=p,
                  entity=param("input_id")),
            route("POST", upload + "/complete/?", "ingestio.upload_complete", self._upload_complete, provider=p,
                  entity=param("input_id")),
            route("POST", upload + "/abort/?", "ingestio.upload_abort", self._upload_abort, provider=p,
                  entity=param("input_id")),
            route("PUT", S3_PREFIX + r"(?P<key>.+)", PART_PUT, self._part_put, provider=p,
                  entity=lambda req: _key_input(unquote(req.params["key"]))),
            route("GET", r"/encoding/profiles/?", "ingestio.list_profiles", self._list_profiles, provider=p),
            route("GET", r"/encoding/profiles/(?P<profile_id>[^/]+)", "ingestio.get_profile", self._get_profile,
                  provider=p, entity=param("profile_id")),
            route("POST", r"/encoding/jobs/?", "ingestio.create_job", self._create_job, provider=p),
            route("GET", r"/encoding/jobs/?", "ingestio.list_jobs", self._list_jobs, provider=p),
            route("HEAD", r"/encoding/jobs/?", "ingestio.count_jobs", self._count_jobs, provider=p),
            route("GET", job, "ingestio.get_job", self._get_job, provider=p, entity=param("job_id")),
            route("GET", job + "/progress/?", "ingestio.job_progress", self._job_progress, provider=p,
                  entity=param("job_id")),
            route("POST", r"/hooks/?", "ingestio.create_hook", self._create_hook, provider=p),
            route("GET", r"/hooks/?", "ingestio.list_hooks", self._list_hooks, provider=p),
            route("GET", r"/hooks/(?P<hook_id>[^/]+)", "ingestio.get_hook", self._get_hook, provider=p,
                  entity=param("hook_id")),
            route("DELETE", r"/hooks/(?P<hook_id>[^/]+)", "ingestio.delete_hook", self._delete_hook, provider=p,
                  entity=param("hook_id")),
        ]

    def env(self, base_url: str) -> dict[str, str]:
        return {"INGEST_INGESTIO_BASE_URL": base_url, "INGEST_INGESTIO_API_KEY": self.api_key,
                "INGEST_INGESTIO_PROFILE": self.profile_id}

    def state(self) -> dict[str, Any]:
        """``videos``, ``jobs`` and ``hooks`` as the API shows them; ``inputs`` with their
        upload (``type``, ``uploadId``, ``size``, ``pieceSize``, ``pieceCount``, ``state``,
        ``parts`` ``{"<n>": {size, etag, puts, bytes_received}}``), ``signatures``
        ``{"<part>": count}``, ``signed_types`` ``{"<part>": contentType}``, ``status`` (the
        input's state, which the API only shows as a list filter), ``aborted``, ``completed``,
        ``assembled_size``, ``sha256``;
        ``webhooks_sent``; ``requests`` per endpoint, ``throttled`` (own-limit 429s),
        ``rate_window`` and ``expire_next_signatures_left``."""
        with self._lock:
            now = time.monotonic()
            return {
                "network_id": self.network_id,
                "profile_id": self.profile_id,
                "videos": [self._video_json(v) for v in self._videos.values()],
                "inputs": [self._input_state(i) for i in self._inputs.values()],
                "jobs": [self._job_json(j) for j in self._jobs.values()],
                "hooks": [_hook_json(h) for h in self._hooks.values()],
                "webhooks_sent": [dict(w) for w in self._webhooks_sent],
                "requests": dict(self._requests),
                "throttled": self._throttled,
                "rate_window": {"used": self._window_used if self._window_end > now else 0,
                                "resets_in": max(0.0, round(self._window_end - now, 3))},
                "expire_next_signatures_left": self._expire_left,
            }

    def reset(self) -> None:
        """Forget everything; the minted token and the default profile stay valid."""
        with self._lock:
            self._generation += 1
            self._clear()
            shutil.rmtree(self.ctx.data_dir, ignore_errors=True)
            self.ctx.data_dir.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        self._deliveries.shutdown(wait=False, cancel_futures=True)

    def configured(self) -> None:
        """A new fault configuration arms ``expire_next_signatures`` afresh."""
        with self._lock:
            self._expire_left = self.ctx.setting("expire_next_signatures")
            self._lose_complete_left = self.ctx.setting("lose_next_complete_answers")

    def error_format(self, status: int) -> Response:
        """Injected errors: ``{"errors": [<reason phrase>]}``; a 429 has an empty body (docs)."""
        if status == 429:
            return Response(429)
        return json_response({"errors": [HTTPStatus(status).phrase]}, status)

    def admit(self, req: Request) -> Response | None:
        """API calls: the version (406), the bearer JWT (401), then the own rate limit (429).
        Part PUTs are authorised by their signature instead."""
        with self._lock:
            self._requests[req.endpoint or "?"] += 1
        if req.endpoint == PART_PUT:
            return None
        if not _accepts(req.header("Accept")):
            return _error(406, f"Accept must be {ACCEPT}").response()
        try:
            self._claims(req)
        except _BadToken as exc:
            return _error(401, str(exc)).response()
        return self._throttle()

    def finish(self, req: Request, response: Response) -> None:
        """``Request-Id`` and ``X-RateLimit-*`` on every API answer (not on part PUTs)."""
        if req.endpoint == PART_PUT:
            return
        response.headers["Request-Id"] = str(uuid.uuid4())
        limit = self.ctx.setting("rate_limit")
        if not limit:
            return
        with self._lock:
            now = time.monotonic()
            active = self._window_end > now
            used = self._window_used if active else 0
            reset = math.ceil(self._window_end - now) if active else self.ctx.setting("rate_window")
        remaining = 0 if response.status == 429 else max(0, limit - used)
        if response.status == 429 and "Retry-After" in response.headers:
            # A 429 speaks of the window that refused it: an injected one ends with its Retry-After.
            reset = int(response.headers["Retry-After"])
        response.headers.update({"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                                 "X-RateLimit-Reset": str(reset)})

    # -- tokens and the rate limit -------------------------------------------------

    def _claims(self, req: Request) -> dict[str, Any]:
        """The verified claims of the request's bearer JWT, else :class:`_BadToken`."""
        scheme, _, token = (req.header("Authorization") or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _BadToken("missing bearer token")
        parts = token.split(".")
        if len(parts) != 3:
            raise _BadToken("malformed token")
        try:
            header, claims, signature = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1])), _unb64(parts[2])
        except ValueError:  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise _BadToken("malformed token") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
            raise _BadToken("token must be an HS256 JWT")
        expected = hmac.new(self.jwt_secret.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise _BadToken("invalid token signature")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise _BadToken("token has no exp claim")
        if exp <= time.time():
            raise _BadToken("token expired")
        if claims.get("network_id") != self.network_id:
            raise _BadToken("token is not for this network")
        return claims

    def _throttle(self) -> Response | None:
        """Count one request in the fixed window; a 429 (empty body) once it is full."""
        limit = self.ctx.setting("rate_limit")
        if not limit:
            return None
        with self._lock:
            now = time.monotonic()
            if self._window_end <= now:
                self._window_end, self._window_used = now + self.ctx.setting("rate_window"), 0
            if self._window_used >= limit:
                self._throttled += 1
                return Response(429, headers={"Retry-After": str(max(1, math.ceil(self._window_end - now)))})
            self._window_used += 1
        return None

    # -- videos --------------------------------------------------------------------

    def _create_video(self, req: Request) -> Response:
        body = _body(req)
        title = _string(body, "title")
        description = _string(body, "description", required=False, empty=True)
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _error(400, "tags must be an array of strings")
        author = self._claims(req).get("sub")
        author = author if isinstance(author, str) else self.user_id
        now = _now()
        video = Video(str(uuid.uuid4()), title, description, tags, author, now, now)
        with self._lock:
            self._videos[video.id] = video
            answer = self._video_json(video)
            self._emit("videos.create", answer["url"], answer)
        req.entity = video.id
        return json_response(answer, 201)

    def _publish_videos(self, req: Request) -> Response:
        """``POST /videos/publish [ids]`` (node SDK ``Videos.publish``, "publishes a video based on
        the server time"; not in the reference, so the checks and the answer are *assumed*):
        every id must name a video (404) that finished encoding (``DRAFT``, or already
        ``PUBLISHED``; else 409); they become ``PUBLISHED`` with ``published_at``. 200 + the videos."""
        ids = _json_body(req, None)
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise _error(400, "the request body must be a non-empty array of video ids")
        with self._lock:
            videos = [self._video(i) for i in ids]
            unready = [v.id for v in videos if v.status not in ("DRAFT", "PUBLISHED")]
            if unready:
                raise _error(409, f"videos {', '.join(unready)} have not finished encoding")
            for video in videos:
                if video.status != "PUBLISHED":
                    video.published_at = _now()
                    self._set_video_status(video, "PUBLISHED")
            answer = [self._video_json(v) for v in videos]
        return json_response(answer)

    def _get_video(self, req: Request) -> Response:
        with self._lock:
            return json_response(self._video_json(self._video(req.params["video_id"])))

    def _list_videos(self, req: Request) -> Response:
        with self._lock:
            items = [self._video_json(v) for v in self._filter_videos(req)]
        return self._page(req, items)

    def _count_videos(self, req: Request) -> Response:
        with self._lock:
            return _count(len(self._filter_videos(req)))

    def _filter_videos(self, req: Request) -> list[Video]:
        """Videos matching ``status`` (default draft,published) and ``search``; caller holds the lock."""
        raw = req.arg("status") or ",".join(DEFAULT_VIDEO_STATUSES)
        wanted = {s.strip().lower() for s in raw.split(",") if s.strip()}
        if not wanted <= set(VIDEO_STATUSES):
            raise _error(400, f"status must be a comma-separated list of {', '.join(VIDEO_STATUSES)}")
        search = (req.arg("search") or "").lower()
        return [v for v in self._videos.values() if v.status.lower() in wanted and search in v.title.lower()]

    def _video(self, video_id: str) -> Video:
        video = self._videos.get(video_id)
        if video is None:
            raise _error(404, f"video {video_id} not found")
        return video

    def _video_json(self, v: Video) -> dict[str, Any]:
        return {
            "id": v.id, "url": f"{self._base}/videos/{v.id}", "title": v.title, "description": v.description,
            "tags": list(v.tags), "playback_urls": list(v.playback_urls), "type": "hls", "status": v.status,
            "private": False, "poster": None, "author": v.author, "updater": v.author, "variants": None,
            "created_at": v.created_at, "updated_at": v.updated_at, "deleted_at": None,
            "published_at": v.published_at,
        }

    def _set_video_status(self, video: Video, status: str) -> None:
        """Change a video's status and tell the hooks; caller holds the lock."""
        video.status, video.updated_at = status, _now()
        data = self._video_json(video)
        self._emit("videos.update", data["url"], data)

    # -- inputs --------------------------------------------------------------------

    def _create_input(self, req: Request) -> Response:
        body = _body(req)
        filename = _string(body, "filename")
        if "/" in filename or "\\" in filename or filename in (".", "..") or len(filename) > 255:
            raise _error(400, "filename must be a file name of 1..255 characters without '/'")
        mime = _string(body, "type")
        size = _whole(body, "size", minimum=1)
        now = _now()
        input_id = str(uuid.uuid4())
        inp = Input(input_id, filename, mime, size, f"{self.network_id}/{input_id}/{filename}", now, now)
        with self._lock:
            self._inputs[inp.id] = inp
            answer = self._input_json(inp)
        req.entity = inp.id
        return json_response(answer, 201)

    def _get_input(self, req: Request) -> Response:
        with self._lock:
            return json_response(self._input_json(self._input(req.params["input_id"])))

    def _list_inputs(self, req: Request) -> Response:
        with self._lock:
            items = [self._input_json(i) for i in self._filter_inputs(req)]
        return self._page(req, items)

    def _count_inputs(self, req: Request) -> Response:
        with self._lock:
            return _count(len(self._filter_inputs(req)))

    def _filter_inputs(self, req: Request) -> list[Input]:
        wanted = req.arg("filter")
        if wanted is not None and wanted not in INPUT_STATES:
            raise _error(400, f"filter must be one of {', '.join(INPUT_STATES)}")
        search = (req.arg("search") or "").lower()
        return [i for i in self._inputs.values()
                if (wanted is None or i.status == wanted) and search in i.filename.lower()]

    def _input(self, input_id: str) -> Input:
        inp = self._inputs.get(input_id)
        if inp is None:
            raise _error(404, f"input {input_id} not found")
        return inp

    def _input_json(self, i: Input) -> dict[str, Any]:
        return {
            "id": i.id, "url": f"{self._base}/encoding/inputs/{i.id}", "filename": i.filename, "type": i.type,
            "path": i.path, "size": i.size, "images": [], "network_id": self.network_id, "metadata": None,
            "created_at": i.created_at, "updated_at": i.updated_at,
        }  # no status: the reference's Input object has none (states are list filters only)

    def _input_state(self, i: Input) -> dict[str, Any]:
        u = i.upload
        upload = None if u is None else {
            "type": u.type, "uploadId": u.upload_id, "size": u.size, "pieceSize": u.piece_size,
            "pieceCount": u.piece_count, "state": u.state,
            "parts": {str(n): {"size": p.size, "etag": p.etag, "puts": p.puts, "bytes_received": p.bytes_received}
                      for n, p in sorted(u.parts.items())},
        }
        return {**self._input_json(i), "status": i.status, "upload": upload,
                "signatures": {str(n): c for n, c in sorted(i.signatures.items())},
                "signed_types": {str(n): t for n, t in sorted(i.signed_types.items())},
                "aborted": u is not None and u.state == "aborted",
                "completed": u is not None and u.state == "completed",
                "assembled_size": i.assembled_size, "sha256": i.sha256}

    def _set_input_status(self, inp: Input, status: str) -> None:
        inp.status, inp.updated_at = status, _now()

    # -- uploads -------------------------------------------------------------------

    def _upload_init(self, req: Request) -> Response:
        """``POST …/upload?type=``: start (or restart) the input's upload."""
        kind = req.arg("type")
        if kind not in UPLOAD_TYPES:
            raise _error(400, "type must be amazonMP or amazon")
        body = _body(req)
        size = _whole(body, "size", minimum=1)
        _string(body, "type", required=False)  # the file's MIME type: optional, a string if given
        piece_size = self.ctx.setting("piece_size") if kind == "amazonMP" else size
        with self._lock:
            inp = self._input(req.params["input_id"])
            old = inp.upload
            if old is not None and old.state in ("completing", "completed"):
                raise _error(409, f"input {inp.id} is already uploaded")
            upload_id = str(uuid.uuid4()) if kind == "amazonMP" else None
            inp.upload = Upload(kind, upload_id, size, piece_size, math.ceil(size / piece_size),
                                self.ctx.data_dir / "parts" / uuid.uuid4().hex)
            self._set_input_status(inp, "uploading")
            answer: dict[str, Any] = {"key": inp.path}
            if upload_id is not None:
                answer.update(uploadId=upload_id, pieceCount=inp.upload.piece_count, pieceSize=piece_size)
        if old is not None:
            shutil.rmtree(old.dir, ignore_errors=True)
        return json_response(answer, 201)

    def _upload_sign(self, req: Request) -> Response:
        """``POST …/upload/sign``: the headers and URL of one part's PUT."""
        body = _body(req)
        with self._lock:
            inp = self._input(req.params["input_id"])
            upload = self._open_upload(inp, req, body)
            if upload.upload_id is None:
                number, query = 1, []
            else:
                number = _whole(body, "partNumber", minimum=0)
                if not 1 <= number <= upload.piece_count:
                    raise _error(409, f"partNumber must be 1..{upload.piece_count} for upload {upload.upload_id}")
                query = [("partNumber", str(number)), ("uploadId", upload.upload_id)]
            content_type = _string(body, "contentType", required=False) or ""
            expired = self._expire_left > 0
            self._expire_left -= expired
            inp.signatures[number] += 1
            inp.signed_types[number] = content_type or None
            key = inp.path
        ttl = self.ctx.setting("sign_ttl")
        date = datetime.fromtimestamp(time.time() - (ttl + 1 if expired else 0), UTC).strftime(AMZ_DATE)
        token = secrets.token_urlsafe(32)
        signature = self._s3_signature(key, query, date, token, content_type)
        url = f"{self._base}{S3_PREFIX}{quote(key)}" + (f"?{urlencode(query)}" if query else "")
        signed = "content-type;host;x-amz-date;x-amz-security-token" if content_type else \
            "host;x-amz-date;x-amz-security-token"
        auth = (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{date[:8]}/us-east-1/s3/aws4_request, "
                f"SignedHeaders={signed}, Signature={signature}")
        return json_response({"authHeader": auth, "dateHeader": date, "url": url, "securityToken": token})

    def _open_upload(self, inp: Input, req: Request, body: dict[str, Any]) -> Upload:
        """The input's upload that ``body``'s uploadId names, if still open; caller holds the lock."""
        upload = self._current_upload(inp, req, body)
        if upload.state != "open":
            raise _not_open(upload)
        return upload

    def _current_upload(self, inp: Input, req: Request, body: dict[str, Any]) -> Upload:
        """The input's upload that ``body``'s uploadId names (``amazon`` ones have none):
        409 if there is none, 404 for another uploadId; caller holds the lock."""
        upload = inp.upload
        if upload is None:
            raise _error(409, f"no upload was initialised for input {inp.id}")
        kind = req.arg("type")
        if kind is not None and kind != upload.type:
            raise _error(400, f"type {kind} does not match the input's {upload.type} upload")
        if upload.upload_id is not None:
            upload_id = _string(body, "uploadId")
            if upload_id != upload.upload_id:
                raise _error(404, f"upload {upload_id} not found")
        return upload

    def _part_put(self, req: Request) -> Response:
        """``PUT /ingestio-s3/{key}``: one signed part (or the whole ``amazon`` file), streamed to disk."""
        key = unquote(req.params["key"])
        self._check_s3_signature(req, key)
        with self._lock:
            inp = self._inputs.get(_key_input(key) or "")
            if inp is None or inp.path != key:
                raise _no_such_upload()
            upload = inp.upload
            if upload is None or upload.upload_id != req.arg("uploadId") or upload.state != "open":
                raise _no_such_upload()
            number = 1 if upload.upload_id is None else int(req.arg("partNumber") or 0)  # signed: 1..pieceCount
            part = upload.parts.setdefault(number, Part())
            part.puts += 1
        req.on_finish(lambda r: self._count_bytes(part, r.bytes_in))
        incoming = upload.dir / f"{number}.{uuid.uuid4().hex}.partial"
        md5 = hashlib.md5(usedforsecurity=False)  # S3's ETag of a part
        sha256 = hashlib.sha256()
        size = _receive(req, incoming, md5, *([sha256] if upload.upload_id is None else []))
        with self._lock:
            if self._inputs.get(inp.id) is not inp or inp.upload is not upload or upload.state != "open":
                incoming.unlink(missing_ok=True)
                raise _no_such_upload()
            if upload.upload_id is None:  # the whole file: the upload is complete
                os.replace(incoming, self._file_path(inp))
                upload.state = "completed"
                self._input_done(inp, size, sha256.hexdigest())
            else:
                os.replace(incoming, upload.dir / str(number))
            part.size, part.etag = size, md5.hexdigest()
        return Response(200, headers={"ETag": f'"{md5.hexdigest()}"'})

    def _count_bytes(self, part: Part, nbytes: int) -> None:
        with self._lock:
            part.bytes_received += nbytes

    def _upload_complete(self, req: Request) -> Response:
        """``POST …/upload/complete``: join the parts in order into the input's file."""
        body = _body(req)
        with self._lock:
            inp = self._input(req.params["input_id"])
            upload = self._current_upload(inp, req, body)
            if upload.upload_id is None:  # single PUT: complete already, or nothing to complete yet
                if upload.state != "completed":
                    raise _error(409, f"the file of input {inp.id} has not been uploaded")
                return json_response(self._input_json(inp))
            if upload.state != "open":
                raise _not_open(upload)
            missing = [n for n in range(1, upload.piece_count + 1)
                       if n not in upload.parts or upload.parts[n].size is None]
            if missing:
                raise _error(409, f"upload {upload.upload_id} is missing parts {', '.join(map(str, missing))}")
            wrong = [f"{n} ({upload.parts[n].size} bytes)" for n in range(1, upload.piece_count)
                     if upload.parts[n].size != upload.piece_size]
            if wrong:
                raise _error(409, f"parts {', '.join(wrong)} must be exactly pieceSize ({upload.piece_size} "
                                  "bytes); only the last part may differ")
            upload.state = "completing"  # parts, signatures, completes and aborts: 409 meanwhile
            self._set_input_status(inp, "processing")
            target = self._file_path(inp)
        try:
            size, digest = _join([upload.dir / str(n) for n in range(1, upload.piece_count + 1)], target)
        except BaseException:
            with self._lock:
                upload.state = "open"
                self._set_input_status(inp, "uploading")
            raise
        with self._lock:
            if self._inputs.get(inp.id) is not inp or inp.upload is not upload:
                target.unlink(missing_ok=True)
                raise _error(404, f"upload {upload.upload_id} not found")
            upload.state = "completed"
            self._input_done(inp, size, digest)
            answer = self._input_json(inp)
            lose = self._lose_complete_left > 0
            self._lose_complete_left -= lose
        shutil.rmtree(upload.dir, ignore_errors=True)
        if lose:
            raise ClientGone("lose_next_complete_answers: the complete is done, its answer is lost")
        return json_response(answer)

    def _input_done(self, inp: Input, size: int, digest: str) -> None:
        """The input's file is whole: probe it, record it, tell the hooks; caller holds the lock."""
        inp.assembled_size, inp.sha256 = size, digest
        with open(self._file_path(inp), "rb") as f:
            self._set_input_status(inp, "ready" if is_video_container(f.read(12)) else "error")
        data = self._input_json(inp)
        self._emit("inputs.complete", data["url"], data)

    def _upload_abort(self, req: Request) -> Response:
        """``POST …/upload/abort``: drop the stored parts; the input stays ``uploading``."""
        body = _body(req)
        with self._lock:
            inp = self._input(req.params["input_id"])
            upload = self._current_upload(inp, req, body)
            if upload.upload_id is None:
                raise _error(409, "amazon (single PUT) uploads cannot be aborted")
            if upload.state != "open":
                raise _not_open(upload)
            upload.state = "aborted"
            for part in upload.parts.values():
                part.size = part.etag = None
            self._set_input_status(inp, "uploading")
            answer = self._input_json(inp)
            self._emit("inputs.cancelled", answer["url"], answer)
        shutil.rmtree(upload.dir, ignore_errors=True)
        return json_response(answer, 201)

    def _file_path(self, inp: Input) -> Path:
        path = self.ctx.data_dir / "inputs" / inp.id
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _s3_signature(self, key: str, query: list[tuple[str, str]], date: str, token: str, content_type: str) -> str:
        canonical = "\n".join(("PUT", S3_PREFIX + key, urlencode(sorted(query)), content_type, date, token))
        return hmac.new(self._s3_secret, canonical.encode(), hashlib.sha256).hexdigest()

    def _check_s3_signature(self, req: Request, key: str) -> None:
        """403 unless the PUT carries the headers a sign call gave for this URL, in time, and
        exactly the Content-Type the sign call named (none if it named none)."""
        date = req.header("x-amz-date") or ""
        token = req.header("x-amz-security-token") or ""
        content_type = (req.header("Content-Type") or "").strip()
        query = [(name, value) for name, values in req.query.items() for value in values]
        match = SIGNATURE.search(req.header("Authorization") or "")
        expected = self._s3_signature(key, query, date, token, content_type)
        if match is None or not hmac.compare_digest(match.group(1), expected):
            raise _S3Error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match "
                                                         "the signature you provided.")
        signed_at = datetime.strptime(date, AMZ_DATE).replace(tzinfo=UTC).timestamp()  # ours: it was signed
        if time.time() > signed_at + self.ctx.setting("sign_ttl"):
            raise _S3Error(403, "AccessDenied", "Request has expired")

    # -- profiles ------------------------------------------------------------------

    def _profile_json(self) -> dict[str, Any]:
        rendition = {"id": 1, "audio": {"codec": "libfdk_aac", "bitrate": "96k", "channels": 2, "sample_rate": "48k"},
                     "video": {"codec": "libx264", "width": 1280, "height": 720, "bitrate": "2500k",
                               "profile": "main", "keyframe": 60, "framerate": 30, "codec_options": {},
                               "keep_aspect_ratio": True},
                     "streams": ["audio", "video", "captions"]}
        return {
            "id": self.profile_id, "url": f"{self._base}/encoding/profiles/{self.profile_id}",
            "name": "Default Profile", "text_tracks": ["webvtt"], "type": "hls", "digital_rights": None,
            "data": {"playlists": [{"name": "default", "version": 3, "byte_range": False, "renditions": [1],
                                    "iframe_playlist": False}], "renditions": [rendition]},
            "created_at": self._profile_time, "updated_at": self._profile_time, "deleted_at": None,
        }

    def _list_profiles(self, req: Request) -> Response:
        return self._page(req, [self._profile_json()])

    def _get_profile(self, req: Request) -> Response:
        if req.params["profile_id"] != self.profile_id:
            raise _error(404, f"profile {req.params['profile_id']} not found")
        return json_response(self._profile_json())

    # -- jobs ----------------------------------------------------------------------

    def _create_job(self, req: Request) -> Response:
        """``POST /encoding/jobs``: 201 in progress; the encoding runs over ``processing_seconds``."""
        body = _body(req)
        input_ids = body.get("inputs")
        if input_ids is None:
            raise _error(400, "inputs is required")
        if not isinstance(input_ids, list) or not input_ids or not all(isinstance(i, str) for i in input_ids):
            raise _error(400, "inputs must be a non-empty array of input ids")
        profile, video_id = _string(body, "profile"), _string(body, "video")
        with self._lock:
            video = self._video(video_id)
            if profile != self.profile_id:
                raise _error(404, f"profile {profile} not found")
            for input_id in input_ids:
                status = self._input(input_id).status
                if status != "ready":
                    raise _error(409, f"input {input_id} is not ready (status {status})")
            now = _now()
            job = Job(str(uuid.uuid4()), profile, video.id, list(input_ids), now, now)
            self._jobs[job.id] = job
            answer = self._job_json(job)
            self._emit("jobs.create", answer["url"], answer)
            self._set_video_status(video, "PROCESSING")
        req.entity = job.id
        seconds = self.ctx.processing_seconds()
        for fraction, progress in PROGRESS_STEPS:
            self._after(fraction * seconds, self._progress, job, progress)
        self._after(seconds, self._end_job, job)
        return json_response(answer, 201)

    def _after(self, delay: float, step: Callable[..., None], *args: Any) -> None:
        if delay > 0:
            self.ctx.scheduler.call_later(delay, step, *args)
        else:
            step(*args)

    def _progress(self, job: Job, progress: int) -> None:
        with self._lock:
            if self._jobs.get(job.id) is job and job.status == JOB_IN_PROGRESS:
                job.progress, job.updated_at = progress, _now()

    def _end_job(self, job: Job) -> None:
        """Encoding is over: a failure here is the ``ingestio.processing`` stage's."""
        with self._lock:
            if self._jobs.get(job.id) is not job:
                return  # reset meanwhile
            failed = self.ctx.stage_fails("ingestio.processing")
            job.status = JOB_FAILED if failed else JOB_COMPLETED
            if not failed:
                job.progress = 100
            job.updated_at = _now()
            data = self._job_json(job)
            self._emit("jobs.error" if failed else "jobs.complete", data["url"], data)
            video = self._videos.get(job.video)
            if video is not None:
                if not failed:
                    video.playback_urls = [f"{self._base}/ingestio-play/{self.network_id}/{video.id}/master.m3u8"]
                self._set_video_status(video, "ERROR" if failed else "DRAFT")

    def _get_job(self, req: Request) -> Response:
        with self._lock:
            return json_response(self._job_json(self._job(req.params["job_id"])))

    def _job_progress(self, req: Request) -> Response:
        with self._lock:
            job = self._job(req.params["job_id"])
            return json_response({"progress": job.progress, "status": job.status})

    def _list_jobs(self, req: Request) -> Response:
        with self._lock:
            items = [self._job_json(j) for j in self._filter_jobs(req)]
        return self._page(req, items)

    def _count_jobs(self, req: Request) -> Response:
        with self._lock:
            return _count(len(self._filter_jobs(req)))

    def _filter_jobs(self, req: Request) -> list[Job]:
        video = req.arg("video")
        return [j for j in self._jobs.values() if video is None or j.video == video]

    def _job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise _error(404, f"job {job_id} not found")
        return job

    def _job_json(self, j: Job) -> dict[str, Any]:
        return {
            "id": j.id, "url": f"{self._base}/encoding/jobs/{j.id}", "status": j.status, "progress": j.progress,
            "profile": j.profile, "video": j.video, "inputs": list(j.inputs), "created_at": j.created_at,
            "updated_at": j.updated_at, "deleted_at": None,
        }

    # -- hooks and their delivery --------------------------------------------------

    def _create_hook(self, req: Request) -> Response:
        body = _body(req)
        names = body.get("event_names")
        if names is None:
            raise _error(400, "event_names is required")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _error(400, "event_names must be a non-empty array of event names")
        unknown = [n for n in names if n not in EVENTS]
        if unknown:
            raise _error(400, f"event_names: unknown events {', '.join(unknown)}")
        url = _string(body, "url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _error(400, "url must be an http(s) URL")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _error(400, "enabled must be true or false")
        secret = _string(body, "secret", required=False) or secrets.token_hex(8)
        hook = Hook(str(uuid.uuid4()), list(dict.fromkeys(names)), url, enabled, secret, _now())
        with self._lock:
            self._hooks[hook.id] = hook
        req.entity = hook.id
        return json_response(_hook_json(hook), 201)

    def _list_hooks(self, req: Request) -> Response:
        with self._lock:
            items = [_hook_json(h) for h in self._hooks.values()]
        return self._page(req, items)

    def _get_hook(self, req: Request) -> Response:
        """A hook by id, or (as the docs' ``GET /hooks/<event>``) the hooks of an event."""
        name = req.params["hook_id"]
        with self._lock:
            hook = self._hooks.get(name)
            if hook is not None:
                return json_response(_hook_json(hook))
            if name not in EVENTS:
                raise _error(404, f"hook {name} not found")
            items = [_hook_json(h) for h in self._hooks.values() if name in h.event_names]
        return self._page(req, items)

    def _delete_hook(self, req: Request) -> Response:
        with self._lock:
            if self._hooks.pop(req.params["hook_id"], None) is None:
                raise _error(404, f"hook {req.params['hook_id']} not found")
        return Response(204)

    def _emit(self, event: str, url: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for every enabled hook subscribed to it; caller holds the lock."""
        hooks = [h for h in self._hooks.values() if h.enabled and event in h.event_names]
        if not hooks or self.ctx.stopping.is_set():
            return
        event_object = {"event_id": str(uuid.uuid4()), "network_id": self.network_id, "event_name": event,
                        "created_at": _now(), "data": data}
        body = json.dumps({"event": event, "URL": url, "event_object": event_object}, separators=(",", ":")).encode()
        copies = 2 if self.ctx.setting("webhook_duplicates") else 1
        for hook in hooks:
            signature = hmac.new(hook.secret.encode(), body, hashlib.sha1).hexdigest()
            self._deliveries.submit(self._deliver, self._generation, hook, event, event_object["event_id"], body,
                                    signature, copies)

    def _deliver(self, generation: int, hook: Hook, event: str, event_id: str, body: bytes, signature: str,
                 copies: int) -> None:
        """POST one event to one hook ``copies`` times: up to 3 attempts each, recorded in ``webhooks_sent``."""

        def headers(attempt: int, previous_error: str | None) -> dict[str, str]:
            out = {"X-Ingest-Signature": signature, "X-Ingest-Request-Attempt": str(attempt)}
            if previous_error is not None:
                out["X-Ingest-Retry-Reason"] = " ".join(previous_error.split())  # one header line
            return out

        for _ in range(copies):
            sent = post_json(hook.url, body, timeout=WEBHOOK_TIMEOUT, backoff=WEBHOOK_BACKOFF,
                             stopping=self.ctx.stopping, headers=headers, no_retry_header=NO_RETRY_HEADER)
            if sent is None:
                return
            with self._lock:
                if generation != self._generation:
                    return  # sent before a reset: not this test's
                self._webhooks_sent.append({
                    "t": time.time(), "event": event, "event_id": event_id, "hook_id": hook.id, "url": hook.url,
                    "status": sent.status, "attempts": sent.attempts, "error": sent.error, "no_retry": sent.no_retry,
                    "payload": json.loads(body),
                })

    # -- pagination ----------------------------------------------------------------

    def _page(self, req: Request, items: list[dict[str, Any]]) -> Response:
        """One page of ``items`` as the ``Range`` header asks (the first page if none): 200,
        or 206 + ``Next-Range`` while more remain."""
        size = self.ctx.setting("page_size")
        total = len(items)
        asked = req.header("Range")
        if asked is None:
            first, last = 0, size - 1
        else:
            match = RANGE.fullmatch(asked.strip())
            if match is None or int(match.group(1)) > int(match.group(2)):
                raise _error(416, "Range must look like 'items <first>-<last>'", {"Content-Range": f"items */{total}"})
            first, last = int(match.group(1)), int(match.group(2))
            last = min(last, first + size - 1)
        page = items[first:last + 1]
        if not page:
            return json_response([], headers={"Content-Range": f"items */{total}"})
        end = first + len(page) - 1
        headers = {"Content-Range": f"items {first}-{end}/{total}"}
        if end + 1 >= total:
            return json_response(page, headers=headers)
        headers["Next-Range"] = f"items {end + 1}-{end + last - first + 1}"
        return json_response(page, 206, headers)


def _hook_json(h: Hook) -> dict[str, Any]:
    return {"id": h.id, "event_names": list(h.event_names), "url": h.url, "enabled": h.enabled, "secret": h.secret,
            "created_at": h.created_at}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> HttpError:
    return HttpError(status, {"errors": [message]}, headers)


def _not_open(upload: Upload) -> HttpError:
    """409 for an upload that takes no more parts, signatures, completes or aborts."""
    if upload.state == "completing":
        return _error(409, "upload is being completed")
    return _error(409, f"upload already {upload.state}")  # completed, aborted


def _count(n: int) -> Response:
    return Response(204, headers={"Resource-Count": str(n)})


def _accepts(accept: str | None) -> bool:
    """Whether an ``Accept`` header names version 1 of the API (parameters such as ``q`` ignored)."""
    return any(item.split(";")[0].strip().lower() == ACCEPT for item in (accept or "").split(","))


def _body(req: Request) -> dict[str, Any]:
    """The JSON object of a request body (``{}`` when empty); 415 for a non-JSON Content-Type."""
    body = _json_body(req, {})
    if not isinstance(body, dict):
        raise _error(400, "the request body must be a JSON object")
    return body


def _json_body(req: Request, empty: Any) -> Any:
    """The JSON value of a request body (``empty`` when there is none); 415 for a non-JSON Content-Type."""
    content_type = (req.header("Content-Type") or "").split(";")[0].strip().lower()
    if content_type and content_type not in JSON_TYPES:
        raise _error(415, f"Content-Type must be {ACCEPT}")
    if req.content_length == 0:
        return empty
    try:
        return req.json()
    except HttpError as exc:
        raise _error(exc.status, "request body too large" if exc.status == 413 else "invalid JSON body") from None


def _string(body: dict[str, Any], name: str, *, required: bool = True, empty: bool = False) -> Any:
    """Field ``name`` as a string (None if absent and not required); 400 naming it otherwise."""
    value = body.get(name)
    if value is None:
        if required:
            raise _error(400, f"{name} is required")
        return None
    if not isinstance(value, str) or (not value and not empty):
        raise _error(400, f"{name} must be a {'' if empty else 'non-empty '}string")
    return value


def _whole(body: dict[str, Any], name: str, *, minimum: int) -> int:
    value = body.get(name)
    if value is None:
        raise _error(400, f"{name} is required")
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _error(400, f"{name} must be an integer >= {minimum}")
    return value


def _key_input(key: str) -> str | None:
    """The input id in an upload key ``<network>/<input id>/<filename>``."""
    parts = key.split("/")
    return parts[1] if len(parts) == 3 else None


def _receive(req: Request, path: Path, *hashes: Any) -> int:
    """Stream the body into ``path`` in blocks, updating ``hashes``; all or nothing. Returns its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "wb") as f:
            for block in req.iter_body():
                f.write(block)
                for h in hashes:
                    h.update(block)
    except BaseException:
        path.unlink(missing_ok=True)  # a cut body stores nothing
        raise
    return req.bytes_in


def _join(parts: list[Path], target: Path) -> tuple[int, str]:
    """Concatenate ``parts`` into ``target``, streamed; returns its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(BLOCK_SIZE):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
    return size, digest.hexdigest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now() -> str:
    """RFC 3339, UTC, microseconds: ``2016-10-29T18:46:21.715060Z``."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
