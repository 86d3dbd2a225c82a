"""Brightcove Once (unicornmedia) emulator: the Ingest API, media items and notifications.

Follows Brightcove's "Once Content Ingest Overview" (``shared/seeds/brightcove-once-ingest.txt``,
"the seed": one ``POST`` of a JSON job with the API key in a header, the request schema in
its Appendix, the ``Validation Errors`` body) and ``design/providers.md`` §2 (the Media
Management API as the place to poll, ``foreignKey`` as the item's identity). The paths are
Once's, so the fleet only swaps the base URL of ``api.unicornmedia.com``.

Endpoints, by the names the request log and fault rules use:

=================  ==================================================================  ==========================
once.ingest        ``POST /ingest-api/{domainId}/catalogs/{catalogId}``                 200 ``{requestId}`` / 400
once.media_items   ``GET /media-management-api/domains/{d}/catalogs/{c}/mediaItems``    200 page of items
once.media_item    ``GET /media-management-api/domains/{d}/catalogs/{c}/mediaItems/{id}``  200 item / 404
once.processing    (no HTTP) transcoding of a fetched source                            ``action: "fail"`` target
=================  ==================================================================  ==========================

Authentication: header ``X-BC-ONCE-API-KEY`` (the ``once_api_key`` option), else 401
``{"error": "Unauthorized"}``; then a domain or catalog other than the ``once_domain_id`` /
``once_catalog_id`` options (compared case-insensitively, they are GUIDs) is 404
``{"error": "Not Found"}``. The seed states no status codes (providers.md §2): these are
the emulator's choice.

Ingest. The body is validated against the seed's schema (``tasks/providers/once_schema.json``, verbatim)
by the small draft-04 validator below, with these readings of the schema:

* ``enum`` values are compared case-insensitively: the seed's own example sends
  ``"priority": "normal"`` and ``"timedTextType": "SUBTITLE"`` against ``"Normal"`` and
  ``"Subtitle"`` (providers.md §2 [D]). ``countryCode`` ``"UK"`` (also in the example) is
  accepted as an alias of ``"GB"``, so that the seed's example passes as a whole.
* a one-element ``items`` array (the schema's tuple form, used where a list of one item
  type is clearly meant) applies to every element, not only the first as draft-04 says;
  ``required`` on arrays (``["0"]``) and keywords of another type's (``additionalProperties``
  on strings, ``minimum`` on a string) are ignored, as draft-04 ignores them.
* beyond the schema: ``title`` and ``description`` must not contain emoji (the seed's
  field table), and a publication rule's ``endDate`` must not precede its ``startDate``
  (the seed's error example). End dates in the past are *not* refused: the seed's example
  has one.

An invalid body answers 400 ``{"requestId": "<uuid>", "error": "Validation Errors",
"fieldErrors": {"<path>": ["message", ...]}}`` with dotted paths (``foreignKey``,
``media.sourceURL``, ``publicationRules[0].endDate``; ``body`` for a body that is no JSON
object). A valid one answers 200 ``{"requestId": "<uuid>"}`` and is processed in the
background. Every request, valid or not, is recorded in the state's ``requests``.

Media items. The item is created under its ``foreignKey`` at once (``draftVersion`` 1,
``publishedVersion`` 0); posting the same ``foreignKey`` again makes a new version of that
item (``draftVersion`` + 1), never a second item. Over ``processing_seconds`` (the Sandbox's,
or the once fault config's; 0 = instant) the version's source is fetched (at 10 %):
``http(s)`` URLs with up to 3 attempts expecting 200, ``s3://BUCKET/KEY`` read from the
sandbox's S3 (:mod:`sandbox.s3`; the staging bucket ``once-staging`` exists from the start),
then checked to be a video container (:func:`sandbox.media.is_video_container`) - event
``ingest``; transcoded (50 % later) - event ``transcode``; published (40 % later:
``publishedVersion`` = the version) - event ``publish``. A failure - the source cannot be
fetched, is no video, or the ``once.processing`` stage fails (a ``fail`` rule or
``processing_fail_rate``) - leaves ``publishedVersion`` as it was and sends event ``error``.
The sandbox's state keeps each version's ``status`` (processing, published, error), ``error``
and ``sourceSha256``; the API does not show them.

The Media Management API follows ``BrightcoveLearning/BCL-API-References``
``once-media-management-api/v1/src/media-item.js`` (Get Media Item Collection, Get Media
Item): ``GET .../mediaItems?page=N`` lists the catalog's items, 20 a page (``page`` from 1,
as in the reference's ``next`` URL)::

    {"results": [{id, catalogId, domainId, isAd, foreignKey, title, draftVersion,
                  publishedVersion}], "prev": <url>|null, "next": <url>|null, "totalResults": n}

and ``GET .../mediaItems/{id}`` answers one item with those fields plus ``keywords``,
``cuePoints``, ``publicationRules`` and ``metadata`` as last ingested (404 ``{"error":
"Not Found"}`` for an unknown id). Items carry no ``status`` and no error: the reference
documents none. *Assumed* (the reference is silent): the order (creation order), that the
listing has no filter (other query parameters, ``foreignKey`` included, are ignored), that a
never-published item shows ``publishedVersion`` 0 (the reference's own examples show 0), that
``draftVersion`` is the newest ingested version, and that a failed version changes nothing
the API shows.

Notifications. The real payload is undocumented (providers.md §8); the emulator sends (*assumed*),
for each ``notifications`` entry of the request, on the events its ``notificationType``
selects (``ingest``, ``transcode``, ``publish``, ``error``; ``any`` = all four; ``update``
= the ``publish`` of a version >= 2, i.e. an update of an existing item)::

    {"requestId": "<uuid>", "foreignKey": "...", "mediaItemId": "<guid>", "version": 2,
     "event": "ingest"|"transcode"|"publish"|"error", "status": "success"|"error",
     "message": "..." (error only), "timestamp": "2026-01-01T00:00:00Z"}

``method`` POST (default) and PUT send it as a JSON body; GET sends its fields as query
parameters. Up to 3 attempts (network error or non-2xx, 5 s timeout), 1 s then 2 s apart;
the events of one request go out in order. Each delivery is recorded in the state's
``notifications_sent``; ``notification_duplicates: true`` (once fault config) sends each
twice.

Limits: none documented (providers.md §6); ``rate_limit_rps`` is 0 unless a fault config
sets it. Injected errors use the sandbox's ``{"error": "<reason phrase>"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from .emulator import Context, Emulator
from .faults import Setting
from .fetch import FetchFailed, download
from .media import is_video_container
from .notify import Delivery, post_json
from .web import BLOCK_SIZE, HttpError, Request, Response, Route, json_response, route

log = logging.getLogger(__name__)

# One copy of Once's published schema serves both sides: the fleet checks intents against it,
# the emulator checks requests (with the leniencies above).
SCHEMA: dict[str, Any] = json.loads(resources.files("tasks.providers").joinpath("once_schema.json").read_text())
STAGING_BUCKET = "once-staging"
STAGING_KEY_ID, STAGING_SECRET = "SANDBOXONCESTAGING01", "sandbox-once-staging-secret"
DEFAULT_DOMAIN = "b207b479-c841-4095-8918-978be9e18dee"  # the seed's example ids
DEFAULT_CATALOG = "bc6cb7d4-be99-471b-adf3-7c501172b317"
API_KEY_HEADER = "X-BC-ONCE-API-KEY"
PAGE_SIZE = 20
DETAIL_FIELDS = ("keywords", "cuePoints", "publicationRules", "metadata")  # Get Media Item's extra fields
FETCH_ATTEMPTS = 3
FETCH_RETRY_DELAY = 0.25  # seconds times the attempt number; short so tests stay fast
FETCH_TIMEOUT = 30.0
WORKERS = 8
NOTIFY_TIMEOUT = 5.0
NOTIFY_BACKOFF = (1.0, 2.0)
EVENTS = ("ingest", "transcode", "publish", "error")
ENUM_ALIASES = {"uk": "gb"}  # the seed's example says "UK"; ISO 3166 says GB
# Emoji and pictographs, regional indicators, dingbats/symbols, variation selector 16, ZWJ, tags.
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F\u200D\U000E0020-\U000E007F]")
_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


@dataclass
class Version:
    number: int
    request_id: str
    source_url: str
    status: str = "processing"  # processing, published, error
    error: str | None = None
    sha256: str | None = None


@dataclass
class MediaItem:
    id: str
    foreign_key: str
    title: str | None
    created: str
    updated: str
    versions: list[Version] = field(default_factory=list)
    published_version: int = 0
    source_sha256: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # keywords, cuePoints, ... as last ingested

    @property
    def draft(self) -> Version:
        return self.versions[-1]

    @property
    def status(self) -> str:
        return self.draft.status


@dataclass
class Job:
    """One accepted ingest request: a version of an item on its way."""

    request_id: str
    item: MediaItem
    version: Version
    notifications: list[dict[str, str]]
    source: Path | None = None
    outbox: deque = field(default_factory=deque)  # events to send, in order
    sending: bool = False


class OnceEmulator(Emulator):
    """Brightcove Once: ingest jobs validated against the seed's schema, media items, notifications."""

    name = "once"
    options: ClassVar[dict[str, tuple[Any, str]]] = {
        "api_key": ("sandbox-once-key", "API key accepted in the X-BC-ONCE-API-KEY header"),
        "domain_id": (DEFAULT_DOMAIN, "the domain GUID of the ingest and media-management paths"),
        "catalog_id": (DEFAULT_CATALOG, "the catalog GUID of the ingest and media-management paths"),
    }
    stages = ("once.processing",)
    settings: ClassVar[dict[str, Setting]] = {"notification_duplicates": Setting(False, bool)}

    def __init__(self, ctx: Context, *, api_key: str = "sandbox-once-key", domain_id: str = DEFAULT_DOMAIN,
                 catalog_id: str = DEFAULT_CATALOG):
        super().__init__(ctx)
        self.api_key = api_key
        self.domain_id = domain_id
        self.catalog_id = catalog_id
        self._base = f"http://{ctx.address}"
        self._items: dict[str, MediaItem] = {}  # by foreignKey, creation order
        self._jobs: dict[str, Job] = {}
        self._requests: list[dict[str, Any]] = []
        self._notifications_sent: list[dict[str, Any]] = []
        self._fetches = self.pool("fetch", WORKERS)
        self._deliveries = self.pool("notify", WORKERS)
        ctx.s3.add_bucket(STAGING_BUCKET)

    # -- Emulator ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        p = self.name
        return [
            route("POST", r"/ingest-api/(?P<domain>[^/]+)/catalogs/(?P<catalog>[^/]+)/?", "once.ingest",
                  self._ingest, provider=p),
            route("GET", r"/media-management-api/domains/(?P<domain>[^/]+)/catalogs/(?P<catalog>[^/]+)/mediaItems/?",
                  "once.media_items", self._media_items, provider=p),
            route("GET", r"/media-management-api/domains/(?P<domain>[^/]+)/catalogs/(?P<catalog>[^/]+)"
                         r"/mediaItems/(?P<item>[^/]+)/?", "once.media_item", self._media_item, provider=p),
        ]

    def env(self, base_url: str) -> dict[str, str]:
        return {
            "INGEST_ONCE_API_KEY": self.api_key,
            "INGEST_ONCE_DOMAIN_ID": self.domain_id,
            "INGEST_ONCE_CATALOG_ID": self.catalog_id,
            "INGEST_ONCE_BASE_URL": base_url,
            "INGEST_ONCE_STAGING_BUCKET": STAGING_BUCKET,
            # The sandbox's S3 accepts any key pair, but the fleet needs one to sign with.
            "INGEST_ONCE_STAGING_ACCESS_KEY_ID": STAGING_KEY_ID,
            "INGEST_ONCE_STAGING_SECRET_ACCESS_KEY": STAGING_SECRET,
            "INGEST_ONCE_S3_ENDPOINT": self.ctx.s3.url,
        }

    def state(self) -> dict[str, Any]:
        """``items`` (with every version), ``requests`` (valid or not) and ``notifications_sent``."""
        with self._lock:
            return {
                "items": [{**self._item_json(i), "status": i.status, "error": i.draft.error,
                           "sourceSha256": i.source_sha256, "created": i.created, "updated": i.updated,
                           "versions": [{"version": v.number, "requestId": v.request_id, "sourceURL": v.source_url,
                                         "status": v.status, "error": v.error, "sourceSha256": v.sha256}
                                        for v in i.versions]} for i in self._items.values()],
                "requests": [dict(r) for r in self._requests],
                "notifications_sent": [dict(n) for n in self._notifications_sent],
            }

    def clear(self) -> None:
        # The staging bucket comes back with the S3 reset (a standing bucket of the S3 server).
        for job in self._jobs.values():
            if job.source is not None:
                job.source.unlink(missing_ok=True)
        self._items.clear()
        self._jobs.clear()
        self._requests.clear()
        self._notifications_sent.clear()

    # -- API handlers --------------------------------------------------------------

    def _authorize(self, req: Request) -> None:
        key = req.header(API_KEY_HEADER) or ""
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise HttpError(401, {"error": "Unauthorized"})
        if req.params["domain"].lower() != self.domain_id.lower() \
                or req.params["catalog"].lower() != self.catalog_id.lower():
            raise HttpError(404, {"error": "Not Found"})

    def _ingest(self, req: Request) -> Response:
        self._authorize(req)
        request_id = str(uuid.uuid4())
        try:
            body = req.json()
        except HttpError as exc:
            errors = {"body": ["Request body too large" if exc.status == 413 else "Request body is not valid JSON"]}
            return self._rejected(request_id, None, errors, exc.status)
        errors = validate(body)
        foreign_key = body.get("foreignKey") if isinstance(body, dict) else None
        foreign_key = foreign_key if isinstance(foreign_key, str) else None
        if errors:
            return self._rejected(request_id, foreign_key, errors)
        assert foreign_key is not None
        now = _now()
        notifications = [{"target": n["target"], "notificationType": n.get("notificationType", "publish").lower(),
                          "method": n.get("method", "POST").upper()} for n in body.get("notifications", [])]
        with self._lock:
            item = self._items.get(foreign_key)
            if item is None:
                item = self._items[foreign_key] = MediaItem(id=str(uuid.uuid4()), foreign_key=foreign_key,
                                                            title=body.get("title"), created=now, updated=now)
            elif "title" in body:
                item.title = body["title"]
            item.details.update({k: body[k] for k in DETAIL_FIELDS if k in body})
            version = Version(len(item.versions) + 1, request_id, body["media"]["sourceURL"])
            item.versions.append(version)
            item.updated = now
            job = self._jobs[request_id] = Job(request_id, item, version, notifications)
            self._requests.append({"t": time.time(), "requestId": request_id, "foreignKey": foreign_key,
                                   "valid": True, "fieldErrors": {}, "mediaItemId": item.id,
                                   "version": version.number})
        req.entity = foreign_key
        self._after(0.1, self._start, job)
        return json_response({"requestId": request_id})

    def _rejected(self, request_id: str, foreign_key: str | None, errors: dict[str, list[str]],
                  status: int = 400) -> Response:
        with self._lock:
            self._requests.append({"t": time.time(), "requestId": request_id, "foreignKey": foreign_key,
                                   "valid": False, "fieldErrors": errors})
        return json_response({"requestId": request_id, "error": "Validation Errors", "fieldErrors": errors}, status)

    def _media_items(self, req: Request) -> Response:
        self._authorize(req)
        raw_page = req.arg("page") or "1"
        if not raw_page.isdigit() or int(raw_page) < 1:
            raise HttpError(400, {"error": "page must be an integer >= 1"})  # assumed
        page = int(raw_page)
        with self._lock:
            items = list(self._items.values())
            rows = [self._item_json(i) for i in items[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]]
        total = len(items)
        path = f"{self._base}{urlsplit(req.path).path}"
        last = max(1, -(-total // PAGE_SIZE))
        return json_response({
            "results": rows,
            "prev": f"{path}?page={min(page - 1, last)}" if page > 1 else None,
            "next": f"{path}?page={page + 1}" if page * PAGE_SIZE < total else None,
            "totalResults": total,
        })

    def _media_item(self, req: Request) -> Response:
        self._authorize(req)
        with self._lock:
            item = next((i for i in self._items.values() if i.id == req.params["item"].lower()), None)
            if item is None:
                raise HttpError(404, {"error": "Not Found"})
            req.entity = item.foreign_key
            return json_response({**self._item_json(item), **item.details})

    def _item_json(self, item: MediaItem) -> dict[str, Any]:
        """An item as the collection lists it; caller holds the lock."""
        return {"id": item.id, "catalogId": self.catalog_id, "domainId": self.domain_id, "isAd": False,
                "foreignKey": item.foreign_key, "title": item.title, "draftVersion": item.draft.number,
                "publishedVersion": item.published_version}

    # -- processing ----------------------------------------------------------------

    def _after(self, fraction: float, step: Any, job: Job) -> None:
        seconds = self.ctx.processing_seconds()
        if seconds > 0:
            self.ctx.scheduler.call_later(fraction * seconds, step, job)
        else:
            step(job)

    def _alive(self, job: Job) -> bool:
        with self._lock:
            return self._jobs.get(job.request_id) is job and not self.ctx.stopping.is_set()

    def _start(self, job: Job) -> None:
        if self._alive(job):
            self._fetches.submit(self._fetch_step, job)

    def _fetch_step(self, job: Job) -> None:
        path = self.ctx.data_dir / "sources" / job.request_id
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            sha256 = self._fetch(job, job.version.source_url, path)
        except FetchFailed as exc:
            path.unlink(missing_ok=True)
            log.info("once: could not fetch %s: %s", job.version.source_url, exc)
            self._fail(job, f"Could not fetch the source: {exc}")
            return
        with open(path, "rb") as f:
            head = f.read(12)
        with self._lock:
            if not self._alive(job):
                path.unlink(missing_ok=True)
                return
            job.source = path
            job.version.sha256 = sha256
            if job.item.draft is job.version:
                job.item.source_sha256 = sha256
        if not is_video_container(head):
            self._fail(job, "The source is not a video")
            return
        self._event(job, "ingest")
        self._after(0.5, self._transcode_step, job)

    def _transcode_step(self, job: Job) -> None:
        """Transcoding: the ``once.processing`` stage."""
        if not self._alive(job):
            return
        if self.ctx.stage_fails("once.processing"):
            self._fail(job, "Transcoding failed")
            return
        self._event(job, "transcode")
        self._after(0.4, self._publish_step, job)

    def _publish_step(self, job: Job) -> None:
        with self._lock:
            if not self._alive(job):
                return
            job.version.status = "published"
            item = job.item
            if job.version.number > item.published_version:
                item.published_version = job.version.number
            item.updated = _now()
            self._drop_source(job)
        self._event(job, "publish")

    def _fail(self, job: Job, message: str) -> None:
        with self._lock:
            if not self._alive(job):
                return
            job.version.status, job.version.error = "error", message
            job.item.updated = _now()
            self._drop_source(job)
        self._event(job, "error", message)

    def _drop_source(self, job: Job) -> None:
        """The emulator keeps hashes, not bytes, once a version is done; caller holds the lock."""
        if job.source is not None:
            job.source.unlink(missing_ok=True)
            job.source = None

    def _fetch(self, job: Job, url: str, path: Path) -> str:
        """Source to ``path``; returns its sha256."""
        if url.startswith("s3://"):
            bucket, _, key = url.removeprefix("s3://").partition("/")
            return self._fetch_s3(bucket, key, path)
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise FetchFailed(f"unsupported URL scheme in {url!r}")
        attempt = 1
        while True:
            try:
                return self._download(job, url, path)
            except FetchFailed:
                if attempt == FETCH_ATTEMPTS or not self._alive(job) \
                        or self.ctx.stopping.wait(FETCH_RETRY_DELAY * attempt):
                    raise
            attempt += 1

    def _fetch_s3(self, bucket: str, key: str, path: Path) -> str:
        # Straight from moto, as Brightcove's emulator reads S3 sources: neither logged nor faulted.
        digest = hashlib.sha256()
        try:
            body = self.ctx.s3._client.get_object(Bucket=bucket, Key=key)["Body"]
            with body, open(path, "wb") as f:
                for block in body.iter_chunks(BLOCK_SIZE):
                    digest.update(block)
                    f.write(block)
        except ClientError as exc:
            raise FetchFailed(f"s3://{bucket}/{key}: {exc.response['Error'].get('Code')}") from None
        except (BotoCoreError, OSError) as exc:
            raise FetchFailed(str(exc)) from None
        return digest.hexdigest()

    def _download(self, job: Job, url: str, path: Path) -> str:
        digest = hashlib.sha256()
        download(url, path, timeout=FETCH_TIMEOUT, alive=lambda: self._alive(job), stopping=self.ctx.stopping,
                 on_block=digest.update)
        return digest.hexdigest()

    # -- notifications -------------------------------------------------------------

    def _event(self, job: Job, event: str, message: str | None = None) -> None:
        """Queue ``event`` for every notification of the job that selects it; sent in order."""
        with self._lock:
            if not self._alive(job):
                return
            payload: dict[str, Any] = {"requestId": job.request_id, "foreignKey": job.item.foreign_key,
                                       "mediaItemId": job.item.id, "version": job.version.number, "event": event,
                                       "status": "error" if event == "error" else "success"}
            if message is not None:
                payload["message"] = message
            payload["timestamp"] = _now()
            copies = 2 if self.ctx.setting("notification_duplicates") else 1
            for n in job.notifications:
                kind = n["notificationType"]
                if kind == event or kind == "any" or (kind == "update" and event == "publish"
                                                      and job.version.number > 1):
                    job.outbox.extend([(n, payload)] * copies)
            if not job.outbox or job.sending:
                return
            job.sending = True
        self._deliveries.submit(self._drain, job)

    def _drain(self, job: Job) -> None:
        while True:
            with self._lock:
                if not job.outbox or self.ctx.stopping.is_set():
                    job.sending = False
                    return
                notification, payload = job.outbox.popleft()
            sent = _send(notification["target"], notification["method"], payload, self.ctx.stopping)
            if sent is None:
                continue
            with self._lock:
                if self._jobs.get(job.request_id) is not job:
                    continue  # reset meanwhile: not this state's delivery
                self._notifications_sent.append({
                    "t": time.time(), "requestId": job.request_id, "foreignKey": job.item.foreign_key,
                    "target": notification["target"], "method": notification["method"],
                    "notificationType": notification["notificationType"], "event": payload["event"],
                    "payload": payload, "status": sent.status, "attempts": sent.attempts, "error": sent.error})


def _send(url: str, method: str, payload: dict[str, Any], stopping: threading.Event) -> Delivery | None:
    """POST through :func:`sandbox.notify.post_json`; PUT (JSON body) and GET (query) the same way."""
    if method == "POST":
        return post_json(url, payload, timeout=NOTIFY_TIMEOUT, backoff=NOTIFY_BACKOFF, stopping=stopping)
    if method == "GET":
        query = urlencode({k: v for k, v in payload.items() if v is not None})
        url, data, headers = f"{url}{'&' if urlsplit(url).query else '?'}{query}", None, {}
    else:
        data, headers = json.dumps(payload).encode(), {"Content-Type": "application/json"}
    status: int | None = None
    error: str | None = None
    attempts = 0
    for delay in (0.0, *NOTIFY_BACKOFF):
        if delay and stopping.wait(delay):
            return None
        attempts += 1
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method, headers=headers),
                                        timeout=NOTIFY_TIMEOUT) as resp:
                status, error = resp.status, None
        except urllib.error.HTTPError as exc:
            exc.close()
            status, error = exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            status, error = None, str(getattr(exc, "reason", exc)) or type(exc).__name__
        if error is None:
            break
    return Delivery(status, error, attempts)


# -- validation ------------------------------------------------------------------------


def validate(body: Any) -> dict[str, list[str]]:
    """``{dotted path: [messages]}`` of everything wrong with an ingest body; empty when valid."""
    errors: dict[str, list[str]] = {}
    _check(body, SCHEMA, "", errors)
    if isinstance(body, dict):
        for name in ("title", "description"):
            if isinstance(body.get(name), str) and EMOJI.search(body[name]):
                errors.setdefault(name, []).append(f"{name} must not contain emojis")
        rules = body.get("publicationRules")
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(rule, dict) and _TYPES["integer"](rule.get("startDate")) \
                    and _TYPES["integer"](rule.get("endDate")) and rule["endDate"] < rule["startDate"]:
                errors.setdefault(f"publicationRules[{i}].endDate", []).append(
                    f"Publication rule end date: {rule['endDate']} precedes {rule['startDate']}")
    return errors


def _check(value: Any, schema: dict[str, Any], path: str, errors: dict[str, list[str]]) -> None:
    """Draft-04 subset the seed's schema uses; see the module docstring for its readings."""
    where = path or "body"

    def fail(message: str) -> None:
        errors.setdefault(where, []).append(message)

    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](value):
        fail(f"{path or 'body'} must be of type {kind}")
        return
    if "enum" in schema:
        allowed = {_enum_key(e) for e in schema["enum"]}
        if _enum_key(value) not in allowed:
            fail(f"{value!r} is not one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            fail(f"must be at least {schema['minLength']} characters long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            fail(f"must be at most {schema['maxLength']} characters long")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            fail(f"must be >= {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            fail(f"must be <= {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            fail(f"must have at least {schema['minItems']} item(s)")
        if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            fail("items must be unique")
        items = schema.get("items")
        if isinstance(items, list):  # the tuple form with one schema: read as "every item"
            items = items[0] if len(items) == 1 else None
        if isinstance(items, dict):
            for i, element in enumerate(value):
                _check(element, items, f"{path}[{i}]", errors)
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.setdefault(_join(path, name), []).append(f"{name} is required")
        for name, element in value.items():
            if name in properties:
                _check(element, properties[name], _join(path, name), errors)
            elif schema.get("additionalProperties", True) is False:
                errors.setdefault(_join(path, name), []).append(f"{name} is not an allowed property")


def _enum_key(value: Any) -> Any:
    if isinstance(value, str):
        folded = value.casefold()
        return ENUM_ALIASES.get(folded, folded)
    return json.dumps(value, sort_keys=True)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
