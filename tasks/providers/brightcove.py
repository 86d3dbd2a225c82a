"""Brightcove Video Cloud: OAuth, CMS video, Dynamic Ingest (S3 push or URL pull), ingest jobs.

Contract: shared/design/providers.md §1 and the seed ``brightcove-dynamic-ingest.md``.

* OAuth: client credentials at ``{OAUTH_URL}/v4/access_token`` (Basic auth). The token is
  shared by the whole fleet: cached in Redis until shortly before ``expires_in``, fetched by
  one worker at a time, and refreshed once when an API answers 401.
* create: CMS ``POST /v1/accounts/{a}/videos`` with ``reference_id`` = the job's idempotency
  key; 409 ``REFERENCE_ID_IN_USE`` means a crashed run created it: ``GET /videos/ref:{key}``.
  Metadata goes to ``custom_fields``, which the CMS accepts only for fields defined on the
  account (else 422 ``ILLEGAL_FIELD``): the definitions come from ``GET /video_fields``, cached
  per account in Redis for ``FIELDS_TTL`` seconds and looked up afresh once before a job fails
  on an unknown field or enum value. ``INGEST_BRIGHTCOVE_CUSTOM_FIELDS=key:field,...`` maps
  intent metadata keys to field ids; when set, a key it does not name is refused at submit.
* target (push): DI ``GET …/videos/{id}/upload-urls/{source_name}`` -> bucket, key, temporary
  credentials, ``signed_url``, ``api_request_url``. The credentials and the signed URL go to
  their own expiring Redis key (tasks.transfer.s3); the record keeps bucket, key and mode.
* upload: below ``SINGLE_PUT_MAX`` one streamed PUT to ``signed_url``, a signature-v2 URL
  signed with no Content-Type, so the PUT carries none; above it an S3 multipart upload with
  the temporary credentials, resumable part by part (from the checkpoint alone where the
  credentials may not ``ListParts``).
* submit: DI ``POST …/ingest-requests`` with ``master.url`` = ``api_request_url`` (push) or the
  source URL (pull), ``profile``/``capture-images`` from configuration and ``callbacks`` to the
  fleet's webhook receiver. Brightcove forbids two jobs on one video: a re-run after a crash
  first looks at the video's ``ingest_jobs`` and adopts the live one.
* await: CMS ``GET …/videos/{id}/ingest_jobs/{job}``: processing -> publishing -> published ->
  finished, or failed with ``error_code``/``error_message``. Any callback (DYNAMIC_RENDITION,
  TITLE, ...) only makes that poll due; the ingest job decides the state.
* limits: 20 req/s per account across CMS and DI, <= 10 requests a minute on one video,
  200 concurrent normal-priority jobs per account (``INGEST_BRIGHTCOVE_SLOTS``) and apart
  from them 100 low-priority ones (``INGEST_BRIGHTCOVE_LOW_SLOTS``); the slot is taken at
  submit - see tasks.config and docs/providers/brightcove.md.

Every CMS and DI call carries ``Content-Type: application/json`` as the references list it.

Settings: ``BrightcoveAdapter.account_settings`` (``ingest-fleet settings brightcove``).
"""

from __future__ import annotations

import json
import mimetypes
import os
import re
import time
from typing import Any, ClassVar
from urllib.parse import quote

import requests

from tasks import keys
from tasks.callbacks import callback_url
from tasks.declare import Setting, budget
from tasks.errors import ConfigError, PermanentError, TransientError, UploadSessionLost
from tasks.intent import IntentError, ValidatedIntent
from tasks.logs import register_secret
from tasks.providers.base import Adapter, Status, StepContext
from tasks.transfer import single_put_max
from tasks.transfer.s3 import (
    abort_multipart,
    forget_credentials,
    load_credentials,
    part_size_for,
    s3_client,
    store_credentials,
    upload_multipart_slice,
)

CREDENTIALS_TTL = 23 * 3600  # Brightcove's temporary credentials and URLs last 24 h
TOKEN_LOCK_SECONDS = 10
PROGRESS = {"processing": 10, "publishing": 50, "published": 90}
FIELDS_TTL = 300  # seconds the account's custom field definitions are trusted
JSON = {"Content-Type": "application/json"}


def _source_name(path: str) -> str:
    """The file name Brightcove accepts in upload-urls: no ``? & #`` or spaces."""
    name = re.sub(r"[?&#\s]+", "_", os.path.basename(path)) or "source"
    return name[:200]


def _field_map(account: Any) -> dict[str, str] | None:
    """``INGEST_BRIGHTCOVE_CUSTOM_FIELDS`` as {metadata key: custom field id}, or None when unset."""
    raw = account.setting("CUSTOM_FIELDS").strip()
    if not raw:
        return None
    mapping = {}
    for item in raw.split(","):
        key, sep, field_id = (part.strip() for part in item.partition(":"))
        if not key or not field_id or not sep:
            raise ConfigError(f"INGEST_BRIGHTCOVE_CUSTOM_FIELDS: {item.strip()!r} is not key:field_id; "
                              "write e.g. team:department,topic:subject")
        mapping[key] = field_id
    return mapping


def _field_problems(fields: dict[str, str], defined: dict[str, list[str] | None]) -> list[str]:
    """What the CMS would refuse: undefined fields and values outside an enum field's values."""
    problems = []
    for name, value in fields.items():
        if name not in defined:
            problems.append(f"{name!r} is not a custom field defined on the account")
        elif (values := defined[name]) is not None and value not in values:
            problems.append(f"{value!r} is not one of the values of custom field {name!r}: {', '.join(values)}")
    return problems


class BrightcoveAdapter(Adapter):
    name = "brightcove"
    title = "Brightcove Video Cloud (OAuth client credentials + CMS + Dynamic Ingest)"
    credential = "CLIENT_SECRET"
    account_settings = (
        Setting("CLIENT_ID", required=True, example="<client-id>"),
        Setting("CLIENT_SECRET", secret=True, example="<client-secret>"),
        Setting("ACCOUNT_ID", required=True, example="<video-cloud-account-id>"),
        Setting("OAUTH_URL", "https://oauth.brightcove.com"),
        Setting("BASE_URL", "https://cms.api.brightcove.com"),
        Setting("INGEST_URL", "https://ingest.api.brightcove.com"),
        Setting("S3_ENDPOINT", help="Only for an S3 stand-in (the sandbox); AWS otherwise."),
        # AWS advises multipart from about 100 MB.
        Setting("SINGLE_PUT_MAX", str(100 * 1000 * 1000), int,
                help="One PUT below this size (bytes), S3 multipart above."),
        Setting("PART_SIZE", str(16 * 1024 * 1024), int, help="S3 multipart part size (bytes)."),
        Setting("PROFILE", help="Sent with each ingest request when set (account default otherwise)."),
        Setting("CAPTURE_IMAGES", pattern=r"(?i)true|false|yes|no|1|0", hint="true or false",
                help="Whether ingest captures poster and thumbnail (unset: Brightcove's default)."),
        Setting("CUSTOM_FIELDS", pattern=r"[^,:]+:[^,:]+(,[^,:]+:[^,:]+)*",
                hint="key:field_id pairs, e.g. team:department,topic:subject",
                help="Intent metadata key -> CMS custom field id (key:field,...); unset: keys must be fields "
                     "defined on the account."),
        Setting("LOW_SLOTS", "100", int, help="Low-priority ingest jobs in flight per account (Brightcove's "
                                              "low-priority queue; 0 = no limit)."),
        # 20 req/s per account across CMS and Dynamic Ingest, <= 10 requests a minute on one video,
        # 200 concurrent normal-priority ingest jobs (Dynamic Ingest best practices).
        *budget(rate=20, slots=200, entity_rate=10 / 60),
    )
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
        # Each job has its own callback URL, so any DI notification on it is about the job's
        # video: DYNAMIC_RENDITION (documented for Dynamic Delivery), TITLE, ASSET, ... It only
        # makes the poll due; the CMS ingest job decides the state.
        return isinstance(payload, dict) and bool(payload.get("entityType") or payload.get("jobId")
                                                  or payload.get("videoId"))

    def validate(self, intent: ValidatedIntent) -> None:
        if len(intent.description) > 5000:
            raise IntentError("description", "Brightcove accepts at most 5000 characters (long_description)")
        if intent.idempotency_key and len(intent.idempotency_key) > 150:
            raise IntentError("idempotency_key", "Brightcove reference ids are at most 150 characters")

    def check_account(self, intent: ValidatedIntent, account: Any) -> None:
        try:
            mapping = _field_map(account)
        except ConfigError as exc:
            raise IntentError("account", str(exc)) from None
        for key in intent.metadata:
            if mapping is not None and key not in mapping:
                raise IntentError(f"metadata.{key}", "is not mapped to a Brightcove custom field; add it to "
                                   f"INGEST_BRIGHTCOVE_CUSTOM_FIELDS (now {account.setting('CUSTOM_FIELDS')!r})")

    def slot_pool(self, job: Any, account: Any) -> tuple[str, int]:
        if job.priority == "low":
            return "low", self._low_slots(account)
        return "", account.slots

    def slot_pools(self, account: Any) -> list[tuple[str, int]]:
        return [("", account.slots), ("low", self._low_slots(account))]

    @staticmethod
    def _low_slots(account: Any) -> int:
        return int(account.whole("LOW_SLOTS"))

    # -- OAuth -----------------------------------------------------------------------
    #: This process's copy of the fleet's tokens: (token, monotonic time it stops being used),
    #: by (Redis key, OAuth URL, client id). It never outlives the fleet's copy in Redis, so a
    #: call costs no Redis round trip for the token while it is fresh; a token an API refused
    #: (``stale``) is dropped here as well.
    _local_tokens: ClassVar[dict[tuple[str, str, str], tuple[str, float]]] = {}

    def _token(self, ctx: StepContext, *, stale: str | None = None) -> str:
        """The fleet's access token for this account; ``stale`` = the one an API refused."""
        key = keys.oauth_token(self.name, ctx.account.name)
        mine = (key, str(ctx.account.setting("OAUTH_URL")), str(ctx.account.setting("CLIENT_ID")))
        held = self._local_tokens.get(mine)
        if held and held[0] != stale and held[1] > time.monotonic():
            register_secret(held[0])  # still among this process's recent secrets while in use
            return held[0]
        self._local_tokens.pop(mine, None)
        cached = self._cached_token(ctx, key, mine)
        if cached and cached != stale:
            register_secret(cached)
            return cached
        # One refresh at a time across the fleet; the others wait for its result.
        locked = bool(ctx.redis.set(f"{key}:lock", 1, nx=True, ex=TOKEN_LOCK_SECONDS))
        if not locked:
            deadline = time.monotonic() + TOKEN_LOCK_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.1)
                cached = self._cached_token(ctx, key, mine)
                if cached and cached != stale:
                    return cached
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
        token, ttl = str(body["access_token"]), float(body.get("expires_in", 300))
        register_secret(token)
        # Renew 30 s before expiry (or at 80 % of a very short lifetime).
        keep = max(0.1, ttl - 30 if ttl > 60 else ttl * 0.8)
        ctx.redis.set(key, ctx.sealer.seal(token), px=int(keep * 1000))  # sealed at rest
        self._local_tokens[mine] = (token, time.monotonic() + keep)
        ctx.job.note("oauth.token", expires_in=ttl)
        return token

    def _cached_token(self, ctx: StepContext, key: str, mine: tuple[str, str, str]) -> str | None:
        """The fleet's cached token (None if absent, or sealed under a key since dropped),
        kept in this process for as long as it lives in Redis."""
        pipe = ctx.redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.pttl(key)
        sealed, pttl = pipe.execute()
        token = ctx.sealer.open(sealed) if sealed else None
        if token and int(pttl) > 0:
            self._local_tokens[mine] = (token, time.monotonic() + int(pttl) / 1000)
        return token

    def _api(self, ctx: StepContext, method: str, url: str, **kwargs: Any) -> requests.Response:
        """A CMS or DI call with the fleet's token; a 401 refreshes the token once."""
        token = self._token(ctx)
        try:
            return ctx.http("api").request(method, url, headers={"Authorization": f"Bearer {token}", **JSON}, **kwargs)
        except PermanentError as exc:
            if exc.status != 401:
                raise
        token = self._token(ctx, stale=token)
        return ctx.http("api").request(method, url, headers={"Authorization": f"Bearer {token}", **JSON}, **kwargs)

    def probe(self, ctx: StepContext) -> str:
        self._api(ctx, "GET", self._cms(ctx, "/video_fields"))  # an OAuth token, then a CMS read
        return "got an OAuth token and read the account's video fields"

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
            body["custom_fields"] = self._custom_fields(ctx)
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

    def _custom_fields(self, ctx: StepContext) -> dict[str, str]:
        """The job's metadata as the account's defined custom fields; PermanentError naming any other."""
        try:
            mapping = _field_map(ctx.account)
        except ConfigError as exc:
            raise PermanentError(str(exc), provider=self.name) from None
        fields = {}
        for key, value in ctx.job.metadata.items():
            if mapping is not None and key not in mapping:
                raise PermanentError(f"metadata key {key!r} is not mapped to a Brightcove custom field; add it to "
                                     "INGEST_BRIGHTCOVE_CUSTOM_FIELDS", provider=self.name)
            fields[mapping[key] if mapping is not None else key] = value
        problems = _field_problems(fields, self._defined_fields(ctx))
        if problems:  # perhaps defined since the definitions were cached: look once more
            problems = _field_problems(fields, self._defined_fields(ctx, fresh=True))
        if problems:
            raise PermanentError("metadata cannot be sent as Brightcove custom fields: " + "; ".join(problems) +
                                 ". Define the field in Video Cloud (Admin > Video Fields), map the key to a "
                                 "defined field with INGEST_BRIGHTCOVE_CUSTOM_FIELDS=key:field_id, or drop it",
                                 provider=self.name)
        return fields

    def _defined_fields(self, ctx: StepContext, *, fresh: bool = False) -> dict[str, list[str] | None]:
        """The account's custom fields (id -> enum values, None for free text), cached in Redis."""
        key = keys.video_fields(self.name, ctx.account.name)
        cached = None if fresh else ctx.redis.get(key)
        if cached:
            loaded: dict[str, list[str] | None] = json.loads(cached)
            return loaded
        body = self._api(ctx, "GET", self._cms(ctx, "/video_fields")).json()
        entries = body.get("custom_fields") if isinstance(body, dict) else None
        defined: dict[str, list[str] | None] = {}
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                values = entry.get("enum_values")
                enum = entry.get("type") == "enum" and isinstance(values, list)
                defined[entry["id"]] = [str(v) for v in values] if enum and isinstance(values, list) else None
        if not isinstance(entries, list):
            ctx.job.note("video_fields.unexpected", answer=str(body)[:200])
        ctx.redis.set(key, json.dumps(defined), ex=FIELDS_TTL)
        return defined

    # -- target ----------------------------------------------------------------------
    def obtain_upload_target(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.upload.get("key"):
            try:
                load_credentials(ctx.redis, job.id, sealer=ctx.sealer)
                return
            except UploadSessionLost:
                job.upload = {}
        vid = job.provider_ids["video_id"]
        name = _source_name(job.source)
        urls = self._api(ctx, "GET", self._di(ctx, f"/videos/{vid}/upload-urls/{quote(name)}"),
                         entity=f"video:{vid}").json()
        store_credentials(ctx.redis, job.id, {k: urls[k] for k in (
            "access_key_id", "secret_access_key", "session_token", "signed_url") if urls.get(k)},
            ttl=CREDENTIALS_TTL, sealer=ctx.sealer)
        single_max = single_put_max(ctx.settings, ctx.account.whole("SINGLE_PUT_MAX"))
        size = job.bytes_total or 0
        job.upload = {
            "protocol": "s3", "mode": "single" if size <= single_max else "multipart",
            "bucket": urls["bucket"], "key": urls["object_key"], "api_request_url": urls["api_request_url"],
            "part_size": part_size_for(size, ctx.account.whole("PART_SIZE")),
        }
        job.note("upload.target", mode=job.upload["mode"], bucket=urls["bucket"])

    # -- upload ----------------------------------------------------------------------
    def _s3(self, ctx: StepContext, creds: dict[str, str]) -> Any:
        return s3_client(creds, endpoint=ctx.account.setting("S3_ENDPOINT") or None,
                         timeouts=(ctx.settings.http_connect_timeout, ctx.settings.http_read_timeout))

    def upload_slice(self, ctx: StepContext) -> bool:
        job = ctx.job
        creds = load_credentials(ctx.redis, job.id, sealer=ctx.sealer)
        if job.upload["mode"] == "multipart":
            content_type = mimetypes.guess_type(job.source)[0] or "video/mp4"
            return upload_multipart_slice(ctx, client=self._s3(ctx, creds), bucket=job.upload["bucket"],
                                          key=job.upload["key"], content_type=content_type)
        # The signed_url is signature v2, which signs Content-Type: Brightcove signs none, so
        # the PUT sends none (a file body gets none from requests; None drops any default).
        with ctx.open_source() as f:  # streamed by requests, never read whole
            ctx.http("upload").request("PUT", creds["signed_url"], data=f, headers={"Content-Type": None})
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
        source = job.upload["api_request_url"] if job.mode == "push" else ctx.source_url()
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
                abort_multipart(self._s3(ctx, load_credentials(ctx.redis, ctx.job.id, sealer=ctx.sealer)), bucket=up["bucket"],
                                key=up["key"], upload_id=up["upload_id"])
                ctx.job.note("upload.aborted")
            finally:
                forget_credentials(ctx.redis, ctx.job.id)
