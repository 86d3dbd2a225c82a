"""Ittybit: URL ingest (async task, or sync ``POST /files``) and resumable signed uploads.

Contract: shared/design/providers.md §3 and the seed ``ittybit-ingest.txt``. Ittybit's API
changed shape during 2025: the ``{meta, data, error, links}`` envelope of the seed and, later,
bare objects with ``{kind, message}`` errors. Both are read here.

* pull (default): submit = ``POST /tasks {kind: "ingest", url, filename?, folder?,
  metadata?, webhook_url?}``; await = ``GET /tasks/{id}`` until completed / ready /
  succeeded (success) or failed / error / cancelled (failure, with the task's error).
  Ittybit has no idempotency key: a re-run after a crash between the request and its
  checkpoint looks for the task among the newest ones before asking again.
* pull with option ``sync``: submit = ``POST /files`` (small files; the answer is the file).
* push: target = ``POST /signatures {filename, folder, method: "put"}`` (the signed URL is a
  secret: its own expiring Redis key); upload = one PUT below ``CHUNKED_FROM`` bytes, else
  chunks with ``Content-Range`` (202 each, 201 with the file at the end), the acknowledged
  offset checkpointed after each; an expired signature is renewed in place. await =
  ``GET /files/{id}`` until ready.
"""

from __future__ import annotations

import mimetypes
import os
import time
from typing import Any

import requests

from tasks.errors import PermanentError, UploadSessionLost
from tasks.providers.base import Adapter, Status, StepContext
from tasks.transfer import single_put_max
from tasks.transfer.ranged import RangedUpload
from tasks.transfer.s3 import forget_credentials, load_credentials, store_credentials
from workers.config import AccountConfig
from workers.webhooks import callback_url

CHUNKED_FROM = 100 * 1000 * 1000  # Ittybit: files of 100 MB and more go in chunks
DEFAULT_CHUNK = 16 * 1024 * 1024
SUCCESS = frozenset({"completed", "complete", "ready", "succeeded"})
FAILURE = frozenset({"failed", "error", "cancelled"})


def unwrap(body: Any) -> Any:
    """The object of either API shape: the envelope's ``data``, or the bare object."""
    if isinstance(body, dict) and "data" in body and ("meta" in body or "error" in body):
        return body["data"]
    return body


class IttybitAdapter(Adapter):
    name = "ittybit"
    intent_options = {"folder": str, "filename": str, "sync": bool}

    def auth_headers(self, account: AccountConfig) -> dict[str, str]:
        return {"Authorization": f"Bearer {account.secret}"}

    def error_text(self, resp: requests.Response) -> str:
        """``{"error": {"message"}}`` (envelope) or ``{"kind", "message"}`` (bare)."""
        try:
            body = resp.json()
        except ValueError:
            return (resp.text or resp.reason or "")[:300]
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict) and error.get("message"):
                return str(error["message"])[:300]
            if body.get("message"):
                return ": ".join(str(v) for v in (body.get("kind"), body["message"]) if v)[:300]
        return str(body)[:300]

    def needs(self, step: str, job: Any) -> bool:
        if job.mode == "push":
            return step in ("target", "upload", "await")  # the upload's 201 creates the file
        return step in ("submit", "await")

    def slot_step(self, job: Any) -> str:
        return "upload" if job.mode == "push" else "submit"

    def _url(self, ctx: StepContext, path: str) -> str:
        return f"{ctx.account.base_url}{path}"

    def _names(self, job: Any) -> dict[str, str]:
        names = {"filename": job.options.get("filename") or os.path.basename(job.source.split("?")[0])}
        if job.options.get("folder"):
            names["folder"] = job.options["folder"]
        return names

    # -- pull ------------------------------------------------------------------------
    def submit_ingest(self, ctx: StepContext) -> None:
        job, api = ctx.job, ctx.http("api")
        if job.provider_ids.get("task_id") or job.provider_ids.get("file_id"):
            return
        body: dict[str, Any] = {"url": job.source, **self._names(job)}
        if job.metadata:
            body["metadata"] = job.metadata
        if job.options.get("sync"):
            found = unwrap(api.request("POST", self._url(ctx, "/files"), json=body).json())
            job.provider_ids["file_id"] = found["id"]
            job.note("file.created", file_id=found["id"])
            return
        if job.provider_ids.get("task_requested_at"):
            adopted = self._find_task(ctx, body["filename"])
            if adopted:
                job.provider_ids["task_id"] = adopted
                job.note("task.adopted", task_id=adopted)
                return
        hook = callback_url(ctx.settings, self.name, job.id)
        if hook:
            body["webhook_url"] = hook
        job.provider_ids["task_requested_at"] = time.time()
        ctx.checkpoint()
        task = unwrap(api.request("POST", self._url(ctx, "/tasks"), json={"kind": "ingest", **body}).json())
        job.provider_ids["task_id"] = task["id"]
        job.note("task.created", task_id=task["id"], webhook=bool(hook))

    def _find_task(self, ctx: StepContext, filename: str) -> str | None:
        """The ingest task a crashed run created for this source, if any (newest first)."""
        listed = unwrap(ctx.http("api").request("GET", self._url(ctx, "/tasks"), params={"limit": 50}).json())
        for task in listed or []:
            given = task.get("input") or {}
            if task.get("kind") == "ingest" and given.get("url") == ctx.job.source \
                    and given.get("filename") in (None, filename):
                return task["id"]
        return None

    # -- push ------------------------------------------------------------------------
    def obtain_upload_target(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.upload.get("path"):
            try:
                load_credentials(ctx.redis, job.id)
                return
            except UploadSessionLost:
                pass  # the signature expired: sign again, the provider keeps what it received
        self._sign(ctx)

    def _sign(self, ctx: StepContext) -> str:
        job = ctx.job
        names = self._names(job)
        sig = unwrap(ctx.http("api").request("POST", self._url(ctx, "/signatures"),
                                             json={**names, "method": "put"}).json())
        ttl = max(60, int(sig.get("expiry", time.time() + 3600) - time.time()))
        store_credentials(ctx.redis, job.id, {"url": sig["url"]}, ttl=ttl)
        path = "/".join(p for p in (names.get("folder"), names["filename"]) if p)
        job.upload.setdefault("offset", 0)
        job.upload.update({"protocol": "ranged-put", "path": path, "expiry": sig.get("expiry")})
        job.note("upload.signed", path=path)
        return sig["url"]

    def upload_slice(self, ctx: StepContext) -> bool:
        job = ctx.job
        url = load_credentials(ctx.redis, job.id)["url"]
        content_type = mimetypes.guess_type(job.source)[0] or "video/mp4"
        with open(job.source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < single_put_max(ctx.settings, CHUNKED_FROM) and not job.upload.get("chunked"):
                answer = ctx.http("upload").request("PUT", url, data=f, headers={"Content-Type": content_type})
                return self._uploaded(ctx, unwrap(answer.json()), size)
            job.upload["chunked"] = True
            chunk = int(float(ctx.account.setting("CHUNK_SIZE", str(DEFAULT_CHUNK))))
            up = RangedUpload(ctx.http("upload"), url, f, size=size, offset=int(job.upload.get("offset", 0)),
                              chunk_size=chunk)
            while not up.done and ctx.time_left() > 0:
                try:
                    up.send_chunk()
                except PermanentError as exc:
                    if exc.status != 403:
                        raise
                    job.note("upload.signature_renewed", error=exc.message)
                    up.url = self._sign(ctx)  # expired: a new signature for the same path
                    continue
                if up.offset != job.upload.get("offset"):
                    job.upload["offset"] = job.bytes_done = up.offset
                    job.attempts.pop("upload", None)
                    ctx.checkpoint()
            return self._uploaded(ctx, unwrap(up.result), size) if up.done else False

    def _uploaded(self, ctx: StepContext, file: dict, size: int) -> bool:
        ctx.job.provider_ids["file_id"] = file["id"]
        ctx.job.bytes_done = ctx.job.upload["offset"] = size
        ctx.job.note("file.created", file_id=file["id"])
        forget_credentials(ctx.redis, ctx.job.id)
        return True

    # -- await -----------------------------------------------------------------------
    def poll_status(self, ctx: StepContext) -> Status:
        ids, api = ctx.job.provider_ids, ctx.http("api")
        if ids.get("task_id"):
            task = unwrap(api.request("GET", self._url(ctx, f"/tasks/{ids['task_id']}")).json())
            state = task.get("status", "")
            if state in SUCCESS:
                output = task.get("output") or {}
                if isinstance(output, dict) and output.get("id"):
                    ids["file_id"] = output["id"]
                return Status("ready", 100, provider_state=state)
            if state in FAILURE:
                error = task.get("error") or {}
                message = error.get("message") if isinstance(error, dict) else str(error)
                return Status("failed", message=message or f"the ingest task {state}", provider_state=state)
            return Status("processing", task.get("progress"), provider_state=state)
        file = unwrap(api.request("GET", self._url(ctx, f"/files/{ids['file_id']}")).json())
        state = file.get("status", "")
        if state in SUCCESS:
            return Status("ready", 100, provider_state=state)
        if state in FAILURE:
            return Status("failed", message=f"Ittybit reports the file {state}", provider_state=state)
        return Status("processing", provider_state=state)
