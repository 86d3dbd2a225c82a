"""Gcore Streaming (VOD) emulator: the videos REST API and the TUS upload server.

Follows Gcore's public upload guide (``shared/seeds/gcore-upload-video-via-api.md``, "the
seed") and ``design/providers.md`` §5 (field names from Gcore's OpenAPI-generated SDK,
G-Core/gcore-python ``types/streaming/video.py``, ``create_video_param.py``).

Endpoints, by the names the request log and fault rules use:

======================  ===========================================  =================================
gcore.create_video      ``POST /streaming/videos``                   201 + one video object (seed, Step 1)
gcore.list_videos       ``GET /streaming/videos``                    200 + bare array; ``client_user_id``,
                                                                     ``status``, ``id=1,2``, ``page``,
                                                                     ``per_page`` (default 25, max 100)
gcore.get_video         ``GET /streaming/videos/{id}``               200 / 404
gcore.delete_video      ``DELETE /streaming/videos/{id}``            204 / 404
gcore.upload_params     ``GET /streaming/videos/{id}/upload``        servers + token + video (seed, Step 2)
gcore.tus_*             ``OPTIONS/POST /upload/``,                   TUS 1.0.0 (seed, Step 3), see
                        ``HEAD/PATCH/DELETE /upload/{hex}``          :mod:`sandbox.tus`
gcore.processing        (no HTTP) the processing stage               target of ``action: "fail"`` rules
======================  ===========================================  =================================

REST calls need ``Authorization: APIKey <key>`` (seed curl examples). The TUS server does
not: the upload token in ``Upload-Metadata`` authorises the session, as at Gcore.

Errors. Gcore's JSON error schema is not documented (providers.md §8), so REST errors are
the emulator's choice, always ``{"error": "<text>"}``:

* 401 ``Unauthorized`` - no or wrong ``Authorization: APIKey <key>``;
* 400 ``Invalid JSON body``, ``body must be {"video": {...}}``, ``video.name must be a
  string of 1..255 characters``, ``video.client_user_id must be an integer``, ... ;
* 404 ``Video not found``.

TUS errors are plain text, the seed's "Most common TUS errors":

* 405 bad session parameters: a missing ``filename``/``filetype``/``video_id`` in
  ``Upload-Metadata``, a non-integer ``video_id``, a bad ``Upload-Length``;
* 500 ``token invalid (null)`` (no token), ``token invalid (eyJhbGciOi...)`` (first ten
  characters; bad signature or expired), ``token video (A) does not match this video (B)``,
  ``token client (A) does not match this client (B)`` - A from the token, B from the
  metadata; an absent or empty ``client_id`` is B = "" (the account's id is required, seed
  Step 3 "must provide these 3 fields"); and, the emulator's choice, ``video (B) not
  found`` for a deleted video;
* 423 ``file currently locked``: a PATCH, HEAD or DELETE while another connection holds the
  upload (tusd's ``ErrFileLocked``; Gcore's uploader is assumed to lock like tusd).

Create: ``client_user_id`` must fit a signed 32-bit integer (*assumed*: the SDK types it
``int`` with no width; the strict reading is emulated), else 400; ``priority`` -10..10
(SDK ``create_video_param.py``), else 400; ``origin_http_headers`` must be one
``Authorization: ...`` line (SDK), else 400, and the pull sends it to the origin.

Fault settings (``PUT /_sandbox/faults``): ``video_client_id`` false leaves ``client_id``
out of every video answer; ``tus_lock_hold_seconds`` N keeps an upload locked N seconds
after its first unfinished PATCH, as a paused client's open connection would;
``tus_checksum`` true makes the TUS server offer the ``checksum`` extension (*assumed*: Gcore's
docs do not say whether theirs does).

Lifecycle (seed, "Video upload and processing statuses"; SDK ``Video.status``)::

    empty --source complete--> pending --> viewable --> ready
                                  |
                                  +--> error "File Invalid"      (no MP4/MOV ftyp, no Matroska magic)
                                  +--> error "Processing failed" (injected: processing_fail_rate / rule)

A source is complete when a TUS upload's offset reaches its length, or when a pull from
``origin_url`` finishes. A pull makes 3 attempts expecting 200 (seed, "How it works"); after
the third failure the video stays ``empty`` with ``error`` = ``Origin download failed: HTTP
404`` (or the network error). The seed, older than the SDK, shows "File Invalid" with
status ``empty``; today's API has an ``error`` status, which the emulator uses for
processing failures. Processing spreads over ``processing_seconds`` (the Sandbox's, or the
``processing_seconds`` of the gcore fault config): the probe at 20 %, ``viewable`` (first
quality done) at 50 %, ``ready`` at 100 %; 0 makes it instant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from .emulator import Context, Emulator
from .faults import Setting
from .fetch import FetchFailed, download
from .media import file_sha256, is_video_container
from .tus import TusServer, TusUpload, tus_error
from .web import HttpError, Request, Response, Route, json_response, route

FIRST_VIDEO_ID = 2_500_000
UPLOAD_SERVER_ID = 561  # the seed's example server id
TOKEN_TTL = 4 * 3600  # "valid for 4 hours" (seed, Step 2)
TUS_MAX_SIZE = 256 * 1024**3  # Gcore publishes no limit; large enough for any test
PULL_ATTEMPTS = 3  # "We attempt to download a file three times" (seed)
PULL_RETRY_DELAY = 0.25  # seconds times the attempt number; short so tests stay fast
PULL_TIMEOUT = 30.0
PULL_WORKERS = 8  # pulls are queued, "each one will be processed as soon as possible" (seed)
RENDITIONS = (("vod360n", 640, 360), ("vod480n", 854, 480), ("vod720p", 1280, 720))
SOURCE_BYTES_PER_SECOND = 500_000  # to derive a plausible duration from the source size
VIDEO_PATH = r"/streaming/videos/(?P<video_id>\d+)"
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class UploadTokens:
    """HS256 JWTs binding a video id, a client id and an expiry (the seed's ``eyJhbGciOi...``)."""

    def __init__(self, secret: bytes, ttl: float = TOKEN_TTL):
        self._secret = secret
        self._ttl = ttl

    def issue(self, video_id: int, client_id: int) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        claims = {"video_id": video_id, "client_id": client_id, "exp": int(time.time() + self._ttl)}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{header}.{payload}.{self._sign(header, payload)}"

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; ValueError if it is malformed, forged or expired."""
        try:
            header, payload, signature = token.split(".")
            if not hmac.compare_digest(signature, self._sign(header, payload)):
                raise ValueError("bad signature")
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            if not isinstance(claims, dict) or claims.get("exp", 0) < time.time():
                raise ValueError("expired")
            return claims
        except (ValueError, TypeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
            raise ValueError(f"invalid token: {exc}") from None

    def _sign(self, header: str, payload: str) -> str:
        return _b64(hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class Video:
    id: int
    name: str
    description: str
    client_user_id: int | None
    origin_url: str | None
    priority: int
    slug: str
    created_at: str
    updated_at: str
    status: str = "empty"
    error: str = ""
    origin_size: int | None = None
    duration: int | None = None  # milliseconds, once processed
    converted: list[dict[str, Any]] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)
    source: Path | None = None  # the complete source file
    pull_path: Path | None = None  # where a pull is being written
    pulled: int = 0  # bytes of the origin downloaded so far
    pull_size: int | None = None  # the origin's Content-Length
    origin_auth: bool = False  # created with origin_http_headers (the value is never kept in state)


class GcoreEmulator(Emulator):
    """Gcore videos API + TUS upload server + emulated processing."""

    name = "gcore"
    options: ClassVar[dict[str, tuple[Any, str]]] = {
        "api_key": ("sandbox-gcore-key", "API key accepted in 'Authorization: APIKey <key>'"),
        "client_id": (4242, "the account's client id (videos' client_id, TUS metadata client_id)"),
    }
    stages = ("gcore.processing",)
    settings: ClassVar[dict[str, Setting]] = {
        # false: video answers leave out ``client_id`` (Optional in the SDK's Video), so a
        # client must know its account's id some other way.
        "video_client_id": Setting(True, bool),
        # > 0: after a PATCH that leaves an upload unfinished, its lock stays held that many
        # seconds (once per upload), as by a paused client whose connection is still open.
        "tus_lock_hold_seconds": Setting(0, int),
        # true: the TUS server offers the checksum extension. Gcore's docs do not say whether
        # theirs does (*assumed* off); the fleet sends checksums only where OPTIONS offers them.
        "tus_checksum": Setting(False, bool),
    }

    def __init__(self, ctx: Context, *, api_key: str = "sandbox-gcore-key", client_id: int = 4242):
        super().__init__(ctx)
        self.api_key = api_key
        self.client_id = int(client_id)
        self._base = f"http://{ctx.address}"
        self._videos: dict[int, Video] = {}
        self._next_id = FIRST_VIDEO_ID
        self._tokens = UploadTokens(secrets.token_bytes(32))
        self._tokens_issued: list[str] = []  # so tests can prove no token leaks into logs or Redis
        self._tus = TusServer(provider=self.name, address=ctx.address, directory=ctx.data_dir / "uploads",
                              max_size=TUS_MAX_SIZE, authorize=self._authorize_upload,
                              complete=self._upload_complete, after_patch=self._after_patch, lock_timeout=0,
                              checksums=lambda: bool(self.ctx.setting("tus_checksum")))
        self._held: set[str] = set()  # uploads whose lock a "paused client" already held once
        self._pulls = self.pool("pull", PULL_WORKERS)

    # -- Emulator ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        p = self.name
        return [
            route("POST", r"/streaming/videos/?", "gcore.create_video", self._create, provider=p),
            route("GET", r"/streaming/videos/?", "gcore.list_videos", self._list, provider=p),
            route("GET", VIDEO_PATH + "/?", "gcore.get_video", self._get, provider=p, entity=_video_param),
            route("DELETE", VIDEO_PATH + "/?", "gcore.delete_video", self._delete, provider=p, entity=_video_param),
            route("GET", VIDEO_PATH + "/upload/?", "gcore.upload_params", self._upload_params, provider=p,
                  entity=_video_param),
            *self._tus.routes(),
        ]

    def env(self, base_url: str) -> dict[str, str]:
        return {"INGEST_GCORE_BASE_URL": base_url, "INGEST_GCORE_API_KEY": self.api_key,
                "INGEST_GCORE_CLIENT_ID": str(self.client_id)}

    def state(self) -> dict[str, Any]:
        """``videos`` (with the sha256 of the stored bytes), TUS ``uploads``, ``tokens_issued``."""
        uploads = self._tus.uploads()
        latest: dict[Any, TusUpload] = {u.owner: u for u in uploads}  # dicts keep creation order
        with self._lock:
            rows = []
            for v in self._videos.values():
                upload = latest.get(v.id)
                if v.source is not None:
                    path, received, size = v.source, v.origin_size, v.origin_size
                elif v.pull_path is not None:
                    path, received, size = v.pull_path, v.pulled, v.pull_size
                elif upload is not None:
                    path, received, size = upload.path, upload.offset, upload.length
                else:
                    path, received, size = None, 0, None
                rows.append(({"id": v.id, "name": v.name, "description": v.description, "status": v.status,
                              "error": v.error, "client_user_id": v.client_user_id, "priority": v.priority,
                              "origin_url": v.origin_url, "origin_auth": v.origin_auth,
                              "bytes_received": received, "size": size}, path))
            tokens = list(self._tokens_issued)
        # Hash outside the lock: a 2 GiB file takes seconds and the API must keep answering.
        videos = [{**row, "sha256": file_sha256(path)} for row, path in rows]
        return {
            "videos": videos,
            "uploads": [{"id": u.id, "video_id": u.owner, "offset": u.offset, "length": u.length,
                         "bytes_received_total": u.bytes_received_total} for u in uploads],
            "tokens_issued": tokens,
        }

    def clear(self) -> None:
        self._videos.clear()
        self._tokens_issued.clear()
        self._held.clear()
        self._next_id = FIRST_VIDEO_ID
        self._tus.reset()

    # -- REST handlers -------------------------------------------------------------

    def _create(self, req: Request) -> Response:
        """``POST /streaming/videos`` ``{"video": {...}}``: pull if ``origin_url``, else await TUS."""
        self._authenticate(req)
        body = req.json()
        fields = body.get("video") if isinstance(body, dict) else None
        if not isinstance(fields, dict):
            raise HttpError(400, {"error": 'body must be {"video": {...}}'})
        name = fields.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 255 or not name.strip():
            raise HttpError(400, {"error": "video.name must be a string of 1..255 characters"})
        description = _optional(fields, "description", str) or ""
        origin_url = _optional(fields, "origin_url", str) or None
        client_user_id = _int32(_optional(fields, "client_user_id", int), "video.client_user_id")
        origin_headers = _parse_origin_headers(_optional(fields, "origin_http_headers", str))
        priority = _optional(fields, "priority", int) or 0
        if not -10 <= priority <= 10:
            raise HttpError(400, {"error": "video.priority must be in -10..10"})
        now = _now()
        with self._lock:
            video = Video(id=self._next_id, name=name, description=description, client_user_id=client_user_id,
                          origin_url=origin_url, priority=priority, slug=_slug(), created_at=now, updated_at=now,
                          origin_auth=bool(origin_headers))
            self._next_id += 1
            self._videos[video.id] = video
            answer = self._to_json(video)
        req.entity = str(video.id)
        if origin_url:
            self._pulls.submit(self._pull, video, origin_url, origin_headers)
        return json_response(answer, 201)

    def _list(self, req: Request) -> Response:
        """``GET /streaming/videos``: the fleet's find-or-create looks videos up by ``client_user_id``."""
        self._authenticate(req)
        client_user_id = _int32(_int_arg(req, "client_user_id"), "client_user_id")
        status = req.arg("status")
        ids = req.arg("id")
        try:
            wanted = {int(i) for i in ids.split(",") if i.strip()} if ids else None
        except ValueError:
            raise HttpError(400, {"error": "id must be a comma-separated list of integers"}) from None
        page = _int_arg(req, "page") or 1
        per_page = min(_int_arg(req, "per_page") or 25, 100)
        if page < 1 or per_page < 1:
            raise HttpError(400, {"error": "page and per_page must be >= 1"})
        with self._lock:
            found = [
                self._to_json(v) for v in sorted(self._videos.values(), key=lambda v: v.id, reverse=True)
                if (client_user_id is None or v.client_user_id == client_user_id)
                and (status is None or v.status == status)
                and (wanted is None or v.id in wanted)
            ]
        return json_response(found[(page - 1) * per_page: page * per_page])

    def _get(self, req: Request) -> Response:
        self._authenticate(req)
        with self._lock:
            return json_response(self._to_json(self._find(req)))

    def _delete(self, req: Request) -> Response:
        self._authenticate(req)
        with self._lock:
            video = self._find(req)
            del self._videos[video.id]
        self._tus.forget_owner(video.id)
        for path in (video.source, video.pull_path):
            if path is not None:
                path.unlink(missing_ok=True)
        return Response(204)

    def _upload_params(self, req: Request) -> Response:
        """``GET /streaming/videos/{id}/upload``: where and with what token to start a TUS session."""
        self._authenticate(req)
        with self._lock:
            video = self._to_json(self._find(req))
            token = self._tokens.issue(video["id"], self.client_id)
            self._tokens_issued.append(token)
        return json_response({
            "servers": [{"id": UPLOAD_SERVER_ID, "role": "upload", "hostname": self.ctx.address,
                         "active": True, "ssl": False}],
            "token": token,
            "video": video,
        })

    def _authenticate(self, req: Request) -> None:
        if not hmac.compare_digest(req.header("Authorization") or "", f"APIKey {self.api_key}"):
            raise HttpError(401, {"error": "Unauthorized"})

    def _find(self, req: Request) -> Video:
        video = self._videos.get(int(req.params["video_id"]))
        if video is None:
            raise HttpError(404, {"error": "Video not found"})
        return video

    # -- TUS hooks -----------------------------------------------------------------

    def _authorize_upload(self, req: Request, length: int, metadata: dict[str, str]) -> int:
        """Check a session's metadata and token, with Gcore's documented error texts."""
        missing = [k for k in ("filename", "filetype", "video_id") if not metadata.get(k)]
        if missing:
            raise tus_error(405, f"missing Upload-Metadata: {', '.join(missing)}")
        try:
            video_id = int(metadata["video_id"])
        except ValueError:
            raise tus_error(405, "Upload-Metadata video_id must be an integer") from None
        # An absent, empty or non-numeric client_id is "not this client": the seed's 500 text.
        raw_client = (metadata.get("client_id") or "").strip()
        client_id: int | str = int(raw_client) if raw_client.isdigit() else raw_client
        token = metadata.get("token")
        if not token:
            raise tus_error(500, "token invalid (null)")
        try:
            claims = self._tokens.verify(token)
        except ValueError:
            raise tus_error(500, f"token invalid ({token[:10]}...)") from None
        if claims.get("video_id") != video_id:
            raise tus_error(500, f"token video ({claims.get('video_id')}) does not match this video ({video_id})")
        if claims.get("client_id") != client_id:
            raise tus_error(500, f"token client ({claims.get('client_id')}) does not match this client ({client_id})")
        with self._lock:
            if video_id not in self._videos:
                raise tus_error(500, f"video ({video_id}) not found")
        return video_id

    def _after_patch(self, upload: TusUpload) -> None:
        """The ``tus_lock_hold_seconds`` fault: hold the lock on, as an open connection would."""
        seconds = self.ctx.setting("tus_lock_hold_seconds")
        if not seconds or upload.complete or upload.id in self._held:
            return
        if upload.lock.acquire(blocking=False):
            self._held.add(upload.id)
            self.ctx.scheduler.call_later(seconds, upload.lock.release)

    def _upload_complete(self, upload: TusUpload) -> None:
        with self._lock:
            video = self._videos.get(upload.owner)
            # A second session may finish after the first one already delivered the source.
            if video is None or video.source is not None:
                return
            self._source_ready(video, upload.path, upload.length)

    # -- pull from origin_url ------------------------------------------------------

    def _pull(self, video: Video, url: str, headers: dict[str, str]) -> None:
        """Download ``origin_url`` (3 attempts, expecting 200), then process it."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            self._pull_failed(video, f"unsupported URL scheme '{scheme}'")
            return
        path = self.ctx.data_dir / "origins" / str(video.id)
        reason = ""
        for attempt in range(1, PULL_ATTEMPTS + 1):
            try:
                size = self._download(video, url, headers, path)
            except FetchFailed as exc:
                reason = str(exc)
                if not self._alive(video):
                    path.unlink(missing_ok=True)
                    return
                if attempt < PULL_ATTEMPTS and self.ctx.stopping.wait(PULL_RETRY_DELAY * attempt):
                    return
                continue
            with self._lock:
                if self._alive(video):
                    self._source_ready(video, path, size)
            return
        self._pull_failed(video, reason)

    def _download(self, video: Video, url: str, headers: dict[str, str], path: Path) -> int:
        def started(length: int | None) -> None:
            with self._lock:
                video.pull_path, video.pulled, video.pull_size = path, 0, length

        def received(block: bytes) -> None:
            with self._lock:
                video.pulled += len(block)

        download(url, path, timeout=PULL_TIMEOUT, alive=lambda: self._alive(video), stopping=self.ctx.stopping,
                 headers=headers, on_start=started, on_block=received)
        return video.pulled

    def _pull_failed(self, video: Video, reason: str) -> None:
        with self._lock:
            if self._alive(video):
                video.error = f"Origin download failed: {reason}"
                video.updated_at = _now()

    # -- processing ----------------------------------------------------------------

    def _source_ready(self, video: Video, path: Path, size: int) -> None:
        """The source is complete (caller holds the lock): pending, then the processing steps."""
        video.source, video.origin_size = path, size
        video.status, video.error, video.updated_at = "pending", "", _now()
        self._after(0.2, self._probe, video)

    def _after(self, fraction: float, step: Any, video: Video) -> None:
        """Run ``step(video)`` after ``fraction`` of ``processing_seconds`` (at once if 0)."""
        seconds = self.ctx.processing_seconds()
        if seconds > 0:
            self.ctx.scheduler.call_later(fraction * seconds, step, video)
        else:
            step(video)

    def _probe(self, video: Video) -> None:
        """Check the container, as Gcore's probe does; a non-video ends in "File Invalid"."""
        try:
            with open(video.source, "rb") as f:
                head = f.read(12)
        except OSError:
            head = b""
        with self._lock:
            if not self._alive(video):
                return
            video.updated_at = _now()
            if not is_video_container(head):
                video.status, video.error = "error", "File Invalid"
                return
            video.converted = [
                {"id": video.id * 10 + i, "name": name, "progress": 0, "status": "processing", "error": "",
                 "width": width, "height": height, "size": None, "mp4_url": None}
                for i, (name, width, height) in enumerate(RENDITIONS)
            ]
        self._after(0.3, self._viewable, video)

    def _viewable(self, video: Video) -> None:
        """The lowest quality is done: the manifest plays, other qualities are half-way."""
        with self._lock:
            if not self._alive(video):
                return
            video.status, video.updated_at = "viewable", _now()
            self._complete_rendition(video, video.converted[0])
            for rendition in video.converted[1:]:
                rendition["progress"] = 50
        self._after(0.5, self._finish, video)

    def _finish(self, video: Video) -> None:
        fault = self.ctx.stage_fails("gcore.processing")
        with self._lock:
            if not self._alive(video):
                return
            video.updated_at = _now()
            pending = [r for r in video.converted if r["status"] == "processing"]
            if fault:
                video.status, video.error = "error", "Processing failed"
                for rendition in pending:
                    rendition.update(status="error", error="Processing failed")
                return
            for rendition in pending:
                self._complete_rendition(video, rendition)
            video.status = "ready"
            video.duration = int((video.origin_size or 0) * 1000 / SOURCE_BYTES_PER_SECOND)
            video.screenshots = [f"{self._public(video)}/screenshots/{i}.jpg" for i in range(5)]

    def _complete_rendition(self, video: Video, rendition: dict[str, Any]) -> None:
        rendition.update(progress=100, status="complete",
                         size=(video.origin_size or 0) * rendition["height"] // 1080,
                         mp4_url=f"{self._public(video)}/{rendition['name']}.mp4")

    # -- helpers -------------------------------------------------------------------

    def _alive(self, video: Video) -> bool:
        """False once the video was deleted or the sandbox reset (ids restart after a reset)."""
        return self._videos.get(video.id) is video

    def _public(self, video: Video) -> str:
        return f"{self._base}/videos/{self.client_id}_{video.slug}"

    def _to_json(self, v: Video) -> dict[str, Any]:
        """The video as ``GET /streaming/videos/{id}`` returns it (SDK ``Video``); caller holds the lock."""
        public = self._public(v)
        return {
            "id": v.id, "name": v.name, "description": v.description,
            **({"client_id": self.client_id} if self.ctx.setting("video_client_id") else {}),
            "client_user_id": v.client_user_id, "status": v.status, "error": v.error, "slug": v.slug,
            "origin_url": v.origin_url, "origin_size": v.origin_size, "origin_video_duration": v.duration,
            "duration": v.duration, "priority": v.priority, "projection": "regular",
            "hls_url": f"{public}/master.m3u8", "hls_cmaf_url": f"{public}/master-cmaf.m3u8",
            "dash_url": f"{public}/master.mpd", "iframe_url": f"{self._base}/videos/{self.client_id}_{v.slug}",
            "screenshot": v.screenshots[0] if v.screenshots else None, "screenshots": list(v.screenshots),
            "poster": None, "converted_videos": [dict(r) for r in v.converted], "stream_id": None,
            "views": 0, "cdn_views": 0, "created_at": v.created_at, "updated_at": v.updated_at,
        }


def _video_param(req: Request) -> str:
    return req.params["video_id"]


def _optional(fields: dict[str, Any], name: str, kind: type) -> Any:
    value = fields.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise HttpError(400, {"error": f"video.{name} must be {'an integer' if kind is int else 'a string'}"})
    return value


def _int_arg(req: Request, name: str) -> int | None:
    raw = req.arg(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise HttpError(400, {"error": f"{name} must be an integer"}) from None


def _int32(value: int | None, name: str) -> int | None:
    """*Assumed*: the SDK types ``client_user_id`` as a plain ``int``; the emulator is strict
    and refuses what a signed 32-bit column could not hold (400, its own text)."""
    if value is not None and not INT32_MIN <= value <= INT32_MAX:
        raise HttpError(400, {"error": f"{name} must be a 32-bit integer ({INT32_MIN}..{INT32_MAX})"})
    return value


def _parse_origin_headers(raw: str | None) -> dict[str, str]:
    """``origin_http_headers`` is one ``Authorization: <type> <credentials>`` line (SDK
    ``create_video_param.py``: "Authorization HTTP request header"); nothing else is accepted."""
    if not raw:
        return {}
    name, sep, value = raw.partition(":")
    if not sep or name.strip().lower() != "authorization" or not value.strip() or "\n" in raw or "\r" in raw:
        raise HttpError(400, {"error": 'video.origin_http_headers must look like "Authorization: Bearer ..."'})
    return {"Authorization": value.strip()}


def _slug() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(16))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
