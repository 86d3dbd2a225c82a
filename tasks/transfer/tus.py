"""TUS 1.0.0 uploads with tuspy, made fit for a fleet.

tuspy (1.1.0) sends every request with module-level ``requests`` calls: no timeout, no
connection reuse, no classification (shared/design/uploads.md). Here its request
building, metadata encoding and chunk reading are kept, and every request goes through
the provider's :class:`~tasks.http.ProviderClient` instead: timeouts, a keep-alive
session, the fleet-wide cooldown on 429, and errors classified like any provider call.

Where the server offers the ``checksum`` extension (its ``OPTIONS`` lists it), every PATCH
carries ``Upload-Checksum`` and a chunk damaged on its way is refused (460) and sent again;
tuspy's own ``upload_checksum`` sends a sha1 without asking, which a server without the
extension ignores (shared/design/uploads.md), so the fleet asks once, at session creation.

The upload URL and offset are the whole session: they are checkpointed in the job record
after every chunk, so any worker resumes with ``HEAD`` after any interruption. The
creation token (Gcore's) is used once, in :func:`create_session`, and stored nowhere.

Example::

    url = create_session(client, endpoint, path, metadata={"filename": "a.mp4", ...})
    up = TusUpload(client, url, path, chunk_size=10_000_000)
    while not up.done and time.monotonic() < deadline:
        up.send_chunk(); checkpoint(up.offset)
"""

from __future__ import annotations

import base64
import hashlib
from typing import IO, Any, cast
from urllib.parse import urljoin

from tusclient.client import TusClient
from tusclient.request import TusRequest
from tusclient.uploader.uploader import Uploader

from tasks.errors import PermanentError, Throttled, TransientError, UploadSessionLost
from tasks.http import Http, parse_retry_after

TUS_HEADERS = {"Tus-Resumable": "1.0.0"}
#: ``Upload-Checksum`` algorithms the fleet sends, the strongest a server offers first (the
#: protocol makes sha1 mandatory for a server with the extension).
CHECKSUMS = ("sha256", "sha1", "md5")
CHECKSUM_MISMATCH = 460
LOCKED_RETRY = 1.0  # seconds before asking a locked upload again (no Retry-After from tusd)


class UploadLocked(Throttled):
    """423: another connection holds the upload (e.g. a paused worker's PATCH after a
    takeover). Not a failure: come back shortly; the caller bounds the total wait."""


def _locked(retry_after: str | None) -> UploadLocked:
    wait = parse_retry_after(retry_after)
    return UploadLocked("upload locked by another connection (HTTP 423)", retry_after=wait or LOCKED_RETRY,
                        status=423)


class _FleetTusRequest(TusRequest):
    """One PATCH of one chunk, sent through the provider client."""

    _http: Http

    _checksum: str | None

    def perform(self) -> None:
        chunk = self.file.read(self._content_length)
        headers = dict(self._request_headers)
        if self._checksum:
            digest = base64.b64encode(hashlib.new(self._checksum, chunk).digest()).decode()
            headers["Upload-Checksum"] = f"{self._checksum} {digest}"
        resp = self._http.request("PATCH", self._url, data=chunk, headers=headers,
                                  allow=(404, 409, 410, 423, CHECKSUM_MISMATCH))
        self.status_code = resp.status_code
        self.response_content = b""
        self.response_headers = {k.lower(): v for k, v in resp.headers.items()}


class _FleetUploader(Uploader):
    def __init__(self, http: Http, checksum: str | None = None, **kwargs: Any):
        self.http = http
        self.checksum_name = checksum
        super().__init__(**kwargs)

    def get_offset(self) -> int:
        resp = self.http.request("HEAD", str(self.url), headers=self.get_headers(), allow=(403, 404, 410, 423))
        if resp.status_code == 423:
            raise _locked(resp.headers.get("Retry-After"))
        if resp.status_code in (403, 404, 410):
            raise UploadSessionLost(f"upload session gone (HTTP {resp.status_code})", status=resp.status_code)
        offset = resp.headers.get("Upload-Offset")
        if offset is None:
            raise TransientError("HEAD of the upload gave no Upload-Offset", status=resp.status_code)
        return int(offset)

    def create_url(self) -> str:
        endpoint = cast(TusClient, self.client).url
        resp = self.http.request("POST", endpoint, headers=self.get_url_creation_headers(), allow=(405,))
        if resp.status_code == 405 or "Location" not in resp.headers:
            raise PermanentError(f"upload session refused: {self.http.error_text(resp)}", status=resp.status_code)
        return urljoin(endpoint, resp.headers["Location"])

    def _do_request(self) -> None:
        request = _FleetTusRequest(self)
        request._http, request._checksum = self.http, self.checksum_name
        request.perform()
        self.request = request  # type: ignore[assignment]  # tuspy types it None until set
        if request.status_code == 423:  # nothing was taken; the next request seeks to the offset again
            raise _locked(request.response_headers.get("retry-after"))
        if request.status_code in (404, 410):
            raise UploadSessionLost(f"upload session gone (HTTP {request.status_code})", status=request.status_code)
        if request.status_code == CHECKSUM_MISMATCH:  # the server dropped the chunk: send it again
            raise TransientError(f"the chunk at offset {self.offset} arrived damaged ({self.checksum_name} "
                                 "checksum mismatch, HTTP 460)", status=CHECKSUM_MISMATCH)


def offered_checksum(http: Http, endpoint: str) -> str | None:
    """The ``Upload-Checksum`` algorithm to send to the server at ``endpoint``: the strongest
    of :data:`CHECKSUMS` its ``OPTIONS`` offers with the ``checksum`` extension, else None
    (also when the server has no ``OPTIONS``: the upload goes on without checksums). A 429 or
    5xx is the provider's like any other answer (a cooldown, a retry of the step)."""
    resp = http.request("OPTIONS", endpoint, headers=dict(TUS_HEADERS), allow=(400, 403, 404, 405, 501))
    if resp.status_code >= 300:
        return None
    extensions = {e.strip().lower() for e in resp.headers.get("Tus-Extension", "").split(",")}
    if "checksum" not in extensions:
        return None
    offered = {a.strip().lower() for a in resp.headers.get("Tus-Checksum-Algorithm", "sha1").split(",")}
    return next((name for name in CHECKSUMS if name in offered), None)


def create_session(http: Http, endpoint: str, fileobj: IO[bytes], metadata: dict[str, str]) -> str:
    """POST a new upload (creation extension) and return its absolute URL."""
    uploader = _FleetUploader(http, file_stream=fileobj, client=TusClient(endpoint, headers=dict(TUS_HEADERS)),
                              metadata=metadata)
    return uploader.create_url()


class TusUpload:
    """An existing upload session, resumed from the server's offset (one HEAD)."""

    def __init__(self, http: Http, url: str, fileobj: IO[bytes], *, chunk_size: int, checksum: str | None = None):
        self._up = _FleetUploader(http, checksum, file_stream=fileobj, url=url, chunk_size=chunk_size,
                                  client=TusClient(url, headers=dict(TUS_HEADERS)))
        self.size = self._up.get_file_size()

    @property
    def offset(self) -> int:
        return self._up.offset

    @property
    def done(self) -> bool:
        return self._up.offset >= self.size

    def send_chunk(self) -> int:
        """PATCH the next chunk; returns the bytes the server took. A 409 (offset moved,
        e.g. after a dropped PATCH the server partly kept) re-reads the offset instead."""
        before = self._up.offset
        self._up.stop_at = self.size
        self._up._do_request()
        request = cast(_FleetTusRequest, self._up.request)
        if request.status_code == 409:
            self._up.offset = self._up.get_offset()
            return 0
        new = request.response_headers.get("upload-offset")
        if new is None:
            raise TransientError("PATCH answer had no Upload-Offset", status=request.status_code)
        self._up.offset = int(new)
        return self._up.offset - before

    def resync(self) -> None:
        """After a failed PATCH: ask the server how much it kept."""
        self._up.offset = self._up.get_offset()
