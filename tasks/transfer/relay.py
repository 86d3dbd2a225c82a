"""Relayed sources (issue 15): a URL or an S3 object read by the workers in ranges and fed to a
provider's push protocol, so a source need not be on any worker's disk.

:class:`RangeReader` is a read-only, seekable file over a :class:`Remote` (HTTP ``Range`` or S3
``GetObject`` with ``Range``): the push code of every adapter reads it as it reads a local file.
It holds one block at a time, so memory stays constant whatever the size. The source's size
and validator (ETag, else Last-Modified) are recorded at the first read (the job's
``source_stat``) and every later read is made conditional on them (``If-Match`` /
``If-Unmodified-Since``): a source that changed fails the job, permanent, saying so.

A server that ignores ``Range`` (a whole 200 answer to a ranged GET) is accepted only for a
source that fits in one block: the reader keeps it whole (from the slice's offset on), so it
is read once per slice; a larger one is refused with the reason.
"""

from __future__ import annotations

import io
import ssl
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import requests
import urllib3
from botocore.exceptions import ClientError

from tasks.errors import PermanentError, TransientError

#: Bytes fetched ahead for small reads (a streamed PUT reads 8-16 KiB at a time).
BLOCK = 16 * 1024 * 1024
#: A read at least this large (a TUS chunk, an S3 part) fetches exactly what it asks: chunked
#: protocols then read the source chunk by chunk, so a slice that ends on a chunk boundary (and
#: a resume at the provider's offset) reads nothing twice.
DIRECT = 1024 * 1024


class Remote(Protocol):
    size: int
    validator: dict[str, str]

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` (inclusive) of the source as first read."""
        ...  # pragma: no cover


def changed(what: str) -> PermanentError:
    return PermanentError(f"source changed since its first read ({what}); submit it again")


class HttpRemote:
    """An http(s) source read with ranged GETs through ``session`` (a guarded one: netguard)."""

    def __init__(self, url: str, session: requests.Session, *, timeout: tuple[float, float],
                 expected: dict[str, Any] | None = None, shown: str = ""):
        self.url, self.session, self.timeout = url, session, timeout
        self.shown = shown or url  # how the URL may appear in a message (credentials masked)
        resp = self._call("HEAD", {})
        if resp.status_code >= 400:
            raise self._error(resp)
        try:
            self.size = int(resp.headers["Content-Length"])
        except (KeyError, ValueError):
            raise PermanentError(f"{self.shown} gives no Content-Length: its size is needed to relay it") from None
        self.validator = {k: v for k, v in (("etag", resp.headers.get("ETag")),
                                            ("last_modified", resp.headers.get("Last-Modified"))) if v}
        self.ranges = resp.headers.get("Accept-Ranges", "").lower() == "bytes"
        if expected:
            if int(expected.get("size", self.size)) != self.size:
                raise changed(f"{self.size} bytes, {expected.get('size')} at the first read")
            for name in ("etag", "last_modified"):
                if expected.get(name) and self.validator.get(name) != expected[name]:
                    raise changed(f"{name.replace('_', '-')} {self.validator.get(name)!r}, was {expected[name]!r}")

    def _call(self, method: str, headers: dict[str, str]) -> requests.Response:
        try:
            # Streamed: a range's body is read in one call below, not 10 KiB at a time.
            return self.session.request(method, self.url, headers=headers, timeout=self.timeout,
                                        allow_redirects=True, stream=True)
        except requests.exceptions.SSLError as exc:
            raise PermanentError(f"the TLS certificate of {self.shown} could not be verified "
                                 f"({_tls_reason(exc)}); if it is signed by your own CA, give the fleet "
                                 "that CA's bundle in REQUESTS_CA_BUNDLE") from None
        except requests.RequestException as exc:
            raise TransientError(f"reading the source failed ({type(exc).__name__})") from None

    def _error(self, resp: requests.Response) -> Exception:
        if resp.status_code in (404, 410):
            return PermanentError(f"source {self.shown} is gone (HTTP {resp.status_code})", status=resp.status_code)
        if resp.status_code in (401, 403):
            return PermanentError(f"source {self.shown} refused the fleet (HTTP {resp.status_code})",
                                  status=resp.status_code)
        if resp.status_code == 412:
            return changed(f"HTTP 412 on {self.validator}")
        return TransientError(f"source answered HTTP {resp.status_code}", status=resp.status_code)

    def fetch(self, start: int, end: int) -> bytes:
        # Ranges of the identity form: a compressed answer's ranges would be of other bytes.
        headers = {"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"}
        if "etag" in self.validator:
            headers["If-Match"] = self.validator["etag"]
        elif "last_modified" in self.validator:
            headers["If-Unmodified-Since"] = self.validator["last_modified"]
        resp = self._call("GET", headers)
        if resp.status_code == 206:
            first = resp.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]
            if first != str(start):
                raise TransientError(f"source answered range {resp.headers.get('Content-Range')!r} for {start}-{end}")
            try:
                # Not decoded (identity asked), so urllib3 hands over http.client's bytes as they are.
                return bytes(resp.raw.read(end - start + 1, decode_content=False))
            except (requests.RequestException, OSError, urllib3.exceptions.HTTPError) as exc:
                raise TransientError(f"reading the source failed mid-range ({type(exc).__name__})") from None
            finally:
                resp.close()
        if resp.status_code == 200:  # the server ignored Range: whole bodies only, and small ones
            if self.size <= BLOCK:  # kept whole by the reader from ``start`` on: read once a slice
                return resp.content[start:]
            raise PermanentError(f"source {self.shown} ignores Range requests, so it cannot be relayed in "
                                 f"slices ({self.size} bytes); serve it with Range support, or put it "
                                 "where the provider can fetch it")
        raise self._error(resp)


def _tls_reason(exc: BaseException) -> str:
    """The TLS library's own words for a failed handshake (never the URL, which requests'
    message carries, query and all)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        if isinstance(seen, ssl.SSLError):
            return seen.reason or type(seen).__name__
        nested = [a for a in (getattr(seen, "reason", None), *seen.args) if isinstance(a, BaseException)]
        seen = nested[0] if nested else seen.__cause__ or seen.__context__
    return "TLS handshake failed"


class S3Remote:
    """An ``s3://BUCKET/KEY`` source read with ranged GetObject calls."""

    def __init__(self, client: Any, bucket: str, key: str, *, expected: dict[str, Any] | None = None):
        self.client, self.bucket, self.key, self._error_type = client, bucket, key, ClientError
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise self._error(exc) from None
        self.size = int(head["ContentLength"])
        self.validator = {"etag": str(head["ETag"])}
        if expected and (int(expected.get("size", self.size)) != self.size
                         or expected.get("etag", self.validator["etag"]) != self.validator["etag"]):
            raise changed(f"s3://{bucket}/{key} is now {self.size} bytes, ETag {self.validator['etag']}")

    def _error(self, exc: Any) -> Exception:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("PreconditionFailed", "412"):
            return changed(f"s3://{self.bucket}/{self.key}: ETag no longer {self.validator['etag']}")
        if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
            return PermanentError(f"source s3://{self.bucket}/{self.key} is gone ({code})")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return PermanentError(f"source s3://{self.bucket}/{self.key}: access refused ({code}); check "
                                  "INGEST_SOURCE_S3_* settings")
        return TransientError(f"reading s3://{self.bucket}/{self.key} failed ({code or type(exc).__name__})")

    def fetch(self, start: int, end: int) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}",
                                         IfMatch=self.validator["etag"])
            return bytes(obj["Body"].read())
        except self._error_type as exc:
            raise self._error(exc) from None


class RangeReader(io.RawIOBase):
    """A seekable, read-only file over a :class:`Remote`, holding one block (or one large
    read) at a time, and reading the next large one ahead while the caller sends this one
    (so the source's latency overlaps the provider's): at most two chunks in memory."""

    def __init__(self, remote: Remote, block: int = BLOCK):
        super().__init__()
        self.remote, self.block = remote, block
        self.size = remote.size
        self._pos = 0
        self._start = 0
        self._data = b""
        self._ahead: tuple[int, int, Future[bytes]] | None = None
        self._pool: ThreadPoolExecutor | None = None

    def _fetch(self, start: int, end: int) -> bytes:
        ahead, self._ahead = self._ahead, None
        hit = ahead is not None and ahead[:2] == (start, end)
        # A read-ahead that is used raises its own error, if it failed.
        data = ahead[2].result() if hit and ahead is not None else self.remote.fetch(start, end)
        n = end - start + 1
        if n >= DIRECT and len(data) == n and end + 1 < self.size:  # a chunked protocol: read the next one meanwhile
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-ahead")
            nxt = min(self.size, end + 1 + n) - 1
            self._ahead = (end + 1, nxt, self._pool.submit(self.remote.fetch, end + 1, nxt))
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _load(self, want: int) -> None:
        """Make the block hold ``self._pos``, fetching ``want`` bytes from it if that is a large read."""
        if not self._start <= self._pos < self._start + len(self._data):
            self._start = self._pos
            end = min(self.size, self._pos + (want if want >= DIRECT else self.block)) - 1
            self._data = b""  # the old block goes before the new one comes
            self._data = self._fetch(self._start, end)
            if not self._data:
                raise TransientError(f"the source gave no bytes at offset {self._pos}")

    def read(self, size: int | None = -1) -> bytes:
        """As :meth:`io.RawIOBase.read`, but a read of exactly one fetched range (a chunked
        protocol's chunk) hands over the fetched bytes themselves: no copy of 10 MB a chunk."""
        left = self.size - self._pos
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        self._load(size)
        offset = self._pos - self._start
        if offset == 0 and size == len(self._data):
            self._pos += size
            return self._data
        if size <= len(self._data) - offset:
            self._pos += size
            return self._data[offset:offset + size]
        buffer = bytearray(size)
        return bytes(buffer[:self.readinto(buffer)])

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self.size:
            self._load(len(view) - done)
            offset = self._pos - self._start
            n = min(len(view) - done, len(self._data) - offset)
            view[done:done + n] = memoryview(self._data)[offset:offset + n]
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        self._data = b""
        self._ahead = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()
