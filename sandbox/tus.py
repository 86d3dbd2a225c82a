"""A TUS 1.0.0 server (core + ``creation`` + ``termination``, and ``checksum`` when the
provider offers it) that stores uploads as files.

Protocol: https://tus.io/protocols/resumable-upload (summarised in design/uploads.md §2).
The provider decides who may create an upload (``authorize``) and what a finished upload
means (``complete``); this module only speaks the protocol:

* ``OPTIONS <prefix>`` → 204 with ``Tus-Version``, ``Tus-Extension``, ``Tus-Max-Size``.
* Every other request needs ``Tus-Resumable: 1.0.0``, else 412; answers carry it back.
* ``POST <prefix>`` with ``Upload-Length`` and ``Upload-Metadata`` (``key base64(value)``
  pairs) → 201 + ``Location: http://<Host><prefix><32 hex>`` (absolute, like tusd, so a
  client need not resolve it). Bad parameters → 405, which is
  what Gcore answers ("Unexpected response while creating upload session; check
  parameters"); above ``Tus-Max-Size`` → 413.
* ``HEAD <prefix><id>`` → 200 + ``Upload-Offset``, ``Upload-Length``, ``Upload-Metadata``,
  ``Cache-Control: no-store``; unknown → 404.
* ``PATCH <prefix><id>`` needs ``Content-Type: application/offset+octet-stream`` (else 415)
  and ``Upload-Offset`` equal to the stored offset (else 409, nothing changes); a body
  that would run past ``Upload-Length`` → 413. The body is streamed to the file; if the
  client disconnects mid-body, what arrived is kept and the offset advances by it. → 204
  + new ``Upload-Offset``. A PATCH that arrives while another is still writing the same
  upload waits up to ``lock_timeout`` seconds for it, then gets 423 ``file currently
  locked``; with ``lock_timeout`` 0 (Gcore's server) it gets 423 at once, as from tusd
  (tus/tusd ``pkg/handler/unrouted_handler.go`` ``ErrFileLocked``), and so does a HEAD.
* ``DELETE <prefix><id>`` → 204; then the upload is unknown (404).
* ``checksum`` (only while ``checksums()`` is true; then ``OPTIONS`` lists it with
  ``Tus-Checksum-Algorithm: md5,sha1,sha256,sha512``, as tusd): a PATCH with
  ``Upload-Checksum: <algorithm> <base64 digest>`` is stored only if the whole body arrived
  and matches; a mismatch → 460 ``checksum mismatch`` and the offset stays; an algorithm
  not offered → 400; a body cut short keeps nothing (the checksum cannot be verified).
  Without the extension the header is ignored, as by a server that does not know it.

Files: an unfinished upload's file belongs to this server; once the upload is complete
the file belongs to whoever ``complete`` gave it to, and termination leaves it in place.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .web import HttpError, Request, Response, Route, route

TUS_VERSION = "1.0.0"
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")  # tusd's list
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"


@dataclass
class TusUpload:
    id: str
    length: int
    path: Path
    metadata: dict[str, str]
    owner: Any  # what ``authorize`` returned, e.g. the provider's video id
    offset: int = 0
    #: Every body byte received by PATCHes to this upload, including bytes of rejected
    #: (409/413/415) requests that were read and discarded.
    bytes_received_total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def complete(self) -> bool:
        return self.offset == self.length


class TusServer:
    """TUS endpoints under ``prefix`` for one provider; endpoint names ``<provider>.tus_*``."""

    extensions = ("creation", "termination")

    def __init__(self, *, provider: str, address: str, directory: Path, max_size: int,
                 authorize: Callable[[Request, int, dict[str, str]], Any],
                 complete: Callable[[TusUpload], None],
                 prefix: str = "/upload/", lock_timeout: float = 10.0,
                 after_patch: Callable[[TusUpload], None] | None = None,
                 checksums: Callable[[], bool] = lambda: False):
        """
        ``authorize(request, length, metadata)`` returns the new upload's owner or raises
        :class:`HttpError`; ``complete(upload)`` runs once the last byte is stored;
        ``after_patch(upload)`` after each stored PATCH, before its answer (a fault hook).
        ``lock_timeout`` 0 answers 423 at once when the upload is locked (tusd's
        ``ErrFileLocked``), for PATCH, HEAD and DELETE alike.
        ``address`` ("host:port") builds ``Location`` when a request has no ``Host``.
        ``checksums()`` says, per request, whether the ``checksum`` extension is offered.
        """
        self.provider = provider
        self.address = address
        self.directory = directory
        self.max_size = max_size
        self.prefix = prefix
        self._authorize = authorize
        self._complete = complete
        self._lock_timeout = lock_timeout
        self._after_patch = after_patch
        self._checksums = checksums
        self._uploads: dict[str, TusUpload] = {}
        self._lock = threading.Lock()

    def routes(self) -> list[Route]:
        base = self.prefix.rstrip("/")
        one = base + r"/(?P<upload_id>[0-9a-f]{32})"
        p = self.provider
        return [
            route("OPTIONS", base + "/?", f"{p}.tus_options", self._options, provider=p),
            route("POST", base + "/?", f"{p}.tus_create", self._create, provider=p),
            route("HEAD", one, f"{p}.tus_head", self._head, provider=p, entity=self._owner_of),
            route("PATCH", one, f"{p}.tus_patch", self._patch, provider=p, entity=self._owner_of),
            route("DELETE", one, f"{p}.tus_delete", self._delete, provider=p, entity=self._owner_of),
        ]

    def uploads(self) -> list[TusUpload]:
        with self._lock:
            return list(self._uploads.values())

    def forget_owner(self, owner: Any) -> None:
        """Drop every upload of ``owner`` (its entity was deleted), with unfinished files."""
        with self._lock:
            gone = [u for u in self._uploads.values() if u.owner == owner]
            for upload in gone:
                del self._uploads[upload.id]
        for upload in gone:
            if not upload.complete:
                upload.path.unlink(missing_ok=True)

    def reset(self) -> None:
        """Forget all uploads; the caller wipes the directory."""
        with self._lock:
            self._uploads.clear()

    # -- handlers ------------------------------------------------------------------

    def _options(self, req: Request) -> Response:
        headers = {"Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION,
                   "Tus-Extension": ",".join(self.extensions), "Tus-Max-Size": str(self.max_size)}
        if self._checksums():
            headers["Tus-Extension"] += ",checksum"
            headers["Tus-Checksum-Algorithm"] = ",".join(CHECKSUM_ALGORITHMS)
        return Response(204, headers=headers)

    def _create(self, req: Request) -> Response:
        _require_version(req)
        length = _int_header(req, "Upload-Length", missing=405)
        if length > self.max_size:
            raise tus_error(413, f"Upload-Length {length} exceeds Tus-Max-Size {self.max_size}")
        metadata = _parse_metadata(req.header("Upload-Metadata"))
        owner = self._authorize(req, length, metadata)
        upload_id = uuid.uuid4().hex
        path = self.directory / upload_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        upload = TusUpload(upload_id, length, path, metadata, owner)
        with self._lock:
            self._uploads[upload_id] = upload
        req.entity = str(owner)
        if length == 0:
            self._complete(upload)
        return _tus(201, {"Location": f"http://{req.header('Host') or self.address}{self.prefix}{upload_id}"})

    def _head(self, req: Request) -> Response:
        _require_version(req)
        upload = self._find(req)
        if self._lock_timeout == 0:  # a locking server reads the offset under the lock (tusd)
            self._acquire(upload)
            upload.lock.release()
        headers = {"Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length),
                   "Cache-Control": "no-store"}
        if upload.metadata:
            headers["Upload-Metadata"] = _encode_metadata(upload.metadata)
        return _tus(200, headers)

    def _patch(self, req: Request) -> Response:
        _require_version(req)
        upload = self._find(req)
        # Count the body whatever happens next: the server drains rejected bodies too.
        req.on_finish(lambda r: self._count(upload, r.bytes_in))
        if (req.header("Content-Type") or "").split(";")[0].strip().lower() != OFFSET_CONTENT_TYPE:
            raise tus_error(415, f"Content-Type must be {OFFSET_CONTENT_TYPE}")
        offset = _int_header(req, "Upload-Offset", missing=400)
        checksum = self._checksum_of(req)
        self._acquire(upload)
        try:
            if offset != upload.offset:
                raise tus_error(409, f"Upload-Offset {offset} does not match the upload's offset {upload.offset}",
                                {"Upload-Offset": str(upload.offset)})
            if offset + req.content_length > upload.length:
                raise tus_error(413, f"body of {req.content_length} bytes at offset {offset} "
                                     f"exceeds Upload-Length {upload.length}")
            if checksum is None:
                self._store(req, upload)
            else:
                self._store_checked(req, upload, *checksum)
        finally:
            upload.lock.release()
        if self._after_patch is not None:
            self._after_patch(upload)
        return _tus(204, {"Upload-Offset": str(upload.offset)})

    def _delete(self, req: Request) -> Response:
        _require_version(req)
        upload = self._find(req)
        self._acquire(upload)
        try:
            with self._lock:
                self._uploads.pop(upload.id, None)
            if not upload.complete:
                upload.path.unlink(missing_ok=True)
        finally:
            upload.lock.release()
        return _tus(204)

    # -- helpers -------------------------------------------------------------------

    def _acquire(self, upload: TusUpload) -> None:
        """Take the upload's lock, or 423 "file currently locked" (tusd ``ErrFileLocked``)."""
        got = upload.lock.acquire(blocking=False) if self._lock_timeout == 0 else \
            upload.lock.acquire(timeout=self._lock_timeout)
        if not got:
            raise tus_error(423, "file currently locked")

    def _store(self, req: Request, upload: TusUpload) -> None:
        """Append the body at the upload's offset; keep whatever arrived if the client vanishes."""
        written = 0
        try:
            with open(upload.path, "r+b") as f:
                f.seek(upload.offset)
                for block in req.iter_body():
                    f.write(block)
                    written += len(block)
        finally:
            # Runs on ClientGone too: the bytes are on disk, so the offset moves past them.
            upload.offset += written
            if written and upload.complete:
                self._complete(upload)

    def _checksum_of(self, req: Request) -> tuple[str, bytes] | None:
        """The PATCH's ``Upload-Checksum`` (algorithm, digest), if the extension is offered."""
        raw = req.header("Upload-Checksum")
        if raw is None or not self._checksums():
            return None
        algorithm, _, encoded = raw.strip().partition(" ")
        if algorithm.lower() not in CHECKSUM_ALGORITHMS:
            raise tus_error(400, f"unsupported checksum algorithm {algorithm!r}")
        try:
            return algorithm.lower(), base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise tus_error(400, "Upload-Checksum digest is not base64") from None

    def _store_checked(self, req: Request, upload: TusUpload, algorithm: str, expected: bytes) -> None:
        """Append the body only if it all arrived and matches its checksum (else keep nothing)."""
        digest = hashlib.new(algorithm)
        written = 0
        with open(upload.path, "r+b") as f:
            f.seek(upload.offset)
            for block in req.iter_body():  # ClientGone leaves the offset where it was
                f.write(block)
                digest.update(block)
                written += len(block)
        if digest.digest() != expected:
            raise tus_error(460, "checksum mismatch")
        upload.offset += written
        if written and upload.complete:
            self._complete(upload)

    def _count(self, upload: TusUpload, nbytes: int) -> None:
        with self._lock:
            upload.bytes_received_total += nbytes

    def _find(self, req: Request) -> TusUpload:
        with self._lock:
            upload = self._uploads.get(req.params["upload_id"])
        if upload is None:
            raise tus_error(404, "upload not found")
        return upload

    def _owner_of(self, req: Request) -> str | None:
        with self._lock:
            upload = self._uploads.get(req.params["upload_id"])
        return str(upload.owner) if upload else None


def _tus(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status, headers={"Tus-Resumable": TUS_VERSION, **(headers or {})})


def tus_error(status: int, text: str, headers: dict[str, str] | None = None) -> HttpError:
    return HttpError(status, text, {"Tus-Resumable": TUS_VERSION, **(headers or {})})


def _require_version(req: Request) -> None:
    if req.header("Tus-Resumable") != TUS_VERSION:
        raise HttpError(412, "Tus-Resumable 1.0.0 required", {"Tus-Version": TUS_VERSION})


def _int_header(req: Request, name: str, *, missing: int) -> int:
    raw = req.header(name)
    if raw is None or not raw.strip().isdigit():
        raise tus_error(missing, f"{name} must be a non-negative integer")
    return int(raw)


def _parse_metadata(header: str | None) -> dict[str, str]:
    """``key base64(value)`` pairs separated by commas; a value may be absent (empty)."""
    metadata: dict[str, str] = {}
    for pair in (header or "").split(","):
        if not pair.strip():
            continue
        key, _, encoded = pair.strip().partition(" ")
        try:
            metadata[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise tus_error(405, f"invalid Upload-Metadata value for {key!r}") from None
    return metadata


def _encode_metadata(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
