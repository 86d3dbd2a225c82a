"""Brightcove Video Cloud emulator: OAuth, the CMS API (videos, ingest jobs) and Dynamic Ingest.

Follows ``shared/seeds/brightcove-dynamic-ingest.md`` ("the seed": CMS create video, then
``upload-urls`` for ``signed_url``/``api_request_url``, upload, ingest request,
notifications) and ``design/providers.md`` §1 (paths, fields, errors and limits, from
Brightcove's API reference sources B1-B9) and §7. The paths are Brightcove's, so the fleet
only swaps the base URLs of ``oauth.brightcove.com``, ``cms.api.brightcove.com`` and
``ingest.api.brightcove.com``, all of which are the sandbox here. Upload targets live in
the sandbox's S3 (:mod:`sandbox.s3`), bucket :data:`BUCKET`.

Endpoints, by the names the request log and fault rules use (``{a}`` = account id,
``{v}`` = a video id or ``ref:<reference_id>``):

===========================  ==================================================  ============================
brightcove.oauth_token       ``POST /v4/access_token``                           200 token / 401 invalid_client
brightcove.create_video      ``POST /v1/accounts/{a}/videos``                    201 video / 409 / 422 / 400
brightcove.video_fields      ``GET /v1/accounts/{a}/video_fields``               200 custom/standard fields
brightcove.get_video         ``GET /v1/accounts/{a}/videos/{v}``                 200 video / 404
brightcove.list_ingest_jobs  ``GET .../videos/{v}/ingest_jobs``                  200 [job]
brightcove.get_ingest_job    ``GET .../videos/{v}/ingest_jobs/{job_id}``         200 job / 404
brightcove.upload_urls       ``GET .../videos/{v}/upload-urls/{source_name}``    200 S3 target / 404 / 415
brightcove.ingest_request    ``POST .../videos/{v}/ingest-requests``             200 ``{"id": job}`` / 409 / 4xx
brightcove.processing        (no HTTP) the transcoding stage                     target of ``action: "fail"``
===========================  ==================================================  ============================

Authentication (providers.md §1, B3). ``POST /v4/access_token`` with ``Authorization:
Basic base64(client_id:client_secret)`` and ``grant_type=client_credentials`` (form body
or query) answers ``{"access_token", "token_type": "Bearer", "expires_in"}``; tokens live
``token_ttl`` seconds (the ``brightcove_token_ttl`` option, 300 like Brightcove, or the
``token_ttl`` of the brightcove fault config). OAuth errors are OAuth-shaped: 401
``{"error": "invalid_client", ...}``, 400 ``unsupported_grant_type``. Every other endpoint
needs ``Authorization: Bearer <token>``.

Errors are JSON arrays ``[{"error_code": "...", "message": "..."}]`` everywhere, injected
ones too (B1/B2/B9); codes and messages follow Brightcove's CMS and DI error references:

* 401 ``UNAUTHORIZED`` "Permission denied." (no, unknown or malformed token) or "Access
  token expired."; 403 ``ACCESS_DENIED`` for an account other than the configured one;
* CMS: 422 ``VALIDATION_ERROR`` "custom_fields.<f>: ILLEGAL_FIELD" for a custom field the
  account does not define (the CMS reference's example body; ``ILLEGAL_VALUE`` for a value
  outside an enum field's ``enum_values``, *assumed*); the defined fields are the
  ``custom_fields`` option (CLI ``--brightcove-custom-fields``, default
  :data:`DEFAULT_CUSTOM_FIELDS`), served by ``GET /video_fields`` in the reference's shape;
  404 ``RESOURCE_NOT_FOUND`` "Resource does not exist."; 409 ``REFERENCE_ID_IN_USE``
  "reference id <x> is already in use"; 400 ``BAD_VALUE`` (unparsable body, or
  "Unrecognized field in the submitted data: <f>"); 422 ``ILLEGAL_FIELD`` "<field>: <rule>";
* DI: 415 ``UNSUPPORTED_MEDIA_TYPE`` for ``upload-urls`` without ``Content-Type:
  application/json`` (the reference lists the header; the 415 is *assumed*);
  404 ``NO_SUCH_VIDEO`` "Unable to find the referenced video"; 400 ``BAD_REQUEST``
  (unparsable body, unknown field, bad ``source_name``), ``NO_SOURCE`` "Unable to find a
  source to use", ``BAD_CALLBACKS`` "Callbacks were not in expected format"; 422
  ``MALFORMED_SOURCE_URL``, ``BAD_PROTOCOL_SOURCE_URL``, ``TYPE_VIOLATION``; 409
  ``CONCURRENT_JOB`` (the emulator's code) for a second ingest request while a job of the
  video is unfinished: Brightcove's best practices say never to run duplicate jobs on one
  video (B6), and the sandbox makes that mistake visible;
* 429 ``TOO_MANY_REQUESTS`` with ``Retry-After`` from the rate limits below.

Upload targets (B1, B7). Each ``upload-urls`` call mints a new key
``{account}/{video}/{uuid}/{source_name}`` in :data:`BUCKET` and fresh random STS-like
credentials, and answers ``bucket``, ``object_key``, ``access_key_id``,
``secret_access_key``, ``session_token``, ``signed_url`` (a signature-v2 presigned ``PUT``
on the sandbox's S3 - ``AWSAccessKeyId``, ``Expires``, ``Signature`` as in the DI
reference's example - signed with no Content-Type, valid 24 h; the S3 proxy answers 403
``SignatureDoesNotMatch`` to a PUT with any Content-Type) and ``api_request_url`` (path-style ``<s3 url>/<bucket>/<key>``,
where Brightcove gives ``https://<bucket>.s3.amazonaws.com/<key>``). ``source_name`` must
be a file name without spaces or ``? & #``.

Ingest (B1, B4). ``master.url`` may be an ``api_request_url``-style URL of the sandbox's
S3 or ``s3://bucket/key`` (read straight from the sandbox's S3), or ``http(s)://...``
(pulled with up to 3 attempts expecting 200, streamed to disk); FTP is not emulated
(``BAD_PROTOCOL_SOURCE_URL``). ``priority`` is ``normal`` (default) or ``low``. Every
ingest request that reaches a known video counts in the state's ``ingest_requests``,
rejected ones included. A job goes ``processing -> publishing -> published -> finished``
over ``processing_seconds`` (40 %, 70 %, 100 %; the Sandbox's, or the brightcove fault
config's), or ends ``failed`` with, as the emulator's choice of codes:

* ``SOURCE_FETCH_FAILED`` "Failed to fetch the source: HTTP 404" (or the reason) - no such
  object, or the pull failed three times;
* ``FILE_INVALID`` "The source file is not a valid video" - no MP4/MOV ``ftyp`` or
  Matroska magic (:func:`sandbox.media.is_video_container`);
* ``PROCESSING_FAILED`` "The video could not be transcoded" - the ``brightcove.processing``
  stage failed (a ``fail`` rule or ``processing_fail_rate``).

The video becomes ``complete: true`` (with ``duration``, ``images``) when its job is
``published``.

Notifications (B5). For each URL in ``callbacks`` the emulator POSTs, from a background
thread, one JSON notification per rendition (``entityType: "DYNAMIC_RENDITION"``) when
the job is published, then a final ``entityType: "TITLE"`` one (``status`` ``SUCCESS``,
or ``FAILED`` with ``errorMessage``); TITLE is documented for legacy ingest only, so
``title_notifications: false`` sends the documented Dynamic Delivery renditions alone. A
job's notifications go out in order; a POST that fails (network error or non-2xx, 5 s
timeout) is tried up to 3 times, 1 s then 2 s apart (Brightcove's own DI retry policy is
not documented). Each delivery is recorded in the state's
``callbacks_sent``.

Limits (B6). The brightcove fault config starts with ``rate_limit_rps`` 20 on every
endpoint but OAuth (20 requests a second per account across CMS and DI); set
``rate_limit_rps: 0`` to lift it. ``per_video_per_minute`` (0 = off; Brightcove's is 10)
limits requests a rolling minute on one video's endpoints (everything but OAuth and
create). ``callback_duplicates: true`` sends every final TITLE notification twice.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http.client
import math
import secrets
import shutil
import string
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from .emulator import Context, Emulator
from .faults import Setting
from .media import file_sha256, is_video_container
from .notify import post_json
from .web import BLOCK_SIZE, JSON_LIMIT, HttpError, Request, Response, Route, json_response, route

BUCKET = "ingestion-upload-sandbox"  # Brightcove's is ingestion-upload-production (B1 example)
TOKEN_TTL = 300  # seconds: "expires_in": 300 (B3)
CREDENTIAL_ALPHABET = string.ascii_uppercase + string.digits
ACCOUNT_PATH = r"/v1/accounts/(?P<account_id>[^/]+)"
VIDEO_PATH = ACCOUNT_PATH + r"/videos/(?P<video_id>[^/]+)"
#: Every endpoint but OAuth: what the 20 requests/s account limit counts (B6).
REST_ENDPOINTS = ("brightcove.create_video", "brightcove.video_fields", "brightcove.get_video", "brightcove.list_ingest_jobs",
                  "brightcove.get_ingest_job", "brightcove.upload_urls", "brightcove.ingest_request")
RATE_LIMIT_RPS = 20
#: CMS create-video fields (providers.md §1, B2); anything else is "Unrecognized".
VIDEO_FIELDS = ("name", "description", "long_description", "reference_id", "state", "tags", "custom_fields",
                "cue_points", "geo", "schedule", "economics", "drm_disabled")
#: DI ingest-request fields (B1).
INGEST_FIELDS = ("master", "profile", "capture-images", "callbacks", "poster", "thumbnail", "text_tracks",
                 "audio_tracks", "priority")
TERMINAL = ("finished", "failed")
#: The account's defined custom fields (``GET /video_fields``); the CMS refuses any other.
DEFAULT_CUSTOM_FIELDS = "team,subject=Reptiles|Mammals|Birds|Other"
MAX_CUSTOM_FIELDS = 10  # the reference example's max_custom_fields
#: Renditions of the default Dynamic Delivery profile, as notified (B5 sample).
RENDITIONS = ("default/audio64", "default/audio128", "default/video360", "default/video720", "default/video1080")
SOURCE_BYTES_PER_SECOND = 500_000  # to derive a plausible duration from the source size
PULL_ATTEMPTS = 3
PULL_RETRY_DELAY = 0.25  # seconds times the attempt number; short so tests stay fast
PULL_TIMEOUT = 30.0
WORKERS = 8  # concurrent source fetches, and concurrent callback deliveries
CALLBACK_TIMEOUT = 5.0
CALLBACK_BACKOFF = (1.0, 2.0)  # waits before the 2nd and 3rd attempt
#: Error codes of statuses that injected faults answer with (CMS/DI error references, B9).
FAULT_CODES = {401: "UNAUTHORIZED", 404: "RESOURCE_NOT_FOUND", 429: "TOO_MANY_REQUESTS", 500: "INTERNAL_ERROR"}


def bc_error(status: int, code: str, message: str, retry_after: int | None = None) -> HttpError:
    """A Brightcove error: ``[{"error_code": code, "message": message}]``."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return HttpError(status, [{"error_code": code, "message": message}], headers)


def _fault_error(status: int) -> Response:
    phrase = HTTPStatus(status).phrase
    return json_response([{"error_code": FAULT_CODES.get(status, HTTPStatus(status).name), "message": phrase}],
                         status)


@dataclass
class Job:
    id: str
    video_id: str
    source_url: str
    callbacks: list[str]
    profile: str | None
    priority: str
    capture_images: bool
    submitted_at: str
    updated_at: str
    state: str = "processing"
    error_code: str | None = None
    error_message: str | None = None
    source_size: int | None = None
    source_path: Path | None = None  # a pulled source
    source_object: tuple[str, str] | None = None  # an S3 source: (bucket, key)
    outbox: deque[dict[str, Any]] = field(default_factory=deque)  # notifications not yet delivered
    delivering: bool = False  # a delivery thread is draining the outbox

    def to_json(self, account_id: str) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "account_id": account_id, "video_id": self.video_id,
                "error_code": self.error_code, "error_message": self.error_message, "priority": self.priority,
                "submitted_at": self.submitted_at, "started_at": self.submitted_at, "updated_at": self.updated_at}


@dataclass
class Video:
    id: str
    fields: dict[str, Any]  # the create body's fields, defaults filled in
    created_at: str
    updated_at: str
    complete: bool = False
    duration: int | None = None  # milliseconds, once published
    original_filename: str | None = None
    images: dict[str, Any] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    ingest_requests: int = 0
    recent: deque[float] = field(default_factory=deque)  # request times, for per_video_per_minute

    @property
    def reference_id(self) -> str | None:
        return self.fields["reference_id"]


class _FetchFailed(Exception):
    """The source could not be fetched; the message ends up in the job's ``error_message``."""


class BrightcoveEmulator(Emulator):
    """Brightcove OAuth + CMS + Dynamic Ingest, with upload targets in the sandbox's S3."""

    name = "brightcove"
    options: ClassVar[dict[str, tuple[Any, str]]] = {
        "client_id": ("sandbox-bc-client", "OAuth client id"),
        "client_secret": ("sandbox-bc-secret", "OAuth client secret"),
        "account_id": ("6200000000001", "the Video Cloud account id in the API paths"),
        "token_ttl": (TOKEN_TTL, "seconds an access token lives"),
        "custom_fields": (DEFAULT_CUSTOM_FIELDS, "the account's defined custom fields: comma-separated ids, an "
                                                 "enum's values after '=' separated by '|'"),
    }
    stages = ("brightcove.processing",)
    settings: ClassVar[dict[str, Setting]] = {  # see "Authentication" and "Limits" above
        "token_ttl": Setting(None, int),  # null: the token_ttl option
        "per_video_per_minute": Setting(0, int),  # 0: no limit
        "callback_duplicates": Setting(False, bool),
        "title_notifications": Setting(True, bool),  # false: DYNAMIC_RENDITION notifications only
    }
    fault_defaults: ClassVar[dict[str, Any]] = {"rate_limit_rps": RATE_LIMIT_RPS, "rate_limit_endpoints": list(REST_ENDPOINTS)}
    error_format = staticmethod(_fault_error)

    def __init__(self, ctx: Context, *, client_id: str = "sandbox-bc-client",
                 client_secret: str = "sandbox-bc-secret", account_id: str = "6200000000001",
                 token_ttl: int = TOKEN_TTL, custom_fields: str = DEFAULT_CUSTOM_FIELDS):
        super().__init__(ctx)
        self.client_id = client_id
        self.client_secret = client_secret
        self.account_id = str(account_id)
        self.token_ttl = int(token_ttl)
        self.custom_fields = _parse_custom_fields(custom_fields)
        self._base = f"http://{ctx.address}"
        self._lock = threading.RLock()
        self._videos: dict[str, Video] = {}
        self._by_reference: dict[str, Video] = {}
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        # The secrets handed out, so tests can prove none leaks into logs or Redis.
        self._tokens_issued: list[str] = []
        self._credentials_issued: list[dict[str, str]] = []
        self._callbacks_sent: list[dict[str, Any]] = []
        self._fetches = ThreadPoolExecutor(WORKERS, thread_name_prefix="brightcove-fetch")
        self._deliveries = ThreadPoolExecutor(WORKERS, thread_name_prefix="brightcove-callback")
        ctx.s3.add_bucket(BUCKET)

    # -- Emulator ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        p = self.name
        return [
            route("POST", r"/v4/access_token", "brightcove.oauth_token", self._oauth_token, provider=p),
            route("POST", ACCOUNT_PATH + r"/videos/?", "brightcove.create_video", self._create_video, provider=p),
            route("GET", ACCOUNT_PATH + r"/video_fields/?", "brightcove.video_fields", self._video_fields,
                  provider=p),
            route("GET", VIDEO_PATH + r"/?", "brightcove.get_video", self._get_video, provider=p, entity=_video_param),
            route("GET", VIDEO_PATH + r"/ingest_jobs/?", "brightcove.list_ingest_jobs", self._list_jobs, provider=p,
                  entity=_video_param),
            route("GET", VIDEO_PATH + r"/ingest_jobs/(?P<job_id>[^/]+)", "brightcove.get_ingest_job", self._get_job,
                  provider=p, entity=_video_param),
            route("GET", VIDEO_PATH + r"/upload-urls/(?P<source_name>[^/]+)", "brightcove.upload_urls",
                  self._upload_urls, provider=p, entity=_video_param),
            route("POST", VIDEO_PATH + r"/ingest-requests/?", "brightcove.ingest_request", self._ingest_request,
                  provider=p, entity=_video_param),
        ]

    def env(self, base_url: str) -> dict[str, str]:
        return {
            "INGEST_BRIGHTCOVE_CLIENT_ID": self.client_id,
            "INGEST_BRIGHTCOVE_CLIENT_SECRET": self.client_secret,
            "INGEST_BRIGHTCOVE_ACCOUNT_ID": self.account_id,
            "INGEST_BRIGHTCOVE_OAUTH_URL": base_url,
            "INGEST_BRIGHTCOVE_BASE_URL": base_url,  # CMS API
            "INGEST_BRIGHTCOVE_INGEST_URL": base_url,  # Dynamic Ingest API
            "INGEST_BRIGHTCOVE_S3_ENDPOINT": self.ctx.s3.url,
        }

    def state(self) -> dict[str, Any]:
        """``videos`` with their jobs, ``ingest_requests`` per video, the bucket's ``objects``
        (``size``, ``sha256``) and unfinished ``multipart_uploads``, and the secrets and
        notifications handed out: ``tokens_issued``, ``credentials_issued``, ``callbacks_sent``."""
        with self._lock:
            videos = [(self._video_row(v), [(self._job_row(j), j.source_path, j.source_object) for j in v.jobs])
                      for v in self._videos.values()]
            out = {
                "account_id": self.account_id,
                "ingest_requests": {v.id: v.ingest_requests for v in self._videos.values()},
                "tokens_issued": list(self._tokens_issued),
                "credentials_issued": [dict(c) for c in self._credentials_issued],
                "callbacks_sent": [dict(c) for c in self._callbacks_sent],
            }
        # Hash outside the lock: a 2 GiB object takes seconds and the API must keep answering.
        objects = self.ctx.s3.objects(BUCKET)
        by_key = {o["key"]: o["sha256"] for o in objects}
        for row, jobs in videos:
            for job_row, path, s3_object in jobs:
                if path is not None:
                    job_row["source_sha256"] = file_sha256(path)
                elif s3_object is not None and s3_object[0] == BUCKET:
                    job_row["source_sha256"] = by_key.get(s3_object[1])
                row["jobs"].append(job_row)
        return {**out, "videos": [row for row, _ in videos], "objects": objects,
                "multipart_uploads": self.ctx.s3.multipart_uploads(BUCKET)}

    def reset(self) -> None:
        """Forget every video, job, token and delivery (the sandbox resets S3 itself)."""
        with self._lock:
            self._videos.clear()
            self._by_reference.clear()
            self._tokens.clear()
            self._tokens_issued.clear()
            self._credentials_issued.clear()
            self._callbacks_sent.clear()
            shutil.rmtree(self.ctx.data_dir, ignore_errors=True)
            self.ctx.data_dir.mkdir(parents=True, exist_ok=True)

    def stop(self) -> None:
        self._fetches.shutdown(wait=False, cancel_futures=True)
        self._deliveries.shutdown(wait=False, cancel_futures=True)

    # -- OAuth ---------------------------------------------------------------------

    def _oauth_token(self, req: Request) -> Response:
        """``POST /v4/access_token``: client credentials in Basic auth, ``grant_type`` in the body or query."""
        scheme, _, encoded = (req.header("Authorization") or "").partition(" ")
        try:
            client_id, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if scheme.lower() != "basic" or not sep or not (
                hmac.compare_digest(client_id.encode(), self.client_id.encode())
                & hmac.compare_digest(secret.encode(), self.client_secret.encode())):
            raise HttpError(401, {"error": "invalid_client", "error_description": "The client credentials are invalid"})
        if req.content_length > JSON_LIMIT:
            raise HttpError(413, {"error": "invalid_request", "error_description": "Request body too large"})
        form = parse_qs(b"".join(req.iter_body()).decode("utf-8", "replace"))
        grant_type = req.arg("grant_type") or (form.get("grant_type") or [None])[0]
        if grant_type != "client_credentials":
            raise HttpError(400, {"error": "unsupported_grant_type",
                                  "error_description": "grant_type must be client_credentials"})
        ttl = self.ctx.setting("token_ttl")
        ttl = self.token_ttl if ttl is None else ttl
        token = secrets.token_urlsafe(96)
        with self._lock:
            self._tokens[token] = time.time() + ttl
            self._tokens_issued.append(token)
        return json_response({"access_token": token, "token_type": "Bearer", "expires_in": ttl})

    def _authorize(self, req: Request) -> None:
        scheme, _, token = (req.header("Authorization") or "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires is None:
            raise bc_error(401, "UNAUTHORIZED", "Permission denied.")
        if expires <= time.time():
            raise bc_error(401, "UNAUTHORIZED", "Access token expired.")
        if req.params["account_id"] != self.account_id:
            raise bc_error(403, "ACCESS_DENIED", f"Account {req.params['account_id']} is not accessible "
                                                 "with these client credentials.")

    # -- CMS -----------------------------------------------------------------------

    def _create_video(self, req: Request) -> Response:
        """``POST /v1/accounts/{a}/videos``: 201 + the video; the id is a 13-digit numeric string."""
        self._authorize(req)
        body = _json_body(req, "BAD_VALUE")
        if not isinstance(body, dict):
            raise bc_error(400, "BAD_VALUE", "The request body must be a JSON object")
        unknown = sorted(set(body) - set(VIDEO_FIELDS))
        if unknown:
            raise bc_error(400, "BAD_VALUE", f"Unrecognized field in the submitted data: {', '.join(unknown)}")
        fields = _video_fields(body)
        for name, value in fields["custom_fields"].items():
            defined = self.custom_fields.get(name)
            # The CMS reference's 422 example: error_code VALIDATION_ERROR, "<field>: ILLEGAL_FIELD".
            if defined is None:
                raise bc_error(422, "VALIDATION_ERROR", f"custom_fields.{name}: ILLEGAL_FIELD")
            if defined["type"] == "enum" and value not in defined["enum_values"]:
                raise bc_error(422, "VALIDATION_ERROR", f"custom_fields.{name}: ILLEGAL_VALUE")
        now = _now()
        with self._lock:
            reference_id = fields["reference_id"]
            if reference_id is not None and reference_id in self._by_reference:
                raise bc_error(409, "REFERENCE_ID_IN_USE", f"reference id {reference_id} is already in use")
            video = Video(id=self._new_video_id(), fields=fields, created_at=now, updated_at=now)
            self._videos[video.id] = video
            if reference_id is not None:
                self._by_reference[reference_id] = video
            answer = self._video_json(video)
        req.entity = video.id
        return json_response(answer, 201)

    def _video_fields(self, req: Request) -> Response:
        """``GET /v1/accounts/{a}/video_fields``: the account's custom fields, in the CMS reference's shape."""
        self._authorize(req)
        return json_response({
            "custom_fields": [dict(f) for f in self.custom_fields.values()],
            "max_custom_fields": MAX_CUSTOM_FIELDS,
            "standard_fields": [{"description": None, "id": name, "required": False}
                                for name in ("description", "long_description", "tags", "reference_id")],
        })

    def _get_video(self, req: Request) -> Response:
        video = self._video_for(req, "RESOURCE_NOT_FOUND", "Resource does not exist.")
        with self._lock:
            return json_response(self._video_json(video))

    def _list_jobs(self, req: Request) -> Response:
        video = self._video_for(req, "RESOURCE_NOT_FOUND", "Resource does not exist.")
        with self._lock:
            return json_response([j.to_json(self.account_id) for j in video.jobs])

    def _get_job(self, req: Request) -> Response:
        video = self._video_for(req, "RESOURCE_NOT_FOUND", "Resource does not exist.")
        with self._lock:
            for job in video.jobs:
                if job.id == req.params["job_id"]:
                    return json_response(job.to_json(self.account_id))
        raise bc_error(404, "RESOURCE_NOT_FOUND", "Resource does not exist.")

    def _video_for(self, req: Request, code: str, message: str) -> Video:
        """Authorize, find the path's video (an id or ``ref:<reference_id>``), apply the per-video limit."""
        self._authorize(req)
        raw = unquote(req.params["video_id"])
        with self._lock:
            video = self._by_reference.get(raw[4:]) if raw.startswith("ref:") else self._videos.get(raw)
            if video is None:
                raise bc_error(404, code, message)
            limit = self.ctx.setting("per_video_per_minute")
            if limit:
                now = time.monotonic()
                while video.recent and video.recent[0] <= now - 60:
                    video.recent.popleft()
                if len(video.recent) >= limit:
                    req.fault = "per_video_per_minute"
                    raise bc_error(429, "TOO_MANY_REQUESTS",
                                   f"Too many requests for video {video.id}: at most {limit} a minute",
                                   retry_after=max(1, math.ceil(video.recent[0] + 60 - now)))
                video.recent.append(now)
        return video

    def _new_video_id(self) -> str:
        # Random, not sequential: ids from before a reset never alias new videos.
        while (video_id := str(10**12 + secrets.randbelow(9 * 10**12))) in self._videos:
            pass
        return video_id

    def _video_json(self, v: Video) -> dict[str, Any]:
        """The CMS video object (providers.md §1, B2); caller holds the lock."""
        return {
            **v.fields, "id": v.id, "account_id": self.account_id, "complete": v.complete,
            "created_at": v.created_at, "updated_at": v.updated_at, "published_at": v.created_at,
            "duration": v.duration, "delivery_type": "dynamic_origin" if v.complete else "unknown",
            "digital_master_id": None, "has_digital_master": False, "original_filename": v.original_filename,
            "images": v.images, "text_tracks": [], "folder_id": None, "link": None, "sharing": None,
            "ad_keys": None, "clip_source_video_id": None, "projection": None,
        }

    # -- Dynamic Ingest ------------------------------------------------------------

    def _upload_urls(self, req: Request) -> Response:
        """``GET .../upload-urls/{source_name}``: a new S3 key and credentials on every call (B1)."""
        video = self._video_for(req, "NO_SUCH_VIDEO", "Unable to find the referenced video")
        if (req.header("Content-Type") or "").split(";")[0].strip().lower() != "application/json":
            raise bc_error(415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json")
        source_name = unquote(req.params["source_name"])
        if not source_name or any(c in source_name for c in " ?&#"):
            raise bc_error(400, "BAD_REQUEST", "source_name must be a file name without spaces or ? & #")
        key = f"{self.account_id}/{video.id}/{uuid.uuid4()}/{source_name}"
        credentials = {
            "access_key_id": "ASIA" + "".join(secrets.choice(CREDENTIAL_ALPHABET) for _ in range(16)),
            "secret_access_key": secrets.token_urlsafe(30),
            "session_token": secrets.token_urlsafe(192),
        }
        with self._lock:
            self._credentials_issued.append({"video_id": video.id, "object_key": key, **credentials})
        return json_response({
            "bucket": BUCKET, "object_key": key, **credentials,
            "signed_url": self.ctx.s3.presign_put_v2(BUCKET, key),
            "api_request_url": self.ctx.s3.object_url(BUCKET, key),
        })

    def _ingest_request(self, req: Request) -> Response:
        """``POST .../ingest-requests``: 200 ``{"id": job}``; the source is fetched in the background."""
        video = self._video_for(req, "NO_SUCH_VIDEO", "Unable to find the referenced video")
        with self._lock:
            video.ingest_requests += 1
        body = _json_body(req, "BAD_REQUEST")
        if not isinstance(body, dict):
            raise bc_error(400, "BAD_REQUEST", "Unable to parse request body.")
        unknown = sorted(set(body) - set(INGEST_FIELDS))
        if unknown:
            raise bc_error(400, "BAD_REQUEST", f"Unrecognized field: {', '.join(unknown)}")
        master = body.get("master")
        url = master.get("url") if isinstance(master, dict) else None
        if not url:
            raise bc_error(400, "NO_SOURCE", "Unable to find a source to use")
        if not isinstance(url, str):
            raise bc_error(422, "TYPE_VIOLATION", "master.url must be a string")
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https", "s3"):
            raise bc_error(422, "BAD_PROTOCOL_SOURCE_URL", "source url uses a unsupported protocol.")
        if not parts.netloc or not parts.path.strip("/"):
            raise bc_error(422, "MALFORMED_SOURCE_URL", "source url is malformed.")
        callbacks = body.get("callbacks", [])
        if not isinstance(callbacks, list) or not all(
                isinstance(c, str) and urlsplit(c).scheme in ("http", "https") and urlsplit(c).netloc
                for c in callbacks):
            raise bc_error(400, "BAD_CALLBACKS", "Callbacks were not in expected format")
        profile = body.get("profile")
        capture_images = body.get("capture-images", True)
        priority = body.get("priority", "normal")
        if profile is not None and not isinstance(profile, str):
            raise bc_error(422, "TYPE_VIOLATION", "profile must be a string")
        if not isinstance(capture_images, bool):
            raise bc_error(422, "TYPE_VIOLATION", "capture-images must be a boolean")
        if priority not in ("normal", "low"):
            raise bc_error(422, "TYPE_VIOLATION", "priority must be normal or low")
        now = _now()
        with self._lock:
            running = next((j for j in video.jobs if j.state not in TERMINAL), None)
            if running is not None:
                raise bc_error(409, "CONCURRENT_JOB", f"video {video.id} already has an unfinished ingest job "
                                                      f"({running.id}); duplicate jobs on one video are not allowed")
            job = Job(id=str(uuid.uuid4()), video_id=video.id, source_url=url, callbacks=callbacks, profile=profile,
                      priority=priority, capture_images=capture_images, submitted_at=now, updated_at=now,
                      source_object=self._s3_object(url))
            video.jobs.append(job)
        self._fetches.submit(self._fetch, video, job)
        return json_response({"id": job.id})

    # -- processing ----------------------------------------------------------------

    def _fetch(self, video: Video, job: Job) -> None:
        """Fetch (or look at) the source, check its container, then schedule the stages."""
        try:
            size, head = self._read_source(video, job)
        except _FetchFailed as exc:
            self._fail(video, job, "SOURCE_FETCH_FAILED", f"Failed to fetch the source: {exc}")
            return
        with self._lock:
            if not self._alive(video):
                return
            job.source_size, job.updated_at = size, _now()
        if not is_video_container(head):
            self._fail(video, job, "FILE_INVALID", "The source file is not a valid video")
            return
        self._after(0.4, self._publishing, video, job)

    def _read_source(self, video: Video, job: Job) -> tuple[int, bytes]:
        """``(size, first bytes)`` of the source: S3 objects in place, http(s) pulled to disk."""
        if job.source_object is not None:
            bucket, key = job.source_object
            try:
                found = self.ctx.s3.probe(bucket, key)
            except (ClientError, BotoCoreError) as exc:
                raise _FetchFailed(str(exc)) from None
            if found is None:
                raise _FetchFailed(f"no such object s3://{bucket}/{key}")
            return found
        path = self.ctx.data_dir / "sources" / job.id
        size = self._pull(video, job.source_url, path)
        with self._lock:
            job.source_path = path
        with open(path, "rb") as f:
            return size, f.read(12)

    def _s3_object(self, url: str) -> tuple[str, str] | None:
        """``(bucket, key)`` of an ``s3://`` URL or of an object URL on the sandbox's S3, else None."""
        if url.startswith("s3://"):
            bucket, _, key = url.removeprefix("s3://").partition("/")
            return bucket, key
        prefix = self.ctx.s3.url + "/"
        if url.startswith(prefix):
            bucket, _, key = urlsplit(url).path.lstrip("/").partition("/")
            return bucket, unquote(key)
        return None

    def _pull(self, video: Video, url: str, path: Path) -> int:
        """Download ``url`` to ``path``: up to 3 attempts expecting 200."""
        attempt = 1
        while True:
            try:
                return self._download(video, url, path)
            except _FetchFailed:
                if attempt == PULL_ATTEMPTS or not self._alive(video) or \
                        self.ctx.stopping.wait(PULL_RETRY_DELAY * attempt):
                    raise
            attempt += 1

    def _download(self, video: Video, url: str, path: Path) -> int:
        try:
            with urllib.request.urlopen(url, timeout=PULL_TIMEOUT) as resp:
                if resp.status != 200:
                    raise _FetchFailed(f"HTTP {resp.status}")
                path.parent.mkdir(parents=True, exist_ok=True)
                size = 0
                with open(path, "wb") as f:
                    while block := resp.read(BLOCK_SIZE):
                        if not self._alive(video) or self.ctx.stopping.is_set():
                            raise _FetchFailed("cancelled")
                        f.write(block)
                        size += len(block)
                return size
        except urllib.error.HTTPError as exc:
            exc.close()
            raise _FetchFailed(f"HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise _FetchFailed(str(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _FetchFailed(str(exc) or type(exc).__name__) from None

    def _after(self, fraction: float, step: Any, video: Video, job: Job) -> None:
        """Run ``step(video, job)`` after ``fraction`` of ``processing_seconds`` (at once if 0)."""
        seconds = self.ctx.processing_seconds()
        if seconds > 0:
            self.ctx.scheduler.call_later(fraction * seconds, step, video, job)
        else:
            step(video, job)

    def _publishing(self, video: Video, job: Job) -> None:
        """Transcoding is over: a failure here is the ``brightcove.processing`` stage's."""
        if self.ctx.stage_fails("brightcove.processing"):
            self._fail(video, job, "PROCESSING_FAILED", "The video could not be transcoded")
            return
        with self._lock:
            if not self._alive(video):
                return
            job.state, job.updated_at = "publishing", _now()
        self._after(0.3, self._published, video, job)

    def _published(self, video: Video, job: Job) -> None:
        """Playable: the video is complete and each rendition is notified."""
        with self._lock:
            if not self._alive(video):
                return
            now = _now()
            job.state, job.updated_at = "published", now
            video.complete, video.updated_at = True, now
            video.duration = int((job.source_size or 0) * 1000 / SOURCE_BYTES_PER_SECOND)
            video.original_filename = unquote(urlsplit(job.source_url).path.rsplit("/", 1)[-1]) or None
            if job.capture_images:
                video.images = {kind: {"src": f"{self._base}/images/{video.id}/{kind}.jpg"}
                                for kind in ("poster", "thumbnail")}
            notes = [self._rendition_notification(job, rendition) for rendition in RENDITIONS]
        self._notify(video, job, notes)
        self._after(0.3, self._finished, video, job)

    def _finished(self, video: Video, job: Job) -> None:
        with self._lock:
            if not self._alive(video):
                return
            job.state, job.updated_at = "finished", _now()
            note = self._title_notification(job, "SUCCESS")
        self._notify_title(video, job, note)

    def _fail(self, video: Video, job: Job, code: str, message: str) -> None:
        with self._lock:
            if not self._alive(video):
                return
            job.state, job.error_code, job.error_message, job.updated_at = "failed", code, message, _now()
            note = self._title_notification(job, "FAILED", message)
        self._notify_title(video, job, note)

    def _notify_title(self, video: Video, job: Job, note: dict[str, Any]) -> None:
        if self.ctx.setting("title_notifications"):
            self._notify(video, job, [note] * (2 if self.ctx.setting("callback_duplicates") else 1))

    def _alive(self, video: Video) -> bool:
        """False once the sandbox was reset after the video was created."""
        with self._lock:
            return self._videos.get(video.id) is video

    # -- notifications -------------------------------------------------------------

    def _rendition_notification(self, job: Job, rendition: str) -> dict[str, Any]:
        note = {"entity": rendition, "entityType": "DYNAMIC_RENDITION", "version": "1", "action": "CREATE",
                "jobId": job.id, "videoId": job.video_id, "dynamicRenditionId": rendition}
        if "/audio" in rendition:
            note.update(language="en", variant="main")
        return {**note, "accountId": self.account_id, "status": "SUCCESS"}

    def _title_notification(self, job: Job, status: str, error: str | None = None) -> dict[str, Any]:
        note = {"entity": job.video_id, "entityType": "TITLE", "version": "1", "action": "CREATE", "jobId": job.id,
                "videoId": job.video_id, "accountId": self.account_id, "status": status}
        if error is not None:
            note["errorMessage"] = error
        return note

    def _notify(self, video: Video, job: Job, notes: list[dict[str, Any]]) -> None:
        """Queue notifications for the job's callbacks; one delivery thread per job keeps their order."""
        if not job.callbacks or self.ctx.stopping.is_set():
            return
        with self._lock:
            job.outbox.extend(notes)
            if job.delivering:
                return
            job.delivering = True
        self._deliveries.submit(self._deliver, video, job)

    def _deliver(self, video: Video, job: Job) -> None:
        while True:
            with self._lock:
                if not job.outbox or not self._alive(video):
                    job.outbox.clear()
                    job.delivering = False
                    return
                note = job.outbox.popleft()
            for url in job.callbacks:
                self._post(url, note)

    def _post(self, url: str, note: dict[str, Any]) -> None:
        """POST one notification: up to 3 attempts, 1 s then 2 s apart; the outcome goes to ``callbacks_sent``."""
        sent = post_json(url, note, timeout=CALLBACK_TIMEOUT, backoff=CALLBACK_BACKOFF, stopping=self.ctx.stopping)
        if sent is None:
            return
        with self._lock:
            self._callbacks_sent.append({"t": time.time(), "url": url, "payload": note, "status": sent.status,
                                         "attempts": sent.attempts, "error": sent.error})

    # -- state rows ----------------------------------------------------------------

    def _video_row(self, v: Video) -> dict[str, Any]:
        return {"id": v.id, "name": v.fields["name"], "reference_id": v.reference_id, "state": v.fields["state"],
                "complete": v.complete, "duration": v.duration, "ingest_requests": v.ingest_requests,
                "custom_fields": dict(v.fields["custom_fields"]), "jobs": []}

    def _job_row(self, j: Job) -> dict[str, Any]:
        return {**j.to_json(self.account_id), "source_url": j.source_url, "source_size": j.source_size,
                "source_sha256": None, "profile": j.profile, "callbacks": list(j.callbacks)}


def _video_param(req: Request) -> str:
    return unquote(req.params["video_id"])


def _json_body(req: Request, code: str) -> Any:
    """The body as JSON; Brightcove-style 400 ``code`` if it cannot be parsed."""
    try:
        return req.json()
    except HttpError as exc:
        raise bc_error(exc.status, code, "Unable to parse request body.") from None


def _video_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a create body (limits from providers.md §1, B2); 422 ``ILLEGAL_FIELD`` names the field."""

    def check(ok: bool, name: str, rule: str) -> None:
        if not ok:
            raise bc_error(422, "ILLEGAL_FIELD", f"{name}: {rule}")

    def text(name: str, limit: int) -> str | None:
        value = body.get(name)
        check(value is None or (isinstance(value, str) and len(value) <= limit), name,
              f"must be a string of at most {limit} characters")
        return value

    name = body.get("name")
    check(isinstance(name, str) and 1 <= len(name) <= 255 and bool(name.strip()), "name",
          "must be a string of 1..255 characters")
    tags = body.get("tags") or []
    check(isinstance(tags, list) and all(isinstance(t, str) and t and "," not in t for t in tags), "tags",
          "must be a list of non-empty strings without commas")
    custom_fields = body.get("custom_fields") or {}
    check(isinstance(custom_fields, dict) and all(isinstance(v, str) for v in custom_fields.values()),
          "custom_fields", "must be an object of strings")
    state = body.get("state", "ACTIVE")
    check(state in ("ACTIVE", "INACTIVE"), "state", "must be ACTIVE or INACTIVE")
    cue_points = body.get("cue_points") or []
    check(isinstance(cue_points, list), "cue_points", "must be a list")
    for key in ("geo", "schedule"):
        check(body.get(key) is None or isinstance(body[key], dict), key, "must be an object")
    economics = body.get("economics", "AD_SUPPORTED")
    check(economics in ("AD_SUPPORTED", "FREE"), "economics", "must be AD_SUPPORTED or FREE")
    drm_disabled = body.get("drm_disabled", False)
    check(isinstance(drm_disabled, bool), "drm_disabled", "must be a boolean")
    return {
        "name": name, "description": text("description", 250), "long_description": text("long_description", 5000),
        "reference_id": text("reference_id", 150), "state": state, "tags": tags, "custom_fields": custom_fields,
        "cue_points": cue_points, "geo": body.get("geo"), "schedule": body.get("schedule"), "economics": economics,
        "drm_disabled": drm_disabled,
    }


def _parse_custom_fields(spec: str) -> dict[str, dict[str, Any]]:
    """``"team,subject=A|B"`` -> the CMS ``video_fields`` entries by id (string, or enum with values)."""
    fields: dict[str, dict[str, Any]] = {}
    for item in filter(None, (part.strip() for part in str(spec).split(","))):
        name, _, values = item.partition("=")
        entry: dict[str, Any] = {"description": None, "display_name": name.strip().title(), "id": name.strip(),
                                 "required": False, "type": "enum" if values else "string"}
        if values:
            entry["enum_values"] = [v for v in values.split("|") if v]
        fields[entry["id"]] = entry
    return fields


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
