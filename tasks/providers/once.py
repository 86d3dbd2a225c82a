"""Brightcove Once: pull-only ingest, checked against Once's own JSON schema at submit.

Contract: shared/design/providers.md §2 and the seed ``brightcove-once-ingest.txt`` (its
draft-04 request schema is ``once_schema.json`` beside this file).

* The request body is built from the intent - ``foreignKey`` = the idempotency key,
  ``media.sourceURL``, ``title``, ``description``, ``keywords`` (tags), ``metadata``, and the
  options ``publicationRules``, ``cuePoints``, ``timedText``, ``notifications`` (JSON) - and
  validated against the schema **when the intent is submitted**: every schema error is
  reported as the intent field it came from (exit 2, nothing enqueued). Enum values are sent
  in the schema's casing.
* Pull only: a URL source (``http``, ``https`` or ``s3://BUCKET/KEY`` - the seed's "Using S3
  buckets": the bucket's policy must let Once and Zencoder read it) is passed as is; a local
  file is first staged into the S3 bucket the operator configures (resumable multipart, as
  for Brightcove) and passed as ``s3://BUCKET/KEY``. Staging needs
  ``INGEST_ONCE_STAGING_BUCKET``, ``INGEST_ONCE_STAGING_ACCESS_KEY_ID`` and
  ``INGEST_ONCE_STAGING_SECRET_ACCESS_KEY`` (optional ``_STAGING_REGION``, ``_S3_ENDPOINT``):
  a push without them is refused at submit, and a credential S3 refuses at run time
  (``NoCredentialsError``, ``InvalidAccessKeyId``, ``AccessDenied``, ``SignatureDoesNotMatch``)
  fails the job at once, naming the settings - never a retry.
* ``foreignKey`` is Once's identity of a media item: posting it again updates that item, so
  a re-run after a crash never creates a second one.
* The ingest API has no status endpoint. The job's state comes from the Media Management API
  (BCL-API-References ``once-media-management-api/v1/src/media-item.js``): the collection
  ``GET .../mediaItems`` (``{"results", "prev", "next", "totalResults"}``, 20 a page, no
  documented filter) is paged - at most ``MEDIA_PAGES_PER_POLL`` pages a poll, resuming at
  the next poll - until the item with the job's ``foreignKey`` is found; from then on
  ``GET .../mediaItems/{id}``. The item documents ``draftVersion`` and ``publishedVersion``
  and no status: the job is ready once ``publishedVersion`` >= max(``draftVersion``, 1)
  (*assumed* reading). Nothing documented says an ingest failed, so an answer of another
  shape is noted in the job history (once per distinct shape) and the job keeps waiting.
* Once's notifications (to the fleet's webhook receiver, ``notificationType: any``) have no
  documented payload: one only makes the job's poll due now; its content never decides the
  state. A job whose item is not published within ``INGEST_ONCE_NOTIFY_DEADLINE`` seconds
  (default 3600) fails with that reason, quoting the last notification it received.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar, TypeGuard
from urllib.parse import urlsplit

import requests
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError
from jsonschema import Draft4Validator

from tasks.callbacks import EVENT_MAX, callback_url, webhook_events
from tasks.config import AccountConfig
from tasks.declare import Setting, budget
from tasks.errors import PermanentError, StepError
from tasks.intent import IntentError, ValidatedIntent
from tasks.providers.base import Adapter, Status, StepContext
from tasks.transfer.s3 import part_size_for, s3_client, upload_multipart_slice

#: Which intent field each top-level request field comes from (for error messages).
FIELD_OF = {"foreignKey": "idempotency_key", "media": "source", "title": "title", "description": "description",
            "keywords": "tags", "metadata": "metadata", "publicationRules": "options.publicationRules",
            "cuePoints": "options.cuePoints", "timedText": "options.timedText",
            "notifications": "options.notifications"}
JSON_OPTIONS = ("publicationRules", "cuePoints", "timedText", "notifications")
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F\u200D]")
MEDIA_PAGES_PER_POLL = 10  # 200 items a poll at most; the next poll resumes where this one stopped
STAGING_SETTINGS = ("STAGING_BUCKET", "STAGING_ACCESS_KEY_ID", "STAGING_SECRET_ACCESS_KEY")
#: S3's answers that mean the staging credentials (or the bucket's policy) are wrong.
CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "AccessDenied", "SignatureDoesNotMatch", "InvalidToken",
                              "ExpiredToken"})


def staging_fix(account: AccountConfig) -> str:
    names = ", ".join(account.var(n) for n in STAGING_SETTINGS)
    return (f"set {names} to a bucket Once can read and a key pair that may write to it "
            "(`ingest-fleet sandbox` prints them for the sandbox)")


@lru_cache(maxsize=1)
def _validator() -> Draft4Validator:
    schema = json.loads(resources.files("tasks.providers").joinpath("once_schema.json").read_text())
    return Draft4Validator(schema)


def build_body(*, foreign_key: str, source_url: str, title: str, description: str, tags: list[str],
               metadata: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"foreignKey": foreign_key, "media": {"sourceURL": source_url}, "title": title}
    if description:
        body["description"] = description
    if tags:
        body["keywords"] = list(tags)
    if metadata:
        body["metadata"] = dict(metadata)
    for name in JSON_OPTIONS:
        if name in options:
            body[name] = options[name]
    return body


def schema_errors(body: dict[str, Any]) -> list[tuple[str, str]]:
    """Every problem of ``body`` as (intent field, message naming the request field)."""
    problems = []
    for error in sorted(_validator().iter_errors(body), key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        top = str(path[0]) if path else (error.message.split("'")[1] if "'" in error.message else "")
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or top
        problems.append((FIELD_OF.get(top, top or "intent"), f"{where}: {error.message}"))
    for name in ("title", "description"):
        if _EMOJI.search(body.get(name) or ""):
            problems.append((name, f"{name}: Once does not allow emoji; remove them"))
    return problems


class OnceAdapter(Adapter):
    name = "once"
    title = "Brightcove Once (pull-only; local files are staged in your S3 bucket first)"
    account_settings = (
        Setting("API_KEY", secret=True, example="<once-api-key>"),
        Setting("DOMAIN_ID", required=True, example="<domain-id>"),
        Setting("CATALOG_ID", required=True, example="<catalog-id>"),
        Setting("BASE_URL", "https://api.unicornmedia.com"),
        Setting("STAGING_BUCKET", example="<bucket>", help="Where local files are staged for Once to pull."),
        Setting("STAGING_REGION", "us-east-1"),
        Setting("STAGING_ACCESS_KEY_ID", secret=True, example="<aws-access-key-id>",
                help="With the secret below: a key pair that may write to the bucket (local files only)."),
        Setting("STAGING_SECRET_ACCESS_KEY", secret=True, example="<aws-secret-access-key>"),
        Setting("S3_ENDPOINT", help="Only for an S3 stand-in (the sandbox)."),
        Setting("PART_SIZE", str(16 * 1024 * 1024), int, help="S3 multipart part size of the staging upload."),
        Setting("NOTIFY_DEADLINE", "3600", float, help="The media-management API decides the state; a job never "
                                                       "published fails after this many s."),
        # No published numbers: a conservative default, to be set per account.
        *budget(rate=5),
    )
    intent_options: ClassVar[dict[str, type]] = {name: list for name in JSON_OPTIONS}
    pull_schemes = frozenset({"http", "https", "s3"})

    def auth_headers(self, account: AccountConfig) -> dict[str, str]:
        return {"X-BC-ONCE-API-KEY": account.secret}

    def error_text(self, resp: requests.Response) -> str:
        """``{"requestId", "error": "Validation Errors", "fieldErrors": {field: [msg]}}``."""
        try:
            body = resp.json()
        except ValueError:
            return (resp.text or resp.reason or "")[:300]
        if isinstance(body, dict) and body.get("fieldErrors"):
            fields = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in body["fieldErrors"].items())
            return f"{body.get('error', 'Validation Errors')}: {fields}"[:500]
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])[:300]
        return str(body)[:300]

    def validate(self, intent: ValidatedIntent) -> None:
        source = intent.source if intent.mode == "pull" else "s3://staging-bucket/staged-object"
        body = build_body(foreign_key=intent.idempotency_key or "0" * 32, source_url=source, title=intent.title,
                          description=intent.description, tags=intent.tags, metadata=intent.metadata,
                          options=intent.options)
        problems = schema_errors(body)
        if problems:
            field, message = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise IntentError(field, f"Once's schema refuses it: {message}{more}")

    def check_account(self, intent: ValidatedIntent, account: AccountConfig) -> None:
        if intent.mode != "push":
            return
        missing = [account.var(n) for n in STAGING_SETTINGS if not account.setting(n)]
        if missing:
            raise IntentError("source", f"a local file is staged in S3 before Once pulls it, but "
                                        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; "
                                        f"{staging_fix(account)}, or give an http(s) or s3:// URL")

    def webhook_refusal(self, raw: bytes, payload: Any) -> tuple[int, str] | None:
        # The payload is undocumented: it is kept whole (for the job's error message) or not at all.
        if not isinstance(payload, dict):
            return 400, "a Once notification is a JSON object"
        if len(json.dumps(payload)) > EVENT_MAX:
            return 413, f"notification larger than {EVENT_MAX} bytes"
        return None

    def needs(self, step: str, job: Any) -> bool:
        if step == "create":
            return False  # the foreignKey is the entity
        return super().needs(step, job)

    # -- staging (local files) -----------------------------------------------------------
    def _staging(self, ctx: StepContext) -> dict[str, str]:
        """The staging settings of this worker; a missing one fails the job, naming it."""
        values = {n: ctx.account.setting(n) for n in STAGING_SETTINGS}
        missing = [ctx.account.var(n) for n, v in values.items() if not v]
        if missing:
            raise PermanentError(f"this worker cannot stage the file in S3 for Once: {', '.join(missing)} "
                                 f"not set; {staging_fix(ctx.account)}")
        return values

    def _bucket(self, ctx: StepContext) -> str:
        return self._staging(ctx)["STAGING_BUCKET"]

    def _s3(self, ctx: StepContext) -> Any:
        staging = self._staging(ctx)
        creds = {"access_key_id": staging["STAGING_ACCESS_KEY_ID"],
                 "secret_access_key": staging["STAGING_SECRET_ACCESS_KEY"]}
        return s3_client(creds, endpoint=ctx.account.setting("S3_ENDPOINT") or None,
                         region=ctx.account.setting("STAGING_REGION"),
                         timeouts=(ctx.settings.http_connect_timeout, ctx.settings.http_read_timeout))

    def obtain_upload_target(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.upload.get("key"):
            return
        wanted = ctx.account.whole("PART_SIZE")
        job.upload = {"protocol": "s3", "mode": "multipart", "bucket": self._bucket(ctx),
                      "key": f"ingest-fleet/{job.id}/{os.path.basename(job.source)}",
                      "part_size": part_size_for(job.bytes_total or 0, wanted)}

    def upload_slice(self, ctx: StepContext) -> bool:
        up = ctx.job.upload
        try:
            return upload_multipart_slice(ctx, client=self._s3(ctx), bucket=up["bucket"], key=up["key"],
                                          content_type="video/mp4")
        except StepError as exc:
            # The shared S3 helper calls a refused credential transient (or a lost session, as
            # for Brightcove's temporary ones); the staging keys are the operator's: permanent.
            cause = exc.__context__
            refused = isinstance(cause, (NoCredentialsError, PartialCredentialsError)) or (
                isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in CREDENTIAL_CODES)
            if refused:
                raise PermanentError(f"{exc}: the staging credentials were refused; {staging_fix(ctx.account)}",
                                     status=exc.status) from None
            raise

    # -- submit ----------------------------------------------------------------------
    def submit_ingest(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.provider_ids.get("request_id"):
            return
        source = ctx.source_url() if job.mode == "pull" else f"s3://{job.upload['bucket']}/{job.upload['key']}"
        body = build_body(foreign_key=job.idempotency_key, source_url=source, title=job.title,
                          description=job.description, tags=job.tags, metadata=job.metadata, options=job.options)
        hook = callback_url(ctx.settings, self.name, job.id)
        if hook:
            body.setdefault("notifications", []).append({"target": hook, "notificationType": "any"})
        problems = schema_errors(body)
        if problems:  # validated at submit already; this catches a changed configuration
            raise PermanentError("; ".join(m for _, m in problems))
        url = (f"{ctx.account.base_url}/ingest-api/{ctx.account.setting('DOMAIN_ID')}"
               f"/catalogs/{ctx.account.setting('CATALOG_ID')}")
        answer = ctx.http("api").request("POST", url, json=body).json()
        job.provider_ids.update(request_id=answer.get("requestId"), foreign_key=job.idempotency_key,
                                notifications=bool(hook))
        job.note("ingest.requested", request_id=answer.get("requestId"), notifications=bool(hook))

    # -- await -----------------------------------------------------------------------
    def poll_status(self, ctx: StepContext) -> Status:
        job = ctx.job
        item = self._media_item(ctx)
        state = "submitted, awaiting publication"
        if item is not None:
            draft, published = item.get("draftVersion"), item.get("publishedVersion")
            if _version(draft) and _version(published):
                if published >= max(draft, 1):
                    return Status("ready", 100, provider_state=f"published version {published}")
                state = f"draft version {draft}, published {published or 'none'}"
            else:
                self._unexpected(job, "item", item)
        waited = ctx.now() - job.provider_ids.get("awaiting_since", ctx.now())
        deadline = ctx.account.number("NOTIFY_DEADLINE")
        if waited > deadline:
            events = webhook_events(ctx.redis, job.id) if ctx.redis is not None else []
            heard = f"; the last notification (unverified) said: {json.dumps(events[-1])[:300]}" if events else \
                "; no notification was received"
            raise PermanentError(f"submitted to Once, but the media item was not published within {deadline:g} s "
                                 f"(INGEST_ONCE_NOTIFY_DEADLINE){heard}")
        return Status("processing", provider_state=state)

    def probe(self, ctx: StepContext) -> str:
        base = (f"{ctx.account.base_url}/media-management-api/domains/{ctx.account.setting('DOMAIN_ID')}"
                f"/catalogs/{ctx.account.setting('CATALOG_ID')}/mediaItems")
        ctx.http("api").request("GET", base)
        return "read the catalog's media items"

    def _media_item(self, ctx: StepContext) -> dict[str, Any] | None:
        """The job's media item: by id once known, else found in the collection by foreignKey."""
        job = ctx.job
        base = (f"{ctx.account.base_url}/media-management-api/domains/{ctx.account.setting('DOMAIN_ID')}"
                f"/catalogs/{ctx.account.setting('CATALOG_ID')}/mediaItems")
        item_id = job.provider_ids.get("media_item_id")
        if item_id:
            resp = ctx.http("api").request("GET", f"{base}/{item_id}", allow=(404,))
            item = _json_of(resp)
            if resp.status_code == 200 and isinstance(item, dict):
                return item
            self._unexpected(job, f"item {resp.status_code}", item)
            job.provider_ids.pop("media_item_id", None)  # look it up again in the collection
            return None
        url = job.provider_ids.get("media_scan") or base
        for _ in range(MEDIA_PAGES_PER_POLL):
            page = _json_of(ctx.http("api").request("GET", url))
            results = page.get("results") if isinstance(page, dict) else None
            if not isinstance(results, list):
                self._unexpected(job, "collection", page)
                job.provider_ids.pop("media_scan", None)
                return None
            for item in results:
                if isinstance(item, dict) and item.get("foreignKey") == job.idempotency_key:
                    job.provider_ids.pop("media_scan", None)
                    job.provider_ids["media_item_id"] = item.get("id")
                    job.note("once.media_item", id=item.get("id"))
                    return item
            following = page.get("next")
            if not following or not _same_origin(following, base) or following == url:
                if following:
                    self._unexpected(job, "next", following)
                job.provider_ids.pop("media_scan", None)  # the whole collection read: from page 1 next poll
                return None
            url = following
        job.provider_ids["media_scan"] = url
        return None

    def _unexpected(self, job: Any, what: str, answer: Any) -> None:
        """Note an answer of a shape the reference does not document, once per distinct shape."""
        text = json.dumps(answer, sort_keys=True, default=str)[:300]
        if job.provider_ids.get("unexpected") != f"{what}: {text}":
            job.provider_ids["unexpected"] = f"{what}: {text}"
            job.note("once.unexpected_answer", what=what, answer=text)


def _version(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _json_of(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return (resp.text or "")[:300]


def _same_origin(url: str, base: str) -> bool:
    """The API key goes only where the configured base URL points."""
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)
