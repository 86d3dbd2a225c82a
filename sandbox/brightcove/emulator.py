"""The Brightcove emulator: its options, settings and limits, its routes and its state.

Limits (B6). The brightcove fault config starts with ``rate_limit_rps`` 20 on every
endpoint but OAuth (20 requests a second per account across CMS and DI); set
``rate_limit_rps: 0`` to lift it. The per-video limit is the CMS's (:mod:`.cms`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..emulator import Context, Emulator
from ..faults import Setting
from ..media import file_sha256
from ..web import Route, route
from .api import _fault_error
from .cms import ACCOUNT_PATH, DEFAULT_CUSTOM_FIELDS, VIDEO_PATH, Cms, Video, _parse_custom_fields, _video_param
from .ingest import BUCKET, DynamicIngest, Job
from .notifications import Notifications
from .oauth import TOKEN_TTL, OAuth

#: Every endpoint but OAuth: what the 20 requests/s account limit counts (B6).
REST_ENDPOINTS = ("brightcove.create_video", "brightcove.video_fields", "brightcove.get_video", "brightcove.list_ingest_jobs",
                  "brightcove.get_ingest_job", "brightcove.upload_urls", "brightcove.ingest_request")
RATE_LIMIT_RPS = 20
WORKERS = 8  # concurrent source fetches, and concurrent callback deliveries


class BrightcoveEmulator(OAuth, Cms, DynamicIngest, Notifications, Emulator):
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
    settings: ClassVar[dict[str, Setting]] = {  # see the docstrings of .oauth, .cms, .notifications
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
        self._videos: dict[str, Video] = {}
        self._by_reference: dict[str, Video] = {}
        self._tokens: dict[str, float] = {}  # access token -> expiry (epoch seconds)
        # The secrets handed out, so tests can prove none leaks into logs or Redis.
        self._tokens_issued: list[str] = []
        self._credentials_issued: list[dict[str, str]] = []
        self._callbacks_sent: list[dict[str, Any]] = []
        self._fetches = self.pool("fetch", WORKERS)
        self._deliveries = self.pool("callback", WORKERS)
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

    def clear(self) -> None:
        """Forget every video, job, token and delivery (the sandbox resets S3 itself)."""
        self._videos.clear()
        self._by_reference.clear()
        self._tokens.clear()
        self._tokens_issued.clear()
        self._credentials_issued.clear()
        self._callbacks_sent.clear()

    # -- state rows ----------------------------------------------------------------

    def _video_row(self, v: Video) -> dict[str, Any]:
        return {"id": v.id, "name": v.fields["name"], "reference_id": v.reference_id, "state": v.fields["state"],
                "complete": v.complete, "duration": v.duration, "ingest_requests": v.ingest_requests,
                "custom_fields": dict(v.fields["custom_fields"]), "jobs": []}

    def _job_row(self, j: Job) -> dict[str, Any]:
        return {**j.to_json(self.account_id), "source_url": j.source_url, "source_size": j.source_size,
                "source_sha256": None, "profile": j.profile, "callbacks": list(j.callbacks)}
