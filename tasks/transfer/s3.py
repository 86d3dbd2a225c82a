"""S3 uploads that any worker can resume: one streamed PUT to a presigned URL, or a
multipart upload driven with boto3's low-level calls.

A managed boto3 transfer (``upload_file``) cannot resume in another process
(shared/design/uploads.md §4), so the multipart session is kept in the job record:
``upload_id``, ``part_size`` and every finished part's number, size and ETag, checkpointed
after each part. A new worker reconciles that record with ``ListParts`` (a part that was
uploaded but not yet checkpointed when a worker died is adopted, not sent again), uploads the
missing parts, and completes with the parts sorted by number. Where ``ListParts`` is denied
(upload-only credentials) it resumes from the checkpointed parts alone.

Up to :data:`PARTS_IN_FLIGHT` parts are sent at once (as boto3's own transfers do), each
checkpointed as it finishes: the worker hashes and signs one part while the store takes
another, and memory stays bounded by that many parts. A crash re-sends at most the parts
that were in flight (fewer where ``ListParts`` adopts them).

Temporary credentials and presigned URLs are secrets: they live only in a Redis key of their
own that expires with them (:func:`store_credentials`), never in the job record, a message or
a log line. When they are gone the session is lost and the upload target is obtained anew.

Example::

    store_credentials(redis, job.id, {"access_key_id": ..., ...}, ttl=23 * 3600, sealer=sealer)
    done = upload_multipart_slice(ctx, client=s3_client(...), bucket=..., key=..., part_size=8 << 20)
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import math
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tasks import keys
from tasks.errors import PermanentError, StepError, Throttled, TransientError, UploadSessionLost
from tasks.logs import register_secret
from tasks.sealed import Sealer
from tasks.transfer.source import read_range, size_of

MIN_PART = 5 * 1024 * 1024  # S3's minimum for every part but the last
#: Parts sent at once by one upload slice (memory: that many parts, plus the one being read).
PARTS_IN_FLIGHT = 4
MAX_PARTS = 10_000
_SESSION_LOST = {"NoSuchUpload", "ExpiredToken", "InvalidAccessKeyId", "AccessDenied", "SignatureDoesNotMatch",
                 "TokenRefreshRequired", "InvalidToken"}


def _secret_key(job_id: str) -> str:
    return keys.upload_secret(job_id)


def store_credentials(redis: Any, job_id: str, values: dict[str, str], *, ttl: int, sealer: Sealer) -> None:
    """Keep an upload's secrets in their own key, sealed (tasks.sealed), expiring with them."""
    for value in values.values():
        register_secret(value)
    key = _secret_key(job_id)
    pipe = redis.pipeline()
    pipe.delete(key)
    pipe.hset(key, mapping={name: sealer.seal(value) for name, value in values.items()})
    pipe.expire(key, ttl)
    pipe.execute()


def load_credentials(redis: Any, job_id: str, *, sealer: Sealer) -> dict[str, str]:
    """The upload's secrets; :class:`UploadSessionLost` when they expired, were lost, or no key
    of INGEST_SECRET_KEY opens them any more."""
    raw = redis.hgetall(_secret_key(job_id))
    values = {k.decode(): sealer.open(v) for k, v in raw.items()}
    if not values or None in values.values():
        raise UploadSessionLost("the upload credentials expired, were lost or cannot be opened with "
                                "INGEST_SECRET_KEY; a new upload target is needed")
    opened = {k: v for k, v in values.items() if v is not None}
    for value in opened.values():
        register_secret(value)
    return opened


def forget_credentials(redis: Any, job_id: str) -> None:
    redis.delete(_secret_key(job_id))


def part_size_for(size: int, wanted: int) -> int:
    """At least 5 MiB, and large enough that the file fits in 10,000 parts."""
    return max(MIN_PART, wanted, math.ceil(size / MAX_PARTS))


def s3_client(creds: dict[str, str] | None, *, endpoint: str | None, region: str = "us-east-1",
              timeouts: tuple[float, float]) -> Any:
    """An S3 client with these credentials, or boto3's own chain (env, role) when None."""
    creds = creds or {}
    return boto3.session.Session().client(
        "s3", region_name=region, endpoint_url=endpoint or None,
        aws_access_key_id=creds.get("access_key_id"), aws_secret_access_key=creds.get("secret_access_key"),
        aws_session_token=creds.get("session_token") or None,
        config=Config(connect_timeout=timeouts[0], read_timeout=timeouts[1], retries={"max_attempts": 1},
                      signature_version="s3v4", s3={"addressing_style": "path" if endpoint else "auto"},
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"),
    )


def classify(exc: Exception, what: str) -> StepError:
    """An S3 failure as the fleet classifies it."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = f"S3 {what}: {code}: {exc.response.get('Error', {}).get('Message', '')}".strip()
        if code in _SESSION_LOST:
            return UploadSessionLost(message, status=status)
        if code in ("SlowDown", "RequestLimitExceeded") or status == 429:
            return Throttled(message, retry_after=1.0, status=status)
        # BadDigest: the part arrived damaged (its Content-MD5 did not match): send it again.
        if (status and status >= 500) or code in ("RequestTimeout", "InternalError", "BadDigest"):
            return TransientError(message, status=status)
        return PermanentError(message, status=status)
    return TransientError(f"S3 {what}: {type(exc).__name__}: {exc}")


def _call(what: str, fn: Any, **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise classify(exc, what) from None


def _listed_parts(client: Any, bucket: str, key: str, upload_id: str) -> dict[int, tuple[int, str]] | None:
    """The parts S3 holds, or None when ListParts is denied (credentials scoped to the upload
    calls, as Brightcove's temporary ones may be): the caller then trusts its checkpoint."""
    parts: dict[int, tuple[int, str]] = {}
    marker = 0
    while True:
        try:
            page = client.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "AccessDenied":
                return None
            raise classify(exc, "ListParts") from None
        except BotoCoreError as exc:
            raise classify(exc, "ListParts") from None
        for p in page.get("Parts", []):
            parts[p["PartNumber"]] = (p["Size"], p["ETag"])
        if not page.get("IsTruncated"):
            return parts
        marker = page["NextPartNumberMarker"]


def upload_multipart_slice(ctx: Any, *, client: Any, bucket: str, key: str, content_type: str) -> bool:
    """Send parts until the upload is complete (True) or the slice's time is up (False)."""
    job, up = ctx.job, ctx.job.upload
    with ctx.open_source() as f:
        size = size_of(f)
        part_size = int(up["part_size"])
        total = max(1, math.ceil(size / part_size))
        if not up.get("upload_id"):
            created = _call("CreateMultipartUpload", client.create_multipart_upload, Bucket=bucket, Key=key,
                            ContentType=content_type)
            up["upload_id"], up["parts"] = created["UploadId"], []
            job.note("upload.multipart", parts=total, part_size=part_size)
            ctx.checkpoint()
        listed = None if up.get("list_parts") == "denied" else _listed_parts(client, bucket, key, up["upload_id"])
        if listed is None:
            # Resume from the checkpoint alone: a part sent but not checkpointed is sent again
            # (same number, so S3 keeps the newer copy). A session that is really lost fails
            # its next UploadPart with AccessDenied and the target is obtained anew.
            if up.get("list_parts") != "denied":
                up["list_parts"] = "denied"
                job.note("upload.list_parts_denied", parts=len(up.get("parts", [])))
            listed = {p["n"]: (p["size"], p["etag"]) for p in up.get("parts", [])}
        expected = {n: min(part_size, size - (n - 1) * part_size) for n in range(1, total + 1)}
        done = {n: (s, etag) for n, (s, etag) in listed.items() if expected.get(n) == s}
        adopted = sorted(set(done) - {p["n"] for p in up.get("parts", [])})
        up["parts"] = [{"n": n, "size": s, "etag": etag} for n, (s, etag) in sorted(done.items())]
        if adopted:
            job.note("upload.parts_adopted", parts=adopted)  # sent before a crash, not checkpointed
        job.bytes_done = sum(p["size"] for p in up["parts"])

        def send(n: int, data: bytes) -> str:
            # Content-MD5: S3 refuses a part that arrives damaged (BadDigest) instead of storing it.
            answer = _call("UploadPart", client.upload_part, Bucket=bucket, Key=key, UploadId=up["upload_id"],
                           PartNumber=n, Body=data, ContentLength=len(data),
                           ContentMD5=base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode())
            return str(answer["ETag"])

        def sent(n: int, length: int, etag: str) -> None:
            up["parts"].append({"n": n, "size": length, "etag": etag})
            job.bytes_done += length
            ctx.progress()

        todo = [(n, (n - 1) * part_size, expected[n]) for n in range(1, total + 1) if n not in done]
        if not send_parts(ctx, f, todo, send, sent):
            return False
        parts = sorted(up["parts"], key=lambda p: p["n"])
        _call("CompleteMultipartUpload", client.complete_multipart_upload, Bucket=bucket, Key=key,
              UploadId=up["upload_id"],
              MultipartUpload={"Parts": [{"PartNumber": p["n"], "ETag": p["etag"]} for p in parts]})
        return True


def send_parts(ctx: Any, f: Any, parts: list[tuple[int, int, int]], send: Any, sent: Any,
               in_flight: int = PARTS_IN_FLIGHT) -> bool:
    """Send ``parts`` (number, offset, length) of ``f``, up to ``in_flight`` at once:
    ``send(n, data)`` in a thread of its own, ``sent(n, length, result)`` here, in the step's
    thread, as each finishes (its checkpoint). False when the slice's time ran out first (the
    parts in flight are finished and recorded); a failed part raises its error once the others
    in flight are recorded, so a retry sends only what is missing."""
    pending: dict[Future[Any], tuple[int, int]] = {}
    failure: BaseException | None = None
    recorded = 0

    def settle(finished: set[Future[Any]]) -> None:
        nonlocal failure, recorded
        for future in sorted(finished, key=lambda fut: pending[fut][0]):
            n, length = pending.pop(future)
            try:
                result = future.result()
            except BaseException as exc:  # the first error is raised once all are settled
                failure = failure or exc
                continue
            sent(n, length, result)
            recorded += 1

    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="part") as pool:
        try:
            for n, offset, length in parts:
                if failure is not None or ctx.time_left() <= 0:
                    break
                while len(pending) >= in_flight:
                    settle(wait(pending, return_when=FIRST_COMPLETED).done)
                data = read_range(f, offset, length)
                # Each part runs in a copy of this context: its log lines keep the job's fields.
                pending[pool.submit(contextvars.copy_context().run, send, n, data)] = (n, length)
            while pending:
                settle(wait(pending).done)
        finally:
            for future in pending:
                future.cancel()
    if failure is not None:
        raise failure
    return recorded == len(parts)


def abort_multipart(client: Any, *, bucket: str, key: str, upload_id: str) -> None:
    _call("AbortMultipartUpload", client.abort_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id)
