"""Ingest.io: video + input, signed S3 multipart upload, encoding job, job status.

Contract: shared/design/providers.md §4 and the seed ``ingestio-api-reference.md``.

* Every API call sends ``Authorization: Bearer <JWT>`` and ``Accept:
  application/vnd.ingest.v1+json`` (without it Ingest.io answers 406); the answer's
  ``Request-Id`` goes into the log line of the call and into the job's history for the calls
  that create something. ``X-RateLimit-Limit/Remaining/Reset`` feed the account's budget: at
  ``Remaining: 0`` the whole fleet pauses until the window resets (``learns_rate_limit``);
  a 429 (empty body, ``Retry-After``) goes through the fleet-wide cooldown.
* create: ``POST /videos`` then ``POST /encoding/inputs {filename, type, size}``. Ingest.io
  has no idempotency key, so the fleet marks both: the video carries the tag
  ``ingest-fleet:<job id>``, the input's file name starts with the job id. A run that may have
  sent the create before dying (a flag checkpointed before the call) first looks for the
  marked entity, reading the list with Ingest.io's range pagination (206 + ``Next-Range``).
* target: ``POST /encoding/inputs/{id}/upload?type=amazonMP`` (above ``SINGLE_PUT_MAX``,
  default 5 MiB as in Ingest's SDK) or ``type=amazon`` -> ``uploadId, pieceCount,
  pieceSize``; recorded in the job (none of it is a secret).
* upload: for each part not yet recorded, ``POST …/upload/sign {partNumber, uploadId,
  contentType}`` and a streamed PUT of the part's bytes to the signed URL with the returned
  headers and ``Content-Type`` exactly the signed ``application/octet-stream`` (as the node
  SDK's ``UploaderBase._signChunk``/``_sendChunk``; the signature covers it); the part
  (number, size, ETag) is checkpointed after each. Signed URLs are secrets: used at once,
  never stored. An expired one is signed again. After the last part ``POST …/upload/complete``.
  A single upload is one sign ``{contentType}`` + PUT (Ingest's SDK sends no complete for it).
  A 409 on complete (the reference: "409 if the upload isn't properly canceled") is judged
  from the documented input states, which exist only as list filters (the Input object has
  no ``status``): listed under ``filter=processing|queued|error|ready`` = completed by a run
  whose answer was lost; under ``uploading`` or nowhere = refused, a permanent failure.
  Either way the answer goes into the job's history (``upload.complete_conflict``).
* submit: ``POST /encoding/jobs {inputs, profile, video}`` (``PROFILE`` setting). A re-run that
  may have sent it adopts the video's live job instead of starting a second encode.
* await: ``GET /encoding/jobs/{id}``: ``status`` 0 in progress (``progress`` %), 1 complete,
  10 failed. Webhooks (per account, registered by the fleet with its own secret, checked with
  ``X-Ingest-Signature``) end the wait early.
* publish (opt-in: intent option ``publish`` (``--opt publish=true``), else the account
  setting ``INGEST_INGESTIO_PUBLISH`` = true/false, default false): a complete job leaves the
  video ``draft`` ("finished encoding, playable but not published", the reference's
  ``videos/get.md``); the reference documents no publish call, the node SDK's
  ``Videos.publish`` sends ``POST /videos/publish [<video id>]``, which the fleet sends once
  (flag checkpointed) before the job is ready. An invalid setting fails the job at once,
  permanently, naming the variable.
* cancel, or a permanent failure: ``POST …/upload/abort {uploadId}`` for an open upload.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
import json
import mimetypes
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any, ClassVar

import requests

from tasks.callbacks import account_callback_url, derived_secret, remember_ref
from tasks.config import AccountConfig
from tasks.declare import Setting, budget
from tasks.errors import PermanentError, TransientError, UploadSessionLost
from tasks.intent import IntentError, ValidatedIntent
from tasks.logs import register_secret
from tasks.providers.base import Adapter, Status, StepContext
from tasks.transfer import single_put_max
from tasks.transfer.source import read_range

VND = "application/vnd.ingest.v1+json"
#: The Content-Type every part is signed with and PUT with, as the node SDK's
#: ``UploaderBase._signChunk``/``_sendChunk``: the signature covers it.
PART_TYPE = "application/octet-stream"
MAX_PAGES = 200  # a marker search reads at most this many pages of a list
RESIGN_LIMIT = 3  # signatures tried for one part in one slice before the slice is retried
HOOK_EVENTS = ["jobs.complete", "jobs.error", "inputs.complete", "inputs.cancelled"]
HOOK_CACHE_SECONDS = 3600
JOB_RUNNING, JOB_COMPLETE, JOB_FAILED = 0, 1, 10
#: The documented input states (list filters), in the order a 409 on complete asks them: the
#: short lists first, ``ready`` (every input ever completed) last. Listed as processing, queued,
#: error (the file arrived, the probe refused it) or ready = the upload completed.
INPUT_LOOKUP = ("uploading", "processing", "queued", "error", "ready")


def marker(job_id: str) -> str:
    """The tag that names the job's video at Ingest.io."""
    return f"ingest-fleet:{job_id}"


def input_filename(job_id: str, source: str) -> str:
    """The input's file name: the job id (its marker) and the source's name."""
    return f"{job_id}-{os.path.basename(source)}"[:255]


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: only to refuse an expired token early)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


class _PartReader:
    """Bytes ``[start, start+length)`` of an open file, read in blocks by ``requests``:
    a part of any size costs one block of memory. Feeds an MD5 to check the ETag.
    (Parts up to :data:`WHOLE_PART` are sent from memory instead: see :func:`_part_body`.)"""

    BLOCK = 1 << 20

    def __init__(self, f: IO[bytes], start: int, length: int):
        self.f, self.left, self.length = f, length, length
        self.md5 = hashlib.md5(usedforsecurity=False)
        f.seek(start)

    def __len__(self) -> int:
        return self.length

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left, self.BLOCK)
        data = self.f.read(n)
        self.left -= len(data)
        self.md5.update(data)
        return data


#: A part up to this size is read whole and sent in one write, hashed once; http.client would
#: read a streamed body 8 KiB at a time (and hash each block), which costs more CPU than the
#: transfer. Ingest.io's pieces are 5 MiB unless a file needs more than 10,000 of them.
WHOLE_PART = 64 * 1024 * 1024


def _part_body(f: IO[bytes], start: int, length: int) -> tuple[Any, str | None]:
    """What to PUT for a part, and its MD5 when known before sending (a whole part)."""
    if length > WHOLE_PART:
        return _PartReader(f, start, length), None
    data = read_range(f, start, length)
    return data, hashlib.md5(data, usedforsecurity=False).hexdigest()


class IngestioAdapter(Adapter):
    name = "ingestio"
    title = "Ingest.io (the rate limit is learned from X-RateLimit-* answers)"
    account_settings = (
        Setting("API_KEY", secret=True, example="<ingestio-token>"),
        Setting("PROFILE", required=True, example="<profile-uuid>",
                help="Encoding profile every job uses (a UUID from GET /encoding/profiles)."),
        Setting("BASE_URL", "https://api.ingest.io"),
        Setting("PUBLISH", "false", bool, help="Publish each video once encoded (per job: --opt publish=true)."),
        # Ingest's SDK goes multipart above 5 MiB.
        Setting("SINGLE_PUT_MAX", str(5 * 1024 * 1024), int, help="One PUT below this size (bytes), signed "
                                                                  "multipart above."),
        # Server-defined limit announced in X-RateLimit-* on every answer: learned, not configured.
        *budget(rate=0),
    )
    pull_schemes = frozenset()  # Ingest.io documents no URL ingest
    learns_rate_limit = True
    account_webhooks = True
    cancel_on_failure = True  # "…/upload/abort on cancel or permanent failure"
    intent_options: ClassVar[dict[str, type]] = {"publish": bool}

    def auth_headers(self, account: AccountConfig) -> dict[str, str]:
        return {"Authorization": f"Bearer {account.secret}", "Accept": VND}

    def error_text(self, resp: requests.Response) -> str:
        """``{"errors": [...]}`` (strings or ``{"message"}`` objects); a 429 has no body."""
        try:
            body = resp.json()
        except ValueError:
            return (resp.text or "").strip()[:300] or resp.reason or f"HTTP {resp.status_code}"
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors:
            return "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)[:300]
        return str(errors or body)[:300]

    def validate(self, intent: ValidatedIntent) -> None:
        if len(intent.title) > 255:
            raise IntentError("title", "Ingest.io titles are at most 255 characters")

    # -- webhooks (per account) --------------------------------------------------------
    def webhook_is_relevant(self, payload: Any) -> bool:
        return isinstance(payload, dict) and payload.get("event") in ("jobs.complete", "jobs.error")

    def webhook_refs(self, payload: Any) -> list[str]:
        """The Ingest.io ids a notification is about (job, input, video), most specific first."""
        obj = payload.get("event_object") if isinstance(payload, dict) else None
        data = obj.get("data") if isinstance(obj, dict) else None
        if not isinstance(data, dict):
            return []
        refs = [data.get("id")]
        if isinstance(data.get("video"), str):
            refs.append(data["video"])
        return [r for r in refs if isinstance(r, str) and r]

    def webhook_verified(self, secret: str, headers: dict[str, str], raw: bytes) -> bool:
        """``X-Ingest-Signature`` is the hex HMAC-SHA1 of the raw body under the hook's secret."""
        given = headers.get("x-ingest-signature", "")
        expected = hmac.new(secret.encode(), raw, hashlib.sha1).hexdigest()
        return bool(given) and hmac.compare_digest(expected, given.strip().lower())

    def _ensure_hook(self, ctx: StepContext) -> None:
        """The account's signed webhook, registered once for the fleet (polling remains)."""
        url = account_callback_url(ctx.settings, self.name, ctx.account.name)

        def create() -> Any:
            secret = derived_secret(ctx.settings, self.name, ctx.account.name)
            register_secret(secret, pinned=True)  # the account's, for the process's life
            return self._api(ctx, "POST", "/hooks", body={
                "event_names": HOOK_EVENTS, "url": url, "enabled": True, "secret": secret}).json()

        self.ensure_account_hook(ctx, url, cache_seconds=HOOK_CACHE_SECONDS, create=create,
                                 find=lambda: next((h for h in self._list(ctx, "/hooks") if h.get("url") == url), None))

    def _api(self, ctx: StepContext, method: str, path: str, *, body: Any = None, **kwargs: Any) -> requests.Response:
        if body is not None:
            kwargs["data"] = json.dumps(body)
            kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": VND}
        return ctx.http("api").request(method, f"{ctx.account.base_url}{path}", **kwargs)

    def probe(self, ctx: StepContext) -> str:
        self._api(ctx, "GET", "/hooks")
        return "listed the account's hooks"

    def _list(self, ctx: StepContext, path: str, params: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Every item of a list, page by page (``206`` + ``Next-Range`` -> ``Range``)."""
        headers: dict[str, str] = {}
        for _ in range(MAX_PAGES):
            resp = self._api(ctx, "GET", path, params=params, headers=headers)
            items = resp.json()
            yield from items if isinstance(items, list) else []
            nxt = resp.headers.get("Next-Range")
            if resp.status_code != 206 or not nxt:
                return
            headers = {"Range": nxt}
        raise TransientError(f"GET {path}: more than {MAX_PAGES} pages; marker search gave up", provider=self.name)

    def _publish(self, ctx: StepContext) -> bool:
        """Whether the job publishes its video once encoded: the intent's option, else the setting."""
        if "publish" in ctx.job.options:
            return bool(ctx.job.options["publish"])
        return ctx.account.flag("PUBLISH")

    def _check_token(self, ctx: StepContext) -> None:
        exp = jwt_expiry(ctx.account.secret)
        if exp is not None and exp < time.time():
            var = ctx.account.var("API_KEY")
            raise PermanentError(f"the Ingest.io token expired at {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(exp))}; "
                                 f"set a new one in {var}", provider=self.name)

    # -- create ------------------------------------------------------------------------
    def create_entity(self, ctx: StepContext) -> None:
        job = ctx.job
        self._check_token(ctx)
        self._publish(ctx)  # an invalid setting fails the job now, not after the upload
        self._ensure_hook(ctx)
        videos = {"search": job.title, "status": "created,processing,draft,published,error"}
        self._find_or_create(ctx, "video", "entity", "/videos", videos,
                             lambda v: marker(job.id) in (v.get("tags") or []),
                             {"title": job.title, "description": job.description, "tags": [*job.tags, marker(job.id)]})
        name = input_filename(job.id, job.source)
        self._find_or_create(ctx, "input", "input", "/encoding/inputs", None, lambda i: i.get("filename") == name,
                             {"filename": name, "type": _mime(job.source), "size": job.bytes_total})

    def _find_or_create(self, ctx: StepContext, what: str, event: str, path: str, params: dict[str, str] | None,
                        ours: Callable[[dict[str, Any]], bool], body: dict[str, Any]) -> None:
        """Record ``provider_ids[<what>_id]``: found by the fleet's marker if a run that may
        have created it died before recording it (``<what>_requested``), else created."""
        job, ids = ctx.job, ctx.job.provider_ids
        if ids.get(f"{what}_id"):
            return
        found = None
        if ids.get(f"{what}_requested"):
            found = next((item for item in self._list(ctx, path, params) if ours(item)), None)
        if found:
            ids[f"{what}_id"] = found["id"]
            job.note(f"{event}.found", **{f"{what}_id": found["id"]})
        else:
            resp = self._api(ctx, "POST", path, body=body, on_send=ctx.sending(f"{what}_requested", True))
            ids[f"{what}_id"] = resp.json()["id"]
            job.note(f"{event}.created", **{f"{what}_id": ids[f"{what}_id"]}, request_id=resp.headers.get("Request-Id"))
        remember_ref(ctx.redis, self.name, job.account, ids[f"{what}_id"], job.id)
        ctx.checkpoint()

    # -- target ------------------------------------------------------------------------
    def _input_path(self, ctx: StepContext, suffix: str = "") -> str:
        return f"/encoding/inputs/{ctx.job.provider_ids['input_id']}{suffix}"

    def obtain_upload_target(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.upload.get("type"):
            return  # resumed: the recorded upload goes on
        size = job.bytes_total or 0
        single_max = single_put_max(ctx.settings, ctx.account.whole("SINGLE_PUT_MAX"))
        kind = "amazon" if size <= single_max else "amazonMP"
        resp = self._api(ctx, "POST", self._input_path(ctx, "/upload"), params={"type": kind},
                         body={"type": _mime(job.source), "size": size})
        answer = resp.json()
        job.upload = {"type": kind, "parts": []}
        if kind == "amazonMP":
            job.upload.update(upload_id=answer["uploadId"], piece_size=int(answer["pieceSize"]),
                              piece_count=int(answer["pieceCount"]))
        job.note("upload.target", type=kind, parts=job.upload.get("piece_count", 1),
                 request_id=resp.headers.get("Request-Id"))

    # -- upload ------------------------------------------------------------------------
    def _sign(self, ctx: StepContext, part: int | None) -> dict[str, str]:
        up = ctx.job.upload
        body: dict[str, Any] = {"partNumber": part, "uploadId": up["upload_id"]} if part else {}
        body["contentType"] = PART_TYPE
        resp = self._api(ctx, "POST", self._input_path(ctx, "/upload/sign"), params={"type": up["type"]},
                         body=body, allow=(404,))
        if resp.status_code == 404:
            raise UploadSessionLost(f"Ingest.io no longer knows upload {up.get('upload_id')}: "
                                    f"{self.error_text(resp)}", status=404, provider=self.name)
        signed: dict[str, str] = resp.json()
        return signed

    def _prepare(self, ctx: StepContext, f: IO[bytes], part: int | None, start: int,
                 length: int) -> tuple[dict[str, str], Any, str | None]:
        """What a part's PUT needs: its signature, its body and (for a whole part) its MD5."""
        signed = self._sign(ctx, part)
        body, md5 = _part_body(f, start, length)
        return signed, body, md5

    def _put_part(self, ctx: StepContext, f: IO[bytes], part: int | None, start: int, length: int,
                  prepared: tuple[dict[str, str], Any, str | None] | None = None) -> str:
        """PUT one part (signed and read here, or ``prepared`` ahead); an expired or refused
        signature is signed again (a part held in memory is not read again). -> ETag."""
        signed, body, md5 = prepared or self._prepare(ctx, f, part, start, length)
        for attempt in range(RESIGN_LIMIT):
            if attempt:
                signed = self._sign(ctx, part)
                if not isinstance(body, bytes):  # a streamed part was read by the last try
                    body, md5 = _part_body(f, start, length)
            headers = {"Authorization": signed["authHeader"], "x-amz-date": signed["dateHeader"],
                       "Content-Type": PART_TYPE, "Content-Length": str(length)}
            if signed.get("securityToken"):
                headers["x-amz-security-token"] = signed["securityToken"]
            resp = ctx.http("upload").request("PUT", signed["url"], data=body, headers=headers, allow=(403, 404))
            if resp.status_code == 404:  # NoSuchUpload: completed, aborted or replaced meanwhile
                raise UploadSessionLost(f"part {part}: the upload is gone ({_s3_error(resp)})", status=404,
                                        provider=self.name)
            if resp.status_code == 403:  # expired (or refused) signature: a fresh one
                ctx.job.note("upload.resigned", part=part, reason=_s3_error(resp))
                continue
            etag = resp.headers.get("ETag", "").strip('"')
            sent_md5 = md5 or body.md5.hexdigest()
            if etag and len(etag) == 32 and etag != sent_md5:
                raise TransientError(f"part {part}: ETag {etag} does not match the bytes sent", provider=self.name)
            return etag
        raise TransientError(f"part {part}: the signed URL was refused {RESIGN_LIMIT} times", status=403,
                             provider=self.name)

    def upload_slice(self, ctx: StepContext) -> bool:
        job, up = ctx.job, ctx.job.upload
        if not up.get("type"):  # aborted (a retry after a failure or a cancel): open a new one
            raise UploadSessionLost("no open upload", provider=self.name)
        size = job.bytes_total or 0
        with ctx.open_source() as f:
            if up["type"] == "amazon":
                etag = self._put_part(ctx, f, None, 0, size)
                up["parts"] = [{"n": 1, "size": size, "etag": etag}]
                job.bytes_done = size
                up["completed"] = True
                return True
            piece, count = up["piece_size"], up["piece_count"]
            done = {p["n"] for p in up["parts"]}
            todo = [(n, (n - 1) * piece, min(piece, size - (n - 1) * piece)) for n in range(1, count + 1)
                    if n not in done]
            # One part is sent at a time (a crash re-sends at most that one); the next one is
            # signed and read meanwhile, in a thread of its own (parts held in memory only:
            # that thread is then the only reader of the source).
            ahead = piece <= WHOLE_PART
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="part-ahead") as pool:
                nxt: Future[Any] | None = None
                for i, (n, start, length) in enumerate(todo):
                    if ctx.time_left() <= 0:
                        return False
                    prepared = nxt.result() if nxt is not None else None
                    nxt = None
                    if ahead and i + 1 < len(todo):
                        if prepared is None:
                            prepared = self._prepare(ctx, f, n, start, length)
                        nxt = pool.submit(contextvars.copy_context().run, self._prepare, ctx, f, *todo[i + 1])
                    etag = self._put_part(ctx, f, n, start, length, prepared)
                    up["parts"].append({"n": n, "size": length, "etag": etag})
                    job.bytes_done += length
                    ctx.progress()
        resp = self._api(ctx, "POST", self._input_path(ctx, "/upload/complete"), body={"uploadId": up["upload_id"]},
                         allow=(409,))
        if resp.status_code == 409:
            self._after_complete_conflict(ctx, resp)
        up["completed"] = True
        job.note("upload.completed", parts=count, request_id=resp.headers.get("Request-Id"))
        return True

    def _after_complete_conflict(self, ctx: StepContext, resp: requests.Response) -> None:
        """A 409 on complete: done by a run whose answer was lost, or refused. The Input object
        has no ``status``; its states exist only as list filters (``GET /encoding/inputs?filter=``),
        so the input is looked up there by id, the short lists first (at most ``MAX_PAGES`` pages
        each, then a transient error). Listed as uploading, or nowhere: the complete was
        refused, a permanent failure."""
        job, answer = ctx.job, self.error_text(resp)
        input_id = job.provider_ids["input_id"]
        found = next((state for state in INPUT_LOOKUP
                      if any(isinstance(i, dict) and i.get("id") == input_id
                             for i in self._list(ctx, "/encoding/inputs", {"filter": state}))), None)
        job.note("upload.complete_conflict", answer=answer, listed_as=found or "nowhere")
        if found in (None, "uploading"):
            raise PermanentError(f"upload complete refused (409: {answer}); the input is "
                                 f"{'still uploading' if found else 'in no documented state list'}", status=409,
                                 provider=self.name)

    # -- submit ------------------------------------------------------------------------
    def submit_ingest(self, ctx: StepContext) -> None:
        job, ids = ctx.job, ctx.job.provider_ids
        if ids.get("encoding_job_id"):
            return
        if ids.get("encoding_requested"):
            # ``?video=`` is *assumed* (not documented): the jobs are matched here all the same.
            live = [j for j in self._list(ctx, "/encoding/jobs", {"video": ids["video_id"]})
                    if isinstance(j, dict) and j.get("video") == ids["video_id"] and j.get("status") != JOB_FAILED]
            if live:
                ids["encoding_job_id"] = live[-1]["id"]
                job.note("ingest.adopted", encoding_job_id=ids["encoding_job_id"])
                remember_ref(ctx.redis, self.name, job.account, ids["encoding_job_id"], job.id)
                return
        profile = ctx.account.setting("PROFILE")
        resp = self._api(ctx, "POST", "/encoding/jobs", body={
            "inputs": [ids["input_id"]], "profile": profile, "video": ids["video_id"]},
            on_send=ctx.sending("encoding_requested", True))
        ids["encoding_job_id"] = resp.json()["id"]
        remember_ref(ctx.redis, self.name, job.account, ids["encoding_job_id"], job.id)
        job.note("ingest.requested", encoding_job_id=ids["encoding_job_id"], request_id=resp.headers.get("Request-Id"))

    # -- await -------------------------------------------------------------------------
    def poll_status(self, ctx: StepContext) -> Status:
        """``GET /encoding/jobs/{id}`` (*assumed*: the reference documents the job object and the
        list, not this path; the node SDK's ``Resource.getById`` builds it). An answer that is
        not the documented shape (``status`` 0/1/10) is recorded once and counts as in progress:
        ``INGEST_AWAIT_DEADLINE`` ends the wait, the poll never loops on its own."""
        jid = ctx.job.provider_ids["encoding_job_id"]
        j = self._api(ctx, "GET", f"/encoding/jobs/{jid}").json()
        j = j if isinstance(j, dict) else {"unexpected": str(j)[:200]}
        status, progress = j.get("status"), j.get("progress")
        if status not in (JOB_RUNNING, JOB_COMPLETE, JOB_FAILED):
            seen = next((h for h in reversed(ctx.job.history) if h["event"] == "provider.unexpected"), None)
            answer = json.dumps(j, sort_keys=True)[:300]
            if seen is None or seen.get("answer") != answer:
                ctx.job.note("provider.unexpected", call=f"GET /encoding/jobs/{jid}", answer=answer)
        if status == JOB_COMPLETE:
            ids = ctx.job.provider_ids
            if self._publish(ctx) and not ids.get("published"):
                resp = self._api(ctx, "POST", "/videos/publish", body=[ids["video_id"]])
                ids["published"] = True
                ctx.job.note("video.published", video_id=ids["video_id"],
                             request_id=resp.headers.get("Request-Id"))
                ctx.checkpoint()
            return Status("ready", 100, provider_state="published" if ids.get("published") else "complete")
        if status == JOB_FAILED:
            detail = j.get("error") or j.get("message")
            return Status("failed", message=f"Ingest.io encoding job {jid} failed (status 10)"
                          + (f": {detail}" if detail else ""), provider_state="failed")
        return Status("processing", progress if isinstance(progress, int) else None, provider_state="in progress")

    def cancel(self, ctx: StepContext) -> None:
        up = ctx.job.upload
        if up.get("upload_id") and not up.get("completed"):
            resp = self._api(ctx, "POST", self._input_path(ctx, "/upload/abort"), body={"uploadId": up["upload_id"]},
                             allow=(404, 409))
            # Its parts are gone at Ingest.io: a retry starts a new upload.
            ctx.job.upload, ctx.job.bytes_done = {}, 0
            ctx.job.note("upload.aborted", status=resp.status_code, request_id=resp.headers.get("Request-Id"))


def _mime(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "video/mp4"


def _s3_error(resp: requests.Response) -> str:
    """The ``<Code>`` of an S3-style XML error, for the job's history."""
    text = resp.text or ""
    start, end = text.find("<Code>"), text.find("</Code>")
    return text[start + 6:end] if 0 <= start < end else f"HTTP {resp.status_code}"
