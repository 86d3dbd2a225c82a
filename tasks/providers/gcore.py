"""Gcore Streaming (VOD): create video -> TUS upload, or create with ``origin_url`` (pull).

Contract: docs/providers/gcore.md (every call, field and its public source), the seed
``gcore-upload-video-via-api.md`` and G-Core/gcore-python (generated from Gcore's OpenAPI).

* create: ``POST /streaming/videos {"video": {name, description, client_user_id, priority,
  origin_url?, origin_http_headers?}}``. Gcore has no idempotency key: ``client_user_id``
  carries a 31-bit marker of the job (fits any signed 32-bit field) and the description ends
  with the job's full id (:func:`job_tag`). The step first lists
  ``GET /streaming/videos?client_user_id=<marker>`` and adopts only a video whose description
  ends with this job's tag, so a crash between "create" and its checkpoint never leaves two
  videos, and a marker shared with another job's video is never adopted.
  Intent priority low/normal/high -> Gcore ``priority`` -5/0/5. Option
  ``origin_http_headers`` ("Authorization: ..."), for pulls from an authenticated origin, is a
  secret: masked in logs, removed from the job record once the video exists.
* target: ``GET /streaming/videos/{id}/upload`` -> servers + a token valid 4 h, used only to
  open the TUS session (metadata filename, filetype, token, video_id, client_id). The token
  is used right here and stored nowhere; the session URL alone is checkpointed. ``client_id``
  is the account's: the answer's ``video.client_id``, else ``INGEST_GCORE_CLIENT_ID``, never
  empty; Gcore's 500 "token client ... does not match this client" fails the job at once,
  naming that variable.
* upload: TUS PATCHes of ``INGEST_TUS_CHUNK_SIZE`` (default 10,000,000) bytes, resumed with HEAD.
  423 Locked (another connection, e.g. a paused worker's PATCH, holds the upload) defers the
  step without spending an attempt; after ``INGEST_GCORE_LOCK_WAIT`` seconds (default 600) of
  lock it counts one failed attempt.
* submit: none - the upload's completion, or ``origin_url``, starts processing (step skipped).
* await: ``GET /streaming/videos/{id}``: ``ready`` is done; ``viewable`` is progress;
  ``error``, or ``empty`` with an ``error`` text, is failure with that text.

Settings: ``INGEST_GCORE_API_KEY`` (required), ``INGEST_GCORE_CLIENT_ID`` (the account's client
id; needed only if Gcore's answers leave ``client_id`` out), ``INGEST_GCORE_LOCK_WAIT``.
"""

from __future__ import annotations

import mimetypes
import os
from typing import Any, ClassVar

import requests

from tasks.config import AccountConfig
from tasks.declare import Setting, budget
from tasks.errors import PermanentError, TransientError
from tasks.http import default_error_text
from tasks.intent import IntentError, ValidatedIntent
from tasks.jobstore import Job
from tasks.logs import register_secret
from tasks.providers.base import Adapter, Status, StepContext
from tasks.retry import Outcome
from tasks.transfer.tus import TusUpload, UploadLocked, create_session, offered_checksum

#: Largest ``client_user_id`` the fleet sends: the SDK types the field ``int`` with no width,
#: so the marker is kept to 31 bits, which any signed 32-bit column holds.
MARKER_BITS = 31
LOOKUP_PAGES = 5  # at most 5 x 100 videos share one marker before the lookup gives up
#: Intent priority -> Gcore ``priority`` (-10..10, default 0; SDK ``create_video_param.py``).
PRIORITY = {"low": -5, "normal": 0, "high": 5}
CLIENT_MISMATCH = "does not match this client"
CLIENT_ID_HINT = ("the TUS client_id must be the account's client id (Video.client_id); "
                  "set INGEST_GCORE_CLIENT_ID to it")


def marker(job_id: str) -> int:
    """A stable 31-bit number for ``client_user_id``, derived from the job id (which is
    random hex). Not unique: :func:`job_tag` in the description decides what is ours."""
    return int(job_id[:8], 16) & ((1 << MARKER_BITS) - 1)


def job_tag(job_id: str) -> str:
    """The job's full id as the last line of the video's description, which Gcore documents
    as "not visible to the end-users" (unlike ``name``, which players show)."""
    return f"[ingest-fleet job {job_id}]"


def _description(job: Job) -> str:
    return f"{job.description}\n{job_tag(job.id)}" if job.description else job_tag(job.id)


def _one(body: object) -> dict[str, Any]:
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
    title = "Gcore Streaming"
    account_settings = (
        Setting("API_KEY", secret=True, example="<gcore-api-key>"),
        Setting("BASE_URL", "https://api.gcore.com"),
        Setting("CLIENT_ID", help="Only where Gcore's answers leave the video's client_id out (the TUS upload "
                                  "needs it)."),
        # A paused worker's PATCH holds the upload until a timeout ends it.
        Setting("LOCK_WAIT", "600", float, help="A TUS upload locked by another connection (423) is waited for "
                                                "this long before it counts as a failed attempt (s)."),
        # About 4 req/s (a third-party figure; Gcore's own page is not public).
        *budget(rate=4),
    )
    pull_schemes = frozenset({"http", "https", "sftp"})
    #: ``origin_http_headers``: "Authorization: <type> <credentials>" sent by Gcore with its
    #: pull of ``origin_url`` (SDK ``create_video_param.py``). A secret: masked in logs and
    #: dropped from the job record once the video exists.
    intent_options: ClassVar[dict[str, type]] = {"origin_http_headers": str}

    def classify(self, resp: requests.Response) -> Outcome | None:
        # TUS 500 "token client (A) does not match this client (B)": configuration, not luck.
        if resp.status_code == 500 and CLIENT_MISMATCH in (resp.text or ""):
            return Outcome.PERMANENT
        return None

    def error_text(self, resp: requests.Response) -> str:
        text = default_error_text(resp)
        return f"{text} - {CLIENT_ID_HINT}" if CLIENT_MISMATCH in text else text

    def auth_headers(self, account: AccountConfig) -> dict[str, str]:
        return {"Authorization": f"APIKey {account.secret}"}

    def validate(self, intent: ValidatedIntent) -> None:
        room = 4000 - len(job_tag("0" * 32)) - 1  # the job tag shares the description
        if len(intent.description) > room:
            raise IntentError("description", f"Gcore accepts at most 4000 characters, {room} with the job tag")
        headers = intent.options.get("origin_http_headers")
        if headers is not None:
            name, _, value = headers.partition(":")
            if name.strip().lower() != "authorization" or not value.strip() or "\n" in headers or "\r" in headers:
                raise IntentError("options.origin_http_headers", 'must be one line "Authorization: <type> <credentials>"')
            if intent.mode != "pull":
                raise IntentError("options.origin_http_headers", "applies only to a pull (a URL source)")

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
        api, base, ids = ctx.http("api"), ctx.account.base_url, job.provider_ids
        video = None
        # Look for a video of this job once, and again only if a POST may have gone out since:
        # a create deferred by the budget comes back to its POST, not to another lookup that
        # would spend the token it waited for (issue 11).
        if not ids.get("create_looked_up") or ids.get("create_requested_at"):
            video = self._find_own_video(ctx)
            ids["create_looked_up"] = True
        if video is not None:
            job.note("entity.found", video_id=video["id"])
        else:
            body = {"name": job.title, "description": _description(job), "client_user_id": marker(job.id),
                    "priority": PRIORITY.get(job.priority, 0)}
            if job.mode == "pull":
                body["origin_url"] = ctx.source_url()
                headers = job.options.get("origin_http_headers")
                if headers:
                    register_secret(headers)
                    register_secret(headers.partition(":")[2].strip())
                    body["origin_http_headers"] = headers
            video = _one(api.request("POST", f"{base}/streaming/videos", json={"video": body},
                                     on_send=ctx.sending("create_requested_at")).json())
            job.note("entity.created", video_id=video["id"])
        job.provider_ids["video_id"] = video["id"]
        if job.options.pop("origin_http_headers", None):
            job.note("options.origin_http_headers_removed")  # Gcore has it; the record need not
        if video.get("client_id") is not None:
            job.provider_ids["client_id"] = video["client_id"]

    def _find_own_video(self, ctx: StepContext) -> dict[str, Any] | None:
        """The video a crashed run of this step may have created: listed by the marker, and
        adopted only if its description ends with this job's tag (another job's video may
        share the 31-bit marker). Any other answer is noted and treated as "none"."""
        job, api = ctx.job, ctx.http("api")
        tag, strangers = job_tag(job.id), 0
        for page in range(1, LOOKUP_PAGES + 1):
            found = api.request("GET", f"{ctx.account.base_url}/streaming/videos",
                                params={"client_user_id": marker(job.id), "page": page, "per_page": 100}).json()
            if not isinstance(found, list):
                job.note("entity.lookup_unexpected", answer=type(found).__name__)
                return None
            for video in found:
                if isinstance(video, dict) and "id" in video and str(video.get("description") or "").endswith(tag):
                    return video
            strangers += len(found)
            if len(found) < 100:
                break
        if strangers:
            job.note("entity.marker_collision", marker=marker(job.id), others=strangers)
        return None

    # -- target ----------------------------------------------------------------------
    def probe(self, ctx: StepContext) -> str:
        ctx.http("api").request("GET", f"{ctx.account.base_url}/streaming/videos", params={"page": 1})
        return "listed the account's videos"

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
        client_id = self._client_id(ctx, params)
        endpoint = f"{'https' if server.get('ssl', True) else 'http'}://{server['hostname']}/upload/"
        metadata = {
            "filename": os.path.basename(job.source),
            "filetype": mimetypes.guess_type(job.source)[0] or "video/mp4",
            "token": token,
            "video_id": str(vid),
            "client_id": client_id,
        }
        checksum = offered_checksum(ctx.http("upload"), endpoint)
        with ctx.open_source() as f:
            url = create_session(ctx.http("upload"), endpoint, f, metadata)
        job.upload = {"protocol": "tus", "url": url, "offset": 0, "chunk_size": ctx.settings.tus_chunk_size,
                      "checksum": checksum}
        job.note("upload.session", server=server["hostname"], checksum=checksum)

    @staticmethod
    def _client_id(ctx: StepContext, params: dict[str, Any]) -> str:
        """The account's client id for the TUS metadata, never empty: the upload answer's
        ``video.client_id`` (the SDK's own example reads it there), else the create answer's,
        else INGEST_GCORE_CLIENT_ID."""
        raw = params.get("video")
        video: dict[str, Any] = raw if isinstance(raw, dict) else {}
        for value in (video.get("client_id"), ctx.job.provider_ids.get("client_id")):
            if value is not None and str(value).strip():
                return str(value).strip()
        configured = ctx.account.setting("CLIENT_ID").strip()
        if configured:
            ctx.job.note("upload.client_id_from_setting")
            return configured
        raise PermanentError("Gcore's answers carry no client_id for the TUS session; set INGEST_GCORE_CLIENT_ID "
                             "to the account's client id (shown as client_id on any video)", provider="gcore")

    # -- upload ----------------------------------------------------------------------
    def upload_slice(self, ctx: StepContext) -> bool:
        job = ctx.job
        with ctx.open_source() as f:  # the file submitted, unchanged (checked at every open)
            try:
                up = TusUpload(ctx.http("upload"), job.upload["url"], f, chunk_size=int(job.upload["chunk_size"]),
                               checksum=job.upload.get("checksum"))
                job.bytes_done = job.upload["offset"] = up.offset
                while not up.done and ctx.time_left() > 0:
                    if up.send_chunk():
                        job.bytes_done = job.upload["offset"] = up.offset
                        job.upload.pop("locked_since", None)
                        ctx.progress()
            except UploadLocked:
                self._wait_for_lock(ctx)
                raise
            job.upload.pop("locked_since", None)
            return up.done

    @staticmethod
    def _wait_for_lock(ctx: StepContext) -> None:
        """423: another connection holds the upload. A wait (Throttled, no attempt spent),
        until it has lasted INGEST_GCORE_LOCK_WAIT; then one failed attempt, and the wait restarts."""
        job = ctx.job
        if "locked_since" not in job.upload:
            job.upload["locked_since"] = ctx.now()
            job.note("upload.locked")
        limit = ctx.account.number("LOCK_WAIT")
        if ctx.now() - job.upload["locked_since"] > limit:
            job.upload.pop("locked_since", None)
            raise TransientError(f"upload locked by another connection for over {limit:g} s "
                                 "(INGEST_GCORE_LOCK_WAIT)", status=423, provider="gcore")

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
