"""Ingest.io videos: create, publish, list, count and get them.

``GET /videos`` (docs: pagination) filters by ``search`` (case-insensitive substring of the
title) and ``status`` (comma-separated: created, published, draft, processing, trashed,
error; **default draft,published** as the docs say, so a just-created video is listed only
with ``status=created``).

Videos carry their status upper-case, as the docs' ``"CREATED"``: ``CREATED`` ->
``PROCESSING`` (a job runs) -> ``DRAFT`` (encoded, with a playback URL under
``<sandbox>/ingestio-play/``, not served) or ``ERROR``; a ``DRAFT`` video becomes
``PUBLISHED`` through ``POST /videos/publish``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from ..web import Request, Response, json_response
from .api import _body, _count, _error, _json_body, _now, _string

VIDEO_STATUSES = ("created", "published", "draft", "processing", "trashed", "error")
DEFAULT_VIDEO_STATUSES = ("draft", "published")


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


class Videos:
    """The videos resource, mixed into the emulator (whose :meth:`clear` declares ``_videos``)."""

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
