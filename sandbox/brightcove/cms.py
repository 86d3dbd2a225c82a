"""Brightcove's CMS API: create and get videos, the account's video fields, a video's ingest jobs.

Videos are named by id or ``ref:<reference_id>``. The ``per_video_per_minute`` setting (0 =
off; Brightcove's is 10, B6) limits requests a rolling minute on one video's endpoints
(everything but OAuth and create), 429 ``TOO_MANY_REQUESTS`` with ``Retry-After``.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..web import Request, Response, json_response
from .api import _json_body, _now, bc_error

if TYPE_CHECKING:
    from .ingest import Job

ACCOUNT_PATH = r"/v1/accounts/(?P<account_id>[^/]+)"
VIDEO_PATH = ACCOUNT_PATH + r"/videos/(?P<video_id>[^/]+)"
#: CMS create-video fields (providers.md §1, B2); anything else is "Unrecognized".
VIDEO_FIELDS = ("name", "description", "long_description", "reference_id", "state", "tags", "custom_fields",
                "cue_points", "geo", "schedule", "economics", "drm_disabled")
#: The account's defined custom fields (``GET /video_fields``); the CMS refuses any other.
DEFAULT_CUSTOM_FIELDS = "team,subject=Reptiles|Mammals|Birds|Other"
MAX_CUSTOM_FIELDS = 10  # the reference example's max_custom_fields


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


class Cms:
    """The CMS calls, mixed into the emulator (whose ``__init__`` declares ``_videos`` and ``_by_reference``)."""

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


def _video_param(req: Request) -> str:
    return unquote(req.params["video_id"])


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
