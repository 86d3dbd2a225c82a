"""Brightcove Video Cloud: OAuth, CMS video, Dynamic Ingest (S3 push or URL pull), ingest jobs.

Contract: shared/design/providers.md §1 and the seed ``brightcove-dynamic-ingest.md``.

* OAuth: client credentials at ``{OAUTH_URL}/v4/access_token`` (Basic auth). The token is
  shared by the whole fleet: cached in Redis until shortly before ``expires_in``, fetched by
  one worker at a time, and refreshed once when an API answers 401.
* create: CMS ``POST /v1/accounts/{a}/videos`` with ``reference_id`` = the job's idempotency
  key; 409 ``REFERENCE_ID_IN_USE`` means a crashed run created it: ``GET /videos/ref:{key}``.
* target (push): DI ``GET …/videos/{id}/upload-urls/{source_name}`` -> bucket, key, temporary
  credentials, ``signed_url``, ``api_request_url``. The credentials and the signed URL go to
  their own expiring Redis key (tasks.transfer.s3); the record keeps bucket, key and mode.
* upload: below ``SINGLE_PUT_MAX`` one streamed PUT to ``signed_url``; above it an S3
  multipart upload with the temporary credentials, resumable part by part.
* submit: DI ``POST …/ingest-requests`` with ``master.url`` = ``api_request_url`` (push) or the
  source URL (pull), ``profile``/``capture-images`` from configuration and ``callbacks`` to the
  fleet's webhook receiver. Brightcove forbids two jobs on one video: a re-run after a crash
  first looks at the video's ``ingest_jobs`` and adopts the live one.
* await: CMS ``GET …/videos/{id}/ingest_jobs/{job}``: processing -> publishing -> published ->
  finished, or failed with ``error_code``/``error_message``. Callbacks end the wait early.
* limits: 20 req/s per account across CMS and DI, <= 10 requests a minute on one video,
  200 concurrent jobs per account (the slot is taken at submit) - see workers.config.
"""

from __future__ import annotations

import mimetypes
import os
import re
import time
from typing import Any
from urllib.parse import quote

import requests

from tasks.errors import PermanentError, TransientError, UploadSessionLost
from tasks.intent import IntentError, ValidatedIntent
from tasks.providers.base import Adapter, Status, StepContext
from tasks.transfer import single_put_max
from tasks.transfer.s3 import (abort_multipart, forget_credentials, load_credentials, part_size_for, s3_client,
                               store_credentials, upload_multipart_slice)
from workers.logging import register_secret
from workers.webhooks import callback_url

DEFAULT_SINGLE_PUT_MAX = 100 * 1000 * 1000  # AWS advises multipart from ~100 MB
DEFAULT_PART_SIZE = 16 * 1024 * 1024
CREDENTIALS_TTL = 23 * 3600  # Brightcove's temporary credentials and URLs last 24 h
TOKEN_LOCK_SECONDS = 10
PROGRESS = {"processing": 10, "publishing": 50, "published": 90}


def _source_name(path: str) -> str:
    """The file name Brightcove accepts in upload-urls: no ``? & #`` or spaces."""
    name = re.sub(r"[?&#\s]+", "_", os.path.basename(path)) or "source"
    return name[:200]


class BrightcoveAdapter(Adapter):
    name = "brightcove"
    pull_schemes = frozenset({"http", "https", "s3"})

    # -- answers ---------------------------------------------------------------------
    def error_text(self, resp: requests.Response) -> str:
        """Brightcove errors are a JSON array of ``{"error_code", "message"}``."""
        try:
            body = resp.json()
        except ValueError:
            return (resp.text or resp.reason or "")[:300]
        if isinstance(body, list) and body and isinstance(body[0], dict):
            first = body[0]
            return ": ".join(str(v) for v in (first.get("error_code"), first.get("message")) if v)[:300]
        if isinstance(body, dict):  # OAuth: {"error", "error_description"}
            return ": ".join(str(v) for v in (body.get("error"), body.get("error_description")) if v)[:300]
        return str(body)[:300]

    def webhook_is_relevant(self, payload: Any) -> bool:
        # Rendition events arrive by the dozen; the job's end is the TITLE notification.
        return isinstance(payload, dict) and (payload.get("entityType") == "TITLE"
                                              or payload.get("status") == "FAILED")

    def validate(self, intent: ValidatedIntent) -> None:
        if len(intent.description) > 5000:
            raise IntentError("description", "Brightcove accepts at most 5000 characters (long_description)")
        if intent.idempotency_key and len(intent.idempotency_key) > 150:
            raise IntentError("idempotency_key", "Brightcove reference ids are at most 150 characters")

    # -- OAuth -----------------------------------------------------------------------
    def _token(self, ctx: StepContext, *, stale: str | None = None) -> str:
        """The fleet's access token for this account; ``stale`` = the one an API refused."""
        key = f"if:oauth:brightcove:{ctx.account.name}"
        cached = ctx.redis.get(key)
        if cached and cached.decode() != stale:
            register_secret(cached.decode())
            return cached.decode()
        # One refresh at a time across the fleet; the others wait for its result.
        locked = bool(ctx.redis.set(f"{key}:lock", 1, nx=True, ex=TOKEN_LOCK_SECONDS))
        if not locked:
            deadline = time.monotonic() + TOKEN_LOCK_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.1)
                cached = ctx.redis.get(key)
                if cached and cached.decode() != stale:
                    return cached.decode()
        try:
            resp = ctx.http("oauth").request(
                "POST", f"{ctx.account.setting('OAUTH_URL')}/v4/access_token",
                data={"grant_type": "client_credentials"},
                auth=(ctx.account.setting("CLIENT_ID"), ctx.account.secret))
        except PermanentError as exc:
            raise PermanentError(f"OAuth token refused ({exc.message}); check INGEST_BRIGHTCOVE_CLIENT_ID and "
                                 "INGEST_BRIGHTCOVE_CLIENT_SECRET", status=exc.status, provider=self.name) from None
        finally:
            if locked:
                ctx.redis.delete(f"{key}:lock")
        body = resp.json()
        token, ttl = body["access_token"], float(body.get("expires_in", 300))
        register_secret(token)
        # Renew 30 s before expiry (or at 80 % of a very short lifetime).
        keep = ttl - 30 if ttl > 60 else ttl * 0.8
        ctx.redis.set(key, token, px=max(100, int(keep * 1000)))
        ctx.job.note("oauth.token", expires_in=ttl)
        return token

    def _api(self, ctx: StepContext, method: str, url: str, **kwargs: Any) -> requests.Response:
        """A CMS or DI call with the fleet's token; a 401 refreshes the token once."""
        token = self._token(ctx)
        try:
            return ctx.http("api").request(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
        except PermanentError as exc:
            if exc.status != 401:
                raise
        token = self._token(ctx, stale=token)
        return ctx.http("api").request(method, url, headers={"Authorization": f"Bearer {token}"}, **kwargs)

    def _cms(self, ctx: StepContext, path: str) -> str:
        return f"{ctx.account.base_url}/v1/accounts/{ctx.account.setting('ACCOUNT_ID')}{path}"

    def _di(self, ctx: StepContext, path: str) -> str:
        return f"{ctx.account.setting('INGEST_URL')}/v1/accounts/{ctx.account.setting('ACCOUNT_ID')}{path}"

    # -- create ----------------------------------------------------------------------
    def create_entity(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.provider_ids.get("video_id"):
            return
        body: dict[str, Any] = {"name": job.title, "reference_id": job.idempotency_key}
        if job.description:
            body["description" if len(job.description) <= 250 else "long_description"] = job.description
        if job.tags:
            body["tags"] = job.tags
        if job.metadata:
            body["custom_fields"] = job.metadata
        resp = self._api(ctx, "POST", self._cms(ctx, "/videos"), json=body, allow=(409,))
        if resp.status_code == 409:
            if "REFERENCE_ID_IN_USE" not in self.error_text(resp):
                raise PermanentError(self.error_text(resp), status=409, provider=self.name)
            resp = self._api(ctx, "GET", self._cms(ctx, f"/videos/ref:{quote(job.idempotency_key, safe='')}"))
            job.note("entity.found", video_id=resp.json()["id"])
        else:
            job.note("entity.created", video_id=resp.json()["id"])
        job.provider_ids["video_id"] = resp.json()["id"]
        # The call that created (or found) the video counts against its per-video budget too.
        ctx.http("api").charge_entity(f"video:{job.provider_ids['video_id']}")

    # -- target ----------------------------------------------------------------------
    def obtain_upload_target(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.upload.get("key"):
            try:
                load_credentials(ctx.redis, job.id)
                return
            except UploadSessionLost:
                job.upload = {}
        vid = job.provider_ids["video_id"]
        name = _source_name(job.source)
        urls = self._api(ctx, "GET", self._di(ctx, f"/videos/{vid}/upload-urls/{quote(name)}"),
                         entity=f"video:{vid}").json()
        store_credentials(ctx.redis, job.id, {k: urls[k] for k in (
            "access_key_id", "secret_access_key", "session_token", "signed_url") if urls.get(k)},
            ttl=CREDENTIALS_TTL)
        single_max = single_put_max(ctx.settings, int(float(ctx.account.setting("SINGLE_PUT_MAX",
                                                                                 str(DEFAULT_SINGLE_PUT_MAX)))))
        size = job.bytes_total or 0
        job.upload = {
            "protocol": "s3", "mode": "single" if size <= single_max else "multipart",
            "bucket": urls["bucket"], "key": urls["object_key"], "api_request_url": urls["api_request_url"],
            "part_size": part_size_for(size, int(float(ctx.account.setting("PART_SIZE", str(DEFAULT_PART_SIZE))))),
        }
        job.note("upload.target", mode=job.upload["mode"], bucket=urls["bucket"])

    # -- upload ----------------------------------------------------------------------
    def _s3(self, ctx: StepContext, creds: dict[str, str]) -> Any:
        return s3_client(creds, endpoint=ctx.account.setting("S3_ENDPOINT") or None,
                         timeouts=(ctx.settings.http_connect_timeout, ctx.settings.http_read_timeout))

    def upload_slice(self, ctx: StepContext) -> bool:
        job = ctx.job
        creds = load_credentials(ctx.redis, job.id)
        content_type = mimetypes.guess_type(job.source)[0] or "video/mp4"
        if job.upload["mode"] == "multipart":
            return upload_multipart_slice(ctx, client=self._s3(ctx, creds), bucket=job.upload["bucket"],
                                          key=job.upload["key"], content_type=content_type)
        with open(job.source, "rb") as f:  # streamed by requests, never read whole
            ctx.http("upload").request("PUT", creds["signed_url"], data=f, headers={"Content-Type": content_type})
        job.bytes_done = job.bytes_total or 0
        return True

    # -- submit ----------------------------------------------------------------------
    def _live_ingest_job(self, ctx: StepContext, vid: str) -> str | None:
        jobs = self._api(ctx, "GET", self._cms(ctx, f"/videos/{vid}/ingest_jobs"), entity=f"video:{vid}").json()
        live = [j for j in jobs if j.get("state") != "failed"]
        return live[-1]["id"] if live else None

    def submit_ingest(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.provider_ids.get("ingest_job_id"):
            return
        vid = job.provider_ids["video_id"]
        if job.provider_ids.get("ingest_requested_at"):
            # A run that sent the request may have died before recording the answer.
            adopted = self._live_ingest_job(ctx, vid)
            if adopted:
                job.provider_ids["ingest_job_id"] = adopted
                job.note("ingest.adopted", ingest_job_id=adopted)
                return
        source = job.upload["api_request_url"] if job.mode == "push" else job.source
        body: dict[str, Any] = {"master": {"url": source}}
        if ctx.account.setting("PROFILE"):
            body["profile"] = ctx.account.setting("PROFILE")
        if ctx.account.setting("CAPTURE_IMAGES"):
            body["capture-images"] = ctx.account.setting("CAPTURE_IMAGES").lower() in ("1", "true", "yes")
        if job.priority == "low":
            body["priority"] = "low"
        hook = callback_url(ctx.settings, self.name, job.id)
        if hook:
            body["callbacks"] = [hook]
        resp = self._api(ctx, "POST", self._di(ctx, f"/videos/{vid}/ingest-requests"), json=body,
                         entity=f"video:{vid}", allow=(409,), on_send=ctx.sending("ingest_requested_at"))
        ingest_id = resp.json().get("id") if resp.status_code != 409 else self._live_ingest_job(ctx, vid)
        if not ingest_id:
            raise TransientError(f"ingest request answered {resp.status_code} without a job id", provider=self.name)
        job.provider_ids["ingest_job_id"] = ingest_id
        job.note("ingest.requested", ingest_job_id=ingest_id, callbacks=bool(hook))
        forget_credentials(ctx.redis, job.id)  # the upload is over: drop its secrets now

    # -- await -----------------------------------------------------------------------
    def poll_status(self, ctx: StepContext) -> Status:
        vid, ingest_id = ctx.job.provider_ids["video_id"], ctx.job.provider_ids["ingest_job_id"]
        j = self._api(ctx, "GET", self._cms(ctx, f"/videos/{vid}/ingest_jobs/{ingest_id}"),
                      entity=f"video:{vid}").json()
        state = j.get("state", "")
        if state == "finished":
            return Status("ready", 100, provider_state=state)
        if state == "failed":
            reason = ": ".join(str(v) for v in (j.get("error_code"), j.get("error_message")) if v)
            return Status("failed", message=reason or "the ingest job failed", provider_state=state)
        return Status("processing", PROGRESS.get(state), provider_state=state)

    def cancel(self, ctx: StepContext) -> None:
        up = ctx.job.upload
        if up.get("upload_id") and ctx.job.step in ("target", "upload"):
            try:
                abort_multipart(self._s3(ctx, load_credentials(ctx.redis, ctx.job.id)), bucket=up["bucket"],
                                key=up["key"], upload_id=up["upload_id"])
                ctx.job.note("upload.aborted")
            finally:
                forget_credentials(ctx.redis, ctx.job.id)
