"""Ittybit uploads: signed URLs (``POST /signatures``) and the uploads they allow, whole or in chunks.

Uploads (I3, I4). ``POST /signatures`` ``{filename, folder?, expiry? (unix seconds, default
an hour from now), method: "get"|"put" (default "get")}`` answers 201 ``{domain, filename,
folder, expiry, method, signature, url}`` with ``url`` = ``<sandbox>/upload/{folder/}
{filename}?expiry=…&method=…&signature=…``; the signature is an HMAC of the path, expiry
and method keyed with the API key, and ``signature_ttl`` (seconds, null = off) caps how
long new signatures live, so tests can watch one expire. Each is recorded in the state's
``signatures_issued``. ``PUT`` to a ``put`` URL (403 if the signature does not match,
then if it has expired):

* without ``Content-Range`` the body is the whole file: 201 File, or 400 ``Unsupported
  file type``; it replaces any partial upload of the path;
* with ``Content-Range: bytes=START-END/TOTAL`` (END inclusive; the RFC 9110 form ``bytes
  START-END/TOTAL`` works too) the chunk is written at START of the path's upload, which
  outlives the signature (renew it and go on). START must be the size received so far,
  else 409 naming it, with ``Upload-Offset: <size>``; START 0 with another TOTAL, or on a
  finished upload, starts the path over. A chunk counts only once its whole body arrived:
  if the client goes away mid-chunk, the upload stays where it was. Intermediate chunks
  answer 202 ``{"received": <bytes>}``, the last (END + 1 = TOTAL) 201 File; sent again
  after the upload finished (its answer was lost), the last chunk gets the same File. Ittybit
  accepts chunks in parallel and out of order (I4); the emulator takes them in order only.

*Assumed* (Ittybit documents no such call): ``HEAD`` on a signed upload URL (``get`` or
``put``) answers 200 with ``Upload-Offset`` (0 for a path never written) and, once known,
``Upload-Length``, so a client that lost track can resync. Bodies are streamed to disk in 1 MiB blocks. The state's ``uploads``
count per path every body byte a ``PUT`` handler received (``bytes_received_total``),
rejected and repeated chunks included; bodies answered by an injected fault show only in
the request log. Gcore's TUS server shares the ``/upload/`` prefix: a ``HEAD`` to a
folder-less name of exactly 32 lowercase hex digits reaches Gcore.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from ..web import ClientGone, Request, Response, json_response
from .api import _check_folder, _check_name
from .files import UNSUPPORTED, _video_type

SIGNATURE_TTL = 3600  # "default +60 min" (I3)
METHODS = ("get", "put")
LOCK_TIMEOUT = 10.0  # how long a chunk waits for another request writing the same upload
CONTENT_RANGE = re.compile(r"bytes[= ](\d+)-(\d+)/(\d+)")


@dataclass
class Upload:
    """What a path received through ``PUT /upload/{path}``."""

    path: str  # "folder/filename"
    data: Path  # the partial file: exactly ``received`` bytes until it becomes a File
    received: int = 0
    total: int | None = None  # TOTAL of the chunks' Content-Range (the size, for a whole PUT)
    file_id: str | None = None  # the File the finished upload became
    bytes_received_total: int = 0  # every body byte, rejected and repeated chunks included
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def complete(self) -> bool:
        return self.received == self.total


class Uploads:
    """Signatures and uploads, mixed into the emulator (whose ``__init__`` declares ``_uploads``)."""

    def _create_signature(self, req: Request) -> Response:
        """``POST /signatures``: a URL that lets its holder GET or PUT one path until ``expiry`` (I3)."""
        shape = self._api(req)
        body = self._json_body(req, shape)
        invalid = self._invalid(shape)
        filename = body.get("filename")
        if filename is None:
            raise invalid("filename is required")
        filename, folder = _check_name(filename, invalid), _check_folder(body.get("folder"), invalid)
        method = body.get("method", "get")
        if not isinstance(method, str) or method.lower() not in METHODS:
            raise invalid("method must be 'get' or 'put'")
        method = method.lower()
        now = int(time.time())
        expiry = body.get("expiry")
        if expiry is None:
            expiry = now + SIGNATURE_TTL
        elif not isinstance(expiry, int) or isinstance(expiry, bool) or expiry <= now:
            raise invalid("expiry must be a unix time in the future")
        ttl = self.ctx.setting("signature_ttl")
        if ttl is not None:
            expiry = min(expiry, now + ttl)
        path = f"{folder}/{filename}" if folder else filename
        signature = self._sign(path, expiry, method)
        url = f"{self._base}/upload/{quote(path)}?expiry={expiry}&method={method}&signature={signature}"
        with self._lock:
            self._signatures_issued.append({"path": path, "method": method, "expiry": expiry, "signature": signature})
        answer = {"domain": self.ctx.address, "filename": filename, "folder": folder, "expiry": expiry,
                  "method": method, "signature": signature, "url": url}
        return json_response(self._envelope(shape, answer, f"{self._base}/signatures"), 201)

    def _upload_put(self, req: Request) -> Response:
        """``PUT /upload/{path}``: the whole file, or one ``Content-Range`` chunk of it."""
        shape = self._shape()
        path = _upload_path(req)
        # Count the body whatever happens next: the server drains rejected bodies too.
        req.on_finish(lambda r: self._count(path, r.bytes_in))
        self._check_signature(req, path, ("put",), shape)
        content_range = req.header("Content-Range")
        chunk = None if content_range is None else self._parse_range(content_range, req.content_length, shape)
        with self._lock:
            upload = self._upload(path)
        if not upload.lock.acquire(timeout=LOCK_TIMEOUT):
            raise self._error(shape, 409, f"Another request is writing this upload; {upload.received} bytes "
                                          "have been received", "upload_offset_mismatch",
                              {"Upload-Offset": str(upload.received)})
        try:
            if chunk is None:
                return self._put_whole(req, shape, upload)
            return self._put_chunk(req, shape, upload, *chunk)
        finally:
            upload.lock.release()

    def _upload_head(self, req: Request) -> Response:
        """``HEAD /upload/{path}``: how much of the path's upload has been received."""
        path = _upload_path(req)
        self._check_signature(req, path, METHODS, self._shape())
        with self._lock:
            upload = self._uploads.get(path)
        headers = {"Upload-Offset": str(upload.received if upload else 0)}
        if upload is not None and upload.total is not None:
            headers["Upload-Length"] = str(upload.total)
        return Response(200, headers=headers)

    def _put_whole(self, req: Request, shape: str, upload: Upload) -> Response:
        """The body is the file: store it, then replace whatever the path held (caller holds the upload)."""
        incoming = self._incoming()
        try:
            size = _receive(req, incoming, 0)
        except ClientGone:
            incoming.unlink(missing_ok=True)
            raise
        mime = _video_type(incoming)
        if mime is None:
            incoming.unlink(missing_ok=True)
            raise self._error(shape, 400, UNSUPPORTED, "format_unsupported")
        upload.data.unlink(missing_ok=True)
        upload.received = upload.total = size
        return self._upload_done(shape, upload, incoming, mime)

    def _put_chunk(self, req: Request, shape: str, upload: Upload, start: int, end: int, total: int) -> Response:
        """Write one chunk at ``start``: 202 while bytes are missing, 201 + File after the last."""
        if start == 0 and (upload.complete or upload.total != total):
            # A new file for this path (overwriting, as a PUT to a path does).
            upload.data.unlink(missing_ok=True)
            upload.received, upload.total, upload.file_id = 0, total, None
        with self._lock:
            done = self._files.get(upload.file_id) if upload.file_id and upload.complete else None
        if done is not None and end + 1 == total == upload.total:
            # The last chunk again: its 201 was lost on the way. Ittybit takes chunks retried
            # singly (I4); answering 409 here would leave the client no way to learn the File.
            return self._file_response(shape, done, 201)
        if start != upload.received:
            raise self._error(shape, 409, f"Content-Range starts at {start} but {upload.received} bytes have "
                                          "been received", "upload_offset_mismatch",
                              {"Upload-Offset": str(upload.received)})
        if total != upload.total:
            raise self._error(shape, 400, f"Content-Range total {total} does not match this upload's total "
                                          f"{upload.total}", "request_invalid")
        _receive(req, upload.data, start)
        upload.received = end + 1
        if not upload.complete:
            link = f"{self._base}/upload/{quote(upload.path)}"
            return json_response(self._envelope(shape, {"received": upload.received}, link), 202)
        mime = _video_type(upload.data)
        if mime is None:
            upload.data.unlink(missing_ok=True)
            raise self._error(shape, 400, UNSUPPORTED, "format_unsupported")
        return self._upload_done(shape, upload, upload.data, mime)

    def _upload_done(self, shape: str, upload: Upload, data: Path, mime: str) -> Response:
        """The path's bytes are complete and checked: they become a File."""
        folder, _, filename = upload.path.rpartition("/")
        f = self._add_file(data, upload.received, mime, folder or None, filename, {}, None)
        upload.file_id = f.id
        return self._file_response(shape, f, 201)

    def _check_signature(self, req: Request, path: str, methods: tuple[str, ...], shape: str) -> None:
        expiry = req.arg("expiry") or ""
        method = (req.arg("method") or "get").lower()
        signature = req.arg("signature") or ""
        if not (expiry.isdigit() and method in methods
                and hmac.compare_digest(signature.encode(), self._sign(path, int(expiry), method).encode())):
            raise self._error(shape, 403, "Invalid signature", "signature_invalid")
        if time.time() >= int(expiry):
            raise self._error(shape, 403, "Signature expired", "signature_expired")

    def _sign(self, path: str, expiry: int, method: str) -> str:
        # URL-safe base64: the signature travels in a query string, where '+' would become ' '.
        digest = hmac.new(self.api_key.encode(), f"{path}\n{expiry}\n{method}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _parse_range(self, header: str, length: int, shape: str) -> tuple[int, int, int]:
        m = CONTENT_RANGE.fullmatch(header.strip())
        if m is None:
            raise self._error(shape, 400, "Content-Range must look like bytes=START-END/TOTAL", "request_invalid")
        start, end, total = map(int, m.groups())
        if not start <= end < total:
            raise self._error(shape, 400, f"Content-Range {header} is not a range within the file", "request_invalid")
        if end - start + 1 != length:
            raise self._error(shape, 400, f"Content-Range {header} covers {end - start + 1} bytes but the body has "
                                          f"{length}", "request_invalid")
        return start, end, total

    def _upload(self, path: str) -> Upload:
        """The path's upload, created on first use; caller holds the lock."""
        upload = self._uploads.get(path)
        if upload is None:
            name = hashlib.sha256(path.encode()).hexdigest()[:32]
            upload = self._uploads[path] = Upload(path, self.ctx.data_dir / "uploads" / name)
        return upload

    def _count(self, path: str, nbytes: int) -> None:
        with self._lock:
            self._upload(path).bytes_received_total += nbytes


def _upload_path(req: Request) -> str:
    return unquote(req.params["path"])


def _receive(req: Request, path: Path, offset: int) -> int:
    """Write the body at ``offset`` of ``path`` in 1 MiB blocks; all or nothing. Returns its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if offset else "wb") as f:
        f.seek(offset)
        try:
            f.writelines(req.iter_body())
        except ClientGone:
            f.truncate(offset)  # a chunk counts whole or not at all: the client resends it whole
            raise
    return req.bytes_in
