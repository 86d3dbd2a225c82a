"""Gcore Streaming (VOD): create video -> TUS upload, or create with ``origin_url`` (pull).

Contract: shared/design/providers.md §5 and the seed ``gcore-upload-video-via-api.md``.

* create: ``POST /streaming/videos {"video": {name, description, client_user_id, origin_url?}}``.
  Gcore has no idempotency key, so ``client_user_id`` carries a number derived from the
  job id and the step first looks it up (``GET /streaming/videos?client_user_id=``): a crash
  between "create" and its checkpoint never leaves two videos.
* target: ``GET /streaming/videos/{id}/upload`` -> servers + a token valid 4 h, used only to
  open the TUS session (metadata filename, filetype, token, video_id, client_id). The token
  is used right here and stored nowhere; the session URL alone is checkpointed.
* upload: TUS PATCHes of ``INGEST_TUS_CHUNK_SIZE`` (default 10,000,000) bytes, resumed with HEAD.
* submit: none - the upload's completion, or ``origin_url``, starts processing (step skipped).
* await: ``GET /streaming/videos/{id}``: ``ready`` is done; ``viewable`` is progress;
  ``error``, or ``empty`` with an ``error`` text, is failure with that text.
"""

from __future__ import annotations

import mimetypes
import os

from tasks.errors import PermanentError, TransientError
from tasks.intent import IntentError, ValidatedIntent
from tasks.jobstore import Job
from tasks.providers.base import Adapter, Status, StepContext
from tasks.transfer.tus import TusUpload, create_session
from workers.config import AccountConfig
from workers.logging import register_secret


def natural_key(job_id: str) -> int:
    """A stable 52-bit number for ``client_user_id`` (an int field at Gcore)."""
    return int(job_id[:13], 16)


def _one(body: object) -> dict:
    """The create answer is one video in the docs and a list in the OpenAPI types."""
    if isinstance(body, list):
        if not body:
            raise TransientError("create video answered an empty list")
        body = body[0]
    if not isinstance(body, dict) or "id" not in body:
        raise TransientError("create video answered without an id")
    return body


class GcoreAdapter(Adapter):
    name = "gcore"
    pull_schemes = frozenset({"http", "https", "sftp"})

    def auth_headers(self, account: AccountConfig) -> dict[str, str]:
        return {"Authorization": f"APIKey {account.secret}"}

    def validate(self, intent: ValidatedIntent) -> None:
        if len(intent.description) > 4000:
            raise IntentError("description", "Gcore accepts at most 4000 characters")

    def needs(self, step: str, job: Job) -> bool:
        # Gcore has no "submit" call: the upload's completion (or origin_url) starts processing.
        return step != "submit" and super().needs(step, job)

    def slot_step(self, job: Job) -> str:
        # A pull starts at the provider with "create"; a push with the upload that completes it.
        return "create" if job.mode == "pull" else "upload"

    def cancel(self, ctx: StepContext) -> None:
        url = ctx.job.upload.get("url")
        if url and ctx.job.bytes_done < (ctx.job.bytes_total or 0):
            ctx.http("upload").request("DELETE", url, headers={"Tus-Resumable": "1.0.0"}, allow=(404, 410))
            ctx.job.note("upload.terminated")

    # -- create ----------------------------------------------------------------------
    def create_entity(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.provider_ids.get("video_id"):
            return
        api, base = ctx.http("api"), ctx.account.base_url
        key = natural_key(job.id)
        found = api.request("GET", f"{base}/streaming/videos", params={"client_user_id": key, "per_page": 2}).json()
        if isinstance(found, list) and found:
            video = found[0]
            job.note("entity.found", video_id=video["id"])
        else:
            body = {"name": job.title, "description": job.description, "client_user_id": key}
            if job.mode == "pull":
                body["origin_url"] = job.source
            video = _one(api.request("POST", f"{base}/streaming/videos", json={"video": body}).json())
            job.note("entity.created", video_id=video["id"])
        job.provider_ids["video_id"] = video["id"]
        if video.get("client_id") is not None:
            job.provider_ids["client_id"] = video["client_id"]

    # -- target ----------------------------------------------------------------------
    def obtain_upload_target(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.upload.get("url"):
            return
        vid = job.provider_ids["video_id"]
        params = ctx.http("api").request("GET", f"{ctx.account.base_url}/streaming/videos/{vid}/upload",
                                         entity=f"video:{vid}").json()
        servers = [s for s in params.get("servers", []) if s.get("active", True) and s.get("role", "upload") == "upload"]
        if not servers or not params.get("token"):
            raise TransientError("upload parameters had no active upload server or no token")
        server = servers[0]
        token = params["token"]
        register_secret(token)
        client_id = (params.get("video") or {}).get("client_id", job.provider_ids.get("client_id"))
        endpoint = f"{'https' if server.get('ssl', True) else 'http'}://{server['hostname']}/upload/"
        metadata = {
            "filename": os.path.basename(job.source),
            "filetype": mimetypes.guess_type(job.source)[0] or "video/mp4",
            "token": token,
            "video_id": str(vid),
            "client_id": str(client_id if client_id is not None else ""),
        }
        with open(job.source, "rb") as f:
            url = create_session(ctx.http("upload"), endpoint, f, metadata)
        job.upload = {"protocol": "tus", "url": url, "offset": 0, "chunk_size": ctx.settings.tus_chunk_size}
        job.note("upload.session", server=server["hostname"])

    # -- upload ----------------------------------------------------------------------
    def upload_slice(self, ctx: StepContext) -> bool:
        job = ctx.job
        with open(job.source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if job.bytes_total is not None and size != job.bytes_total:
                raise PermanentError(f"source changed since submit: {size} bytes, expected {job.bytes_total}")
            up = TusUpload(ctx.http("upload"), job.upload["url"], f, chunk_size=int(job.upload["chunk_size"]))
            job.bytes_done = job.upload["offset"] = up.offset
            while not up.done and ctx.time_left() > 0:
                if up.send_chunk():
                    job.bytes_done = job.upload["offset"] = up.offset
                    job.attempts.pop("upload", None)  # progress renews the step's retry budget
                    ctx.checkpoint()
            return up.done

    # -- await -----------------------------------------------------------------------
    def poll_status(self, ctx: StepContext) -> Status:
        vid = ctx.job.provider_ids["video_id"]
        video = ctx.http("api").request("GET", f"{ctx.account.base_url}/streaming/videos/{vid}",
                                        entity=f"video:{vid}").json()
        state, error = video.get("status", ""), (video.get("error") or "").strip()
        if state == "ready":
            return Status("ready", 100, provider_state=state)
        if state == "error" or (state == "empty" and error):
            return Status("failed", message=error or "Gcore reported an error", provider_state=state)
        renditions = [c.get("progress") or 0 for c in video.get("converted_videos") or []]
        progress = int(sum(renditions) / len(renditions)) if renditions else None
        return Status("processing", progress, provider_state=state)
