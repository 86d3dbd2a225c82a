"""Ingest.io encoding: the network's default profile and the jobs that encode a video.

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
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..web import Request, Response, json_response
from .api import _body, _count, _error, _now, _string
from .auth import DEFAULT_NETWORK

JOB_IN_PROGRESS, JOB_COMPLETED, JOB_FAILED = 0, 1, 10
PROGRESS_STEPS = ((0.2, 10), (0.5, 50), (0.8, 90))  # (fraction of processing_seconds, progress)


def default_profile_id(network_id: str = DEFAULT_NETWORK) -> str:
    """The id of a network's default encoding profile: fixed per network, so a test can know it
    before the sandbox runs (``INGEST_INGESTIO_PROFILE``)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ingestio:{uuid.UUID(network_id)}:default-profile"))


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


class Encoding:
    """Profiles and jobs, mixed into the emulator (whose :meth:`clear` declares ``_jobs``)."""

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
