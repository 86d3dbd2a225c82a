"""Ittybit: URL ingest (async task, or sync ``POST /files``) and resumable signed uploads.

Contract: docs/providers/ittybit.md (every call and field with its public source),
shared/design/providers.md §3 and the seed ``ittybit-ingest.txt``. Ittybit's API changed shape
during 2025: the ``{meta, data, error, links}`` envelope of the seed and, later, bare objects
with ``{kind, message}`` errors. Every API call pins ``Accept-Version`` (setting
``INGEST_ITTYBIT_API_VERSION``, default ``2025-08-20`` as ittybit/sdk-php v1.0.0 pins it; a
value that is no date or ``latest`` is refused at submit); both shapes are read.

* pull (default): submit = ``POST /tasks {kind: "ingest", url, filename?, folder?, ref}``
  (``ref`` = ``ingest-fleet:<job id>``; no ``metadata``: the task documents none, so the job
  history says it was not sent); await = ``GET /tasks/{id}`` until completed / ready /
  succeeded (success) or failed / error / cancelled (failure, with the task's error).
  Ittybit has no idempotency key: a re-run after a crash between the request and its
  checkpoint looks for the task (by ``ref``, else by source) among the newest before asking again.
  Webhooks: the per-task ``webhook_url`` was retired (changelog 2025-12-01); with
  ``INGEST_WEBHOOK_URL`` set, the account's first async job registers one Webhook Endpoint
  (``POST /webhooks/endpoints {url, topics}``, the account path of the receiver, after
  looking for it in ``GET /webhooks/endpoints``; remembered in Redis for 10 minutes, then
  looked up again, so one the provider lost is registered again). Events
  ``{kind: task.succeeded|task.failed, data: {task}}`` make the job's poll due; Ittybit
  documents no signature, so the path's token is the only check (*assumed*).
* pull with option ``sync``: submit = ``POST /files {url, filename?, folder?, ref, metadata?}``
  (small files; the answer is the file). Not idempotent: the request is checkpointed first,
  and a re-run (e.g. after a read timeout) looks for the file by its ``ref`` in ``GET /files``
  before posting again.
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
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import requests

from tasks.callbacks import account_callback_url, remember_ref
from tasks.config import AccountConfig
from tasks.declare import Setting, budget
from tasks.errors import PermanentError, UploadSessionLost
from tasks.providers.base import Adapter, Status, StepContext
from tasks.transfer import single_put_max
from tasks.transfer.ranged import RangedUpload
from tasks.transfer.s3 import forget_credentials, load_credentials, store_credentials
from tasks.transfer.source import size_of

CHUNKED_FROM = 100 * 1000 * 1000  # Ittybit: files of 100 MB and more go in chunks
SUCCESS = frozenset({"completed", "complete", "ready", "succeeded"})
FAILURE = frozenset({"failed", "error", "cancelled"})
HOOK_TOPICS = ["task.succeeded", "task.failed"]
HOOK_CACHE_SECONDS = 600
LIST_LIMIT, MARKER_PAGES = 100, 3  # a marker search reads the newest 300 at most


def marker(job_id: str) -> str:
    """The ``ref`` that names the job's task or file at Ittybit."""
    return f"ingest-fleet:{job_id}"


def unwrap(body: Any) -> Any:
    """The object of either API shape: the envelope's ``data``, or the bare object."""
    if isinstance(body, dict) and "data" in body and ("meta" in body or "error" in body):
        return body["data"]
    return body


class IttybitAdapter(Adapter):
    name = "ittybit"
    title = "Ittybit"
    account_settings = (
        Setting("API_KEY", secret=True, example="<ittybit-api-key>"),
        Setting("BASE_URL", "https://api.ittybit.com"),
        Setting("API_VERSION", "2025-08-20", pattern=r"\d{4}-\d{2}-\d{2}|latest",
                hint="a date such as 2025-08-20, or latest",
                help="The API version every call pins (Accept-Version), as Ittybit's SDK 1.0.0 does."),
        Setting("CHUNK_SIZE", str(16 * 1024 * 1024), int, help="Chunk size (bytes) for files of 100 MB and more."),
        # No published numbers: a conservative default, to be set per account.
        *budget(rate=5),
    )
    intent_options: ClassVar[dict[str, type]] = {"folder": str, "filename": str, "sync": bool}
    account_webhooks = True

    def auth_headers(self, account: AccountConfig) -> dict[str, str]:
        # The version is checked when the account's settings are read (tasks.config).
        return {"Authorization": f"Bearer {account.secret}", "Accept-Version": account.setting("API_VERSION")}

    # -- webhooks (Webhook Endpoints, per account) -------------------------------------
    def webhook_is_relevant(self, payload: Any) -> bool:
        return isinstance(payload, dict) and payload.get("kind") in HOOK_TOPICS

    def webhook_verified(self, secret: str, headers: dict[str, str], raw: bytes) -> bool:
        """Ittybit documents no signature header and gives an endpoint no secret: the token in
        the account path (checked by the receiver) is what authenticates (*assumed*)."""
        return True

    def webhook_refs(self, payload: Any) -> list[str]:
        data = payload.get("data") if isinstance(payload, dict) else None
        task_id = data.get("id") if isinstance(data, dict) else None
        return [task_id] if isinstance(task_id, str) and task_id else []

    def _ensure_hook(self, ctx: StepContext) -> None:
        """The account's Webhook Endpoint, registered once for the fleet (polling remains)."""
        url = account_callback_url(ctx.settings, self.name, ctx.account.name)

        def create() -> Any:
            return unwrap(ctx.http("api").request("POST", self._url(ctx, "/webhooks/endpoints"),
                                                  json={"url": url, "topics": HOOK_TOPICS}).json())

        self.ensure_account_hook(ctx, url, cache_seconds=HOOK_CACHE_SECONDS, create=create, find=lambda: next(
            self._search(ctx, "/webhooks/endpoints", lambda e: e.get("url") == url and e.get(
                "status", "active") == "active" and set(HOOK_TOPICS) <= set(e.get("topics") or [])), None))

    def probe(self, ctx: StepContext) -> str:
        ctx.http("api").request("GET", self._url(ctx, "/files"), params={"limit": 1, "page": 1})
        return "listed the project's files"

    def _search(self, ctx: StepContext, path: str, match: Callable[[dict[str, Any]], bool]) -> Iterator[dict[str, Any]]:
        """Items of a list (newest first) that ``match``: at most ``MARKER_PAGES`` pages."""
        for page in range(1, MARKER_PAGES + 1):
            resp = ctx.http("api").request("GET", self._url(ctx, path), params={"limit": LIST_LIMIT, "page": page})
            items = unwrap(resp.json())
            if not isinstance(items, list):
                ctx.job.note("provider.unexpected", call=f"GET {path}", answer=str(items)[:200])
                return
            yield from (item for item in items if isinstance(item, dict) and match(item))
            if len(items) < LIST_LIMIT or resp.headers.get("Has-More") == "false":
                return

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
        job, ids = ctx.job, ctx.job.provider_ids
        if ids.get("task_id") or ids.get("file_id"):
            return
        body: dict[str, Any] = {"url": ctx.source_url(), **self._names(job), "ref": marker(job.id)}
        if job.options.get("sync"):
            self._create_file(ctx, body)
            return
        self._ensure_hook(ctx)
        if ids.get("task_requested_at"):
            adopted = next(self._search(ctx, "/tasks", lambda t: self._is_ours(t, body)), None)
            if adopted:
                ids["task_id"] = adopted["id"]
                remember_ref(ctx.redis, self.name, ctx.account.name, adopted["id"], job.id)
                job.note("task.adopted", task_id=adopted["id"])
                return
        if job.metadata and not ids.get("task_requested_at"):
            job.note("metadata.not_sent", reason="Ittybit's ingest task documents no metadata field")
        task = unwrap(ctx.http("api").request("POST", self._url(ctx, "/tasks"), json={"kind": "ingest", **body},
                                              on_send=ctx.sending("task_requested_at")).json())
        ids["task_id"] = task["id"]
        remember_ref(ctx.redis, self.name, ctx.account.name, task["id"], job.id)
        job.note("task.created", task_id=task["id"])

    def _create_file(self, ctx: StepContext, body: dict[str, Any]) -> None:
        """``POST /files`` once per job: a re-run first looks for the file by its ``ref``."""
        job, ids = ctx.job, ctx.job.provider_ids
        if ids.get("file_requested_at"):
            found = next(self._search(ctx, "/files", lambda f: f.get("ref") == body["ref"]), None)
            if found:
                ids["file_id"] = found["id"]
                job.note("file.adopted", file_id=found["id"])
                return
            job.note("file.not_found", ref=body["ref"])  # the earlier request made none: ask again
        if job.metadata:
            body["metadata"] = job.metadata  # documented for files (sdk-php v1.0.0 FilesCreateRequest)
        found = unwrap(ctx.http("api").request("POST", self._url(ctx, "/files"), json=body,
                                               on_send=ctx.sending("file_requested_at")).json())
        ids["file_id"] = found["id"]
        job.note("file.created", file_id=found["id"])

    @staticmethod
    def _is_ours(task: dict[str, Any], body: dict[str, Any]) -> bool:
        """The ingest task a crashed run created for this job: by ``ref`` where the provider
        echoes it (``options.ref``), else by source URL and file name."""
        raw_options = task.get("options")
        options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
        refs = {r for r in (task.get("ref"), options.get("ref")) if r}
        if refs:
            return body["ref"] in refs
        raw_input = task.get("input")
        given: dict[str, Any] = raw_input if isinstance(raw_input, dict) else {}
        return task.get("kind") == "ingest" and given.get("url") == body["url"] \
            and given.get("filename") in (None, body["filename"])

    # -- push ------------------------------------------------------------------------
    def obtain_upload_target(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.upload.get("path"):
            try:
                load_credentials(ctx.redis, job.id, sealer=ctx.sealer)
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
        store_credentials(ctx.redis, job.id, {"url": sig["url"]}, ttl=ttl, sealer=ctx.sealer)
        path = "/".join(p for p in (names.get("folder"), names["filename"]) if p)
        job.upload.setdefault("offset", 0)
        job.upload.update({"protocol": "ranged-put", "path": path, "expiry": sig.get("expiry")})
        job.note("upload.signed", path=path)
        return str(sig["url"])

    def upload_slice(self, ctx: StepContext) -> bool:
        job = ctx.job
        url = load_credentials(ctx.redis, job.id, sealer=ctx.sealer)["url"]
        content_type = mimetypes.guess_type(job.source)[0] or "video/mp4"
        with ctx.open_source() as f:
            size = size_of(f)
            if size < single_put_max(ctx.settings, CHUNKED_FROM) and not job.upload.get("chunked"):
                answer = ctx.http("upload").request("PUT", url, data=f, headers={"Content-Type": content_type})
                return self._uploaded(ctx, unwrap(answer.json()), size)
            job.upload["chunked"] = True
            chunk = ctx.account.whole("CHUNK_SIZE")
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
                    ctx.progress()
            return self._uploaded(ctx, unwrap(up.result), size) if up.done else False

    def _uploaded(self, ctx: StepContext, file: dict[str, Any], size: int) -> bool:
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
