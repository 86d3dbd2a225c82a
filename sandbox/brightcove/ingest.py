"""Brightcove's Dynamic Ingest API: S3 upload targets, ingest requests, and the jobs they start.

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
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from ..fetch import FetchFailed, download
from ..media import is_video_container
from ..web import Request, Response, json_response
from .api import _json_body, _now, bc_error
from .cms import Video

BUCKET = "ingestion-upload-sandbox"  # Brightcove's is ingestion-upload-production (B1 example)
CREDENTIAL_ALPHABET = string.ascii_uppercase + string.digits
#: DI ingest-request fields (B1).
INGEST_FIELDS = ("master", "profile", "capture-images", "callbacks", "poster", "thumbnail", "text_tracks",
                 "audio_tracks", "priority")
TERMINAL = ("finished", "failed")
#: Renditions of the default Dynamic Delivery profile, as notified (B5 sample).
RENDITIONS = ("default/audio64", "default/audio128", "default/video360", "default/video720", "default/video1080")
SOURCE_BYTES_PER_SECOND = 500_000  # to derive a plausible duration from the source size
PULL_ATTEMPTS = 3
PULL_RETRY_DELAY = 0.25  # seconds times the attempt number; short so tests stay fast
PULL_TIMEOUT = 30.0


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


class DynamicIngest:
    """Upload targets, ingest requests and job processing, mixed into the emulator (whose
    ``__init__`` declares ``_credentials_issued`` and the ``_fetches`` pool)."""

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
        signed_url = self.ctx.s3.presign_put_v2(BUCKET, key)
        with self._lock:
            self._credentials_issued.append({"video_id": video.id, "object_key": key, **credentials,
                                             "signed_url": signed_url})
        return json_response({
            "bucket": BUCKET, "object_key": key, **credentials,
            "signed_url": signed_url,
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

    def _fetch(self, video: Video, job: Job) -> None:
        """Fetch (or look at) the source, check its container, then schedule the stages."""
        try:
            size, head = self._read_source(video, job)
        except FetchFailed as exc:
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
                raise FetchFailed(str(exc)) from None
            if found is None:
                raise FetchFailed(f"no such object s3://{bucket}/{key}")
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
            except FetchFailed:
                if attempt == PULL_ATTEMPTS or not self._alive(video) or \
                        self.ctx.stopping.wait(PULL_RETRY_DELAY * attempt):
                    raise
            attempt += 1

    def _download(self, video: Video, url: str, path: Path) -> int:
        return download(url, path, timeout=PULL_TIMEOUT, alive=lambda: self._alive(video), stopping=self.ctx.stopping)

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

    def _alive(self, video: Video) -> bool:
        """False once the sandbox was reset after the video was created."""
        with self._lock:
            return self._videos.get(video.id) is video
