"""Brightcove Once: pull-only ingest, checked against Once's own JSON schema at submit.

Contract: shared/design/providers.md §2 and the seed ``brightcove-once-ingest.txt`` (its
draft-04 request schema is ``once_schema.json`` beside this file).

* The request body is built from the intent - ``foreignKey`` = the idempotency key,
  ``media.sourceURL``, ``title``, ``description``, ``keywords`` (tags), ``metadata``, and the
  options ``publicationRules``, ``cuePoints``, ``timedText``, ``notifications`` (JSON) - and
  validated against the schema **when the intent is submitted**: every schema error is
  reported as the intent field it came from (exit 2, nothing enqueued). Enum values are sent
  in the schema's casing.
* Pull only: a URL source is passed as is; a local file is first staged into the S3 bucket
  the operator configures (``INGEST_ONCE_STAGING_BUCKET``; resumable multipart, as for
  Brightcove) and passed as ``s3://BUCKET/KEY`` (the bucket policy must let Once and
  Zencoder read it - see the README).
* ``foreignKey`` is Once's identity of a media item: posting it again updates that item, so
  a re-run after a crash never creates a second one.
* The ingest API has no status endpoint. The job says so honestly (``processing``, provider
  status "submitted, awaiting notification"); it completes from Once's notifications to the
  fleet's webhook receiver and, unless ``INGEST_ONCE_MEDIA_POLL=false``, from polling the
  media-management API for the item. A job that hears nothing for ``INGEST_ONCE_NOTIFY_DEADLINE``
  seconds (default 3600) fails with that reason.
"""

from __future__ import annotations

import json
import os
import re
import time
from functools import lru_cache
from importlib import resources
from typing import Any

import requests
from jsonschema import Draft4Validator

from tasks.errors import PermanentError
from tasks.intent import IntentError, ValidatedIntent
from tasks.providers.base import Adapter, Status, StepContext
from tasks.transfer.s3 import part_size_for, s3_client, upload_multipart_slice
from workers.config import AccountConfig
from workers.webhooks import callback_url, webhook_events

#: Which intent field each top-level request field comes from (for error messages).
FIELD_OF = {"foreignKey": "idempotency_key", "media": "source", "title": "title", "description": "description",
            "keywords": "tags", "metadata": "metadata", "publicationRules": "options.publicationRules",
            "cuePoints": "options.cuePoints", "timedText": "options.timedText",
            "notifications": "options.notifications"}
JSON_OPTIONS = ("publicationRules", "cuePoints", "timedText", "notifications")
_EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\uFE0F\u200D]")
DEFAULT_NOTIFY_DEADLINE = 3600.0
DEFAULT_PART_SIZE = 16 * 1024 * 1024


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
    intent_options = {name: list for name in JSON_OPTIONS}

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

    def needs(self, step: str, job: Any) -> bool:
        if step == "create":
            return False  # the foreignKey is the entity
        return super().needs(step, job)

    # -- staging (local files) -----------------------------------------------------------
    def _bucket(self, ctx: StepContext) -> str:
        bucket = ctx.account.setting("STAGING_BUCKET")
        if not bucket:
            raise PermanentError("a local file must be staged in S3 for Once: set INGEST_ONCE_STAGING_BUCKET")
        return bucket

    def _s3(self, ctx: StepContext) -> Any:
        key_id = ctx.account.setting("STAGING_ACCESS_KEY_ID")
        creds = {"access_key_id": key_id, "secret_access_key": ctx.account.setting("STAGING_SECRET_ACCESS_KEY")} \
            if key_id else None
        return s3_client(creds, endpoint=ctx.account.setting("S3_ENDPOINT") or None,
                         region=ctx.account.setting("STAGING_REGION", "us-east-1"),
                         timeouts=(ctx.settings.http_connect_timeout, ctx.settings.http_read_timeout))

    def obtain_upload_target(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.upload.get("key"):
            return
        wanted = int(float(ctx.account.setting("PART_SIZE", str(DEFAULT_PART_SIZE))))
        job.upload = {"protocol": "s3", "mode": "multipart", "bucket": self._bucket(ctx),
                      "key": f"ingest-fleet/{job.id}/{os.path.basename(job.source)}",
                      "part_size": part_size_for(job.bytes_total or 0, wanted)}

    def upload_slice(self, ctx: StepContext) -> bool:
        up = ctx.job.upload
        return upload_multipart_slice(ctx, client=self._s3(ctx), bucket=up["bucket"], key=up["key"],
                                      content_type="video/mp4")

    # -- submit ----------------------------------------------------------------------
    def submit_ingest(self, ctx: StepContext) -> None:
        job = ctx.job
        if job.provider_ids.get("request_id"):
            return
        source = job.source if job.mode == "pull" else f"s3://{job.upload['bucket']}/{job.upload['key']}"
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
        for event in webhook_events(ctx.redis, job.id):
            kind, status = str(event.get("event", "")).lower(), str(event.get("status", "")).lower()
            if kind == "error" or status == "error":
                return Status("failed", message=event.get("message") or "Once reported an error",
                              provider_state="error")
            if kind == "publish" and status == "success":
                job.provider_ids.setdefault("media_item_id", event.get("mediaItemId"))
                return Status("ready", 100, provider_state="published")
        if ctx.account.setting("MEDIA_POLL", "true").lower() not in ("0", "false", "no"):
            item = self._media_item(ctx)
            if item:
                job.provider_ids.setdefault("media_item_id", item.get("id"))
                state = str(item.get("status", "")).lower()
                if state == "published":
                    return Status("ready", 100, provider_state=state)
                if state == "error":
                    return Status("failed", message=item.get("error") or "Once reported an error",
                                  provider_state=state)
        waited = time.time() - job.provider_ids.get("awaiting_since", time.time())
        deadline = float(ctx.account.setting("NOTIFY_DEADLINE", str(DEFAULT_NOTIFY_DEADLINE)))
        if waited > deadline:
            raise PermanentError(f"submitted to Once, but no publication notice within {deadline:g} s "
                                 "(INGEST_ONCE_NOTIFY_DEADLINE)")
        return Status("processing", provider_state="submitted, awaiting notification")

    def _media_item(self, ctx: StepContext) -> dict | None:
        url = (f"{ctx.account.base_url}/media-management-api/domains/{ctx.account.setting('DOMAIN_ID')}"
               f"/catalogs/{ctx.account.setting('CATALOG_ID')}/mediaItems")
        listing = ctx.http("api").request("GET", url, params={"foreignKey": ctx.job.idempotency_key}).json()
        items = [i for i in listing.get("items", []) if i.get("foreignKey") == ctx.job.idempotency_key]
        return items[0] if items else None
