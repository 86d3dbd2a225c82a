"""Ingest.io uploads: an input's signed S3-style upload, in parts (``amazonMP``) or whole (``amazon``).

Uploads (docs: inputs/upload-*; the node SDK's uploader). An input (:mod:`.inputs`) is
uploaded to its ``path``, the upload's ``key``. Then:

* init ``POST …/upload?type=amazonMP|amazon {type, size}`` -> 201. ``amazonMP``:
  ``{key, uploadId, pieceCount, pieceSize}``, ``pieceSize`` the ``piece_size`` setting
  (default and minimum 5 MiB), ``pieceCount`` = ceil(size / pieceSize). ``amazon``:
  ``{key}``. Another init replaces the input's open upload (its uploadId is unknown
  afterwards); an input whose upload completed answers 409.
* sign ``POST …/upload/sign {partNumber, uploadId, contentType}`` (``{contentType}`` for
  ``amazon``; the reference lists ``partNumber``, ``uploadId``, ``contentMd5``, the node SDK's
  ``UploaderBase._signChunk`` also sends ``contentType: 'application/octet-stream'``) -> 200
  ``{authHeader, dateHeader, url, securityToken}``: ``url`` is
  ``<sandbox>/ingestio-s3/<key>?partNumber=N&uploadId=U`` (no query for ``amazon``),
  ``authHeader`` an ``AWS4-HMAC-SHA256 …, Signature=<hex>`` whose signature is an
  HMAC-SHA256 of the method, path, query, the signed ``contentType`` (empty if the sign
  call named none), ``dateHeader`` and ``securityToken``, keyed with a secret of the
  emulator: a PUT whose ``Content-Type`` is not exactly the signed one (or that sends one
  the sign call did not name) is 403 ``SignatureDoesNotMatch``, as S3 refuses a signature
  that covers ``content-type``. The state records each part's last signed type
  (``signed_types``). ``dateHeader`` is an ``x-amz-date`` (``YYYYMMDDTHHMMSSZ``); the
  signature expires ``sign_ttl`` seconds later (setting, default 900). The setting
  ``expire_next_signatures: N`` makes the next N signatures (counted from the ``PUT
  /_sandbox/faults`` that set it) come out already expired. A missing field is 400, an
  unknown uploadId 404; a partNumber outside 1..pieceCount, an upload no longer open or
  none initialised 409 (the same for complete and abort).
* ``PUT <url>`` with ``Authorization``, ``x-amz-date``, ``x-amz-security-token`` as
  signed (no Accept, no bearer, no X-RateLimit headers): 200 + ``ETag: "<md5 hex>"``. The
  body is streamed to disk and stored only once it arrived whole, replacing a previous copy
  of that part; a body cut short (client gone, ``drop`` fault) stores nothing. An
  ``amazon`` PUT is the whole file and completes the upload (there is no complete call for
  it, though one answers 200 once the file is in). A PUT for an upload that is no longer
  open (completed, aborted, replaced by another init) is 404 ``NoSuchUpload`` (a sign
  for it 409 or 404); a client that lost a PUT's 200 finds the input under ``filter=ready``.
* complete ``POST …/upload/complete {uploadId}`` -> 200 + the input: parts 1..pieceCount
  must all be stored and all but the last exactly pieceSize (else 409 naming them); they
  are joined in order into one file (streamed), whose size and sha256 the state shows.
  While the join runs the input is ``processing`` and the upload answers 409 ``upload is
  being completed`` (a client whose complete timed out finds the input under
  ``filter=processing``, then ``ready``). Again on a completed upload: 409 ``upload already
  completed`` (the reference only says "409 if the upload isn't properly canceled"). The
  setting ``lose_next_complete_answers: N`` carries out the next N completes and then closes
  their connection without an answer (armed by the ``PUT /_sandbox/faults`` that sets it).
* abort ``POST …/upload/abort {uploadId}`` -> 201 + the input: the stored parts are
  dropped, the input stays ``uploading`` (a new init may start over); 409 on an upload that
  is completed or already aborted. ``amazon`` uploads have nothing to abort (409).

A completed file makes the input ``ready`` if it is an MP4/MOV/Matroska/WebM container
(:func:`sandbox.media.is_video_container`, the emulators' stand-in for a probe), else
``error``; either way ``inputs.complete`` is emitted (the state's ``status`` tells which).
``inputs.cancelled`` follows an abort.

The signed part PUT answers as S3 does: ``<Error><Code>…</Code><Message>…</Message></Error>``
as XML (403 ``SignatureDoesNotMatch``, 403 ``AccessDenied`` "Request has expired", 404
``NoSuchUpload``); injected faults there use the JSON format of :mod:`.api`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import secrets
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode
from xml.sax.saxutils import escape

from ..media import is_video_container
from ..web import BLOCK_SIZE, ClientGone, HttpError, Request, Response, json_response
from .api import _body, _error, _string, _whole
from .inputs import Input

MiB = 1024 * 1024
MIN_PIECE_SIZE = 5 * MiB  # S3's minimum part size, the docs' "minimum size of 5MB per part"
UPLOAD_TYPES = ("amazonMP", "amazon")
S3_PREFIX = "/ingestio-s3/"
AMZ_DATE = "%Y%m%dT%H%M%SZ"
ACCESS_KEY = "ASIASANDBOXINGESTIO00"
SIGNATURE = re.compile(r"Signature=([0-9a-f]{64})")
PART_PUT = "ingestio.part_put"


@dataclass
class Part:
    """One part number of an upload: its stored copy (size and etag None until a PUT of it
    arrived whole) and every PUT of it that passed the signature check."""

    size: int | None = None
    etag: str | None = None
    puts: int = 0
    bytes_received: int = 0  # body bytes of those PUTs, cut ones included


@dataclass
class Upload:
    type: str  # amazonMP or amazon
    upload_id: str | None  # None for amazon
    size: int  # as declared at init
    piece_size: int
    piece_count: int
    dir: Path  # where its parts are stored
    state: str = "open"  # open, completing, completed, aborted
    parts: dict[int, Part] = field(default_factory=dict)


class _S3Error(HttpError):
    """An error of the signed part PUT, in S3's XML format."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(status, message)
        self.code = code

    def response(self) -> Response:
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code>'
               f"<Message>{escape(self.body)}</Message><RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>")
        return Response(self.status, xml.encode(), {"Content-Type": "application/xml"})


def _no_such_upload() -> _S3Error:
    return _S3Error(404, "NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, "
                                         "or the upload may have been aborted or completed.")


class Uploads:
    """The upload calls and the signed part PUT, mixed into the emulator (an input holds its upload)."""

    def _upload_init(self, req: Request) -> Response:
        """``POST …/upload?type=``: start (or restart) the input's upload."""
        kind = req.arg("type")
        if kind not in UPLOAD_TYPES:
            raise _error(400, "type must be amazonMP or amazon")
        body = _body(req)
        size = _whole(body, "size", minimum=1)
        _string(body, "type", required=False)  # the file's MIME type: optional, a string if given
        piece_size = self.ctx.setting("piece_size") if kind == "amazonMP" else size
        with self._lock:
            inp = self._input(req.params["input_id"])
            old = inp.upload
            if old is not None and old.state in ("completing", "completed"):
                raise _error(409, f"input {inp.id} is already uploaded")
            upload_id = str(uuid.uuid4()) if kind == "amazonMP" else None
            inp.upload = Upload(kind, upload_id, size, piece_size, math.ceil(size / piece_size),
                                self.ctx.data_dir / "parts" / uuid.uuid4().hex)
            self._set_input_status(inp, "uploading")
            answer: dict[str, Any] = {"key": inp.path}
            if upload_id is not None:
                answer.update(uploadId=upload_id, pieceCount=inp.upload.piece_count, pieceSize=piece_size)
        if old is not None:
            shutil.rmtree(old.dir, ignore_errors=True)
        return json_response(answer, 201)

    def _upload_sign(self, req: Request) -> Response:
        """``POST …/upload/sign``: the headers and URL of one part's PUT."""
        body = _body(req)
        with self._lock:
            inp = self._input(req.params["input_id"])
            upload = self._open_upload(inp, req, body)
            if upload.upload_id is None:
                number, query = 1, []
            else:
                number = _whole(body, "partNumber", minimum=0)
                if not 1 <= number <= upload.piece_count:
                    raise _error(409, f"partNumber must be 1..{upload.piece_count} for upload {upload.upload_id}")
                query = [("partNumber", str(number)), ("uploadId", upload.upload_id)]
            content_type = _string(body, "contentType", required=False) or ""
            expired = self._expire_left > 0
            self._expire_left -= expired
            inp.signatures[number] += 1
            inp.signed_types[number] = content_type or None
            key = inp.path
        ttl = self.ctx.setting("sign_ttl")
        date = datetime.fromtimestamp(time.time() - (ttl + 1 if expired else 0), UTC).strftime(AMZ_DATE)
        token = secrets.token_urlsafe(32)
        signature = self._s3_signature(key, query, date, token, content_type)
        url = f"{self._base}{S3_PREFIX}{quote(key)}" + (f"?{urlencode(query)}" if query else "")
        signed = "content-type;host;x-amz-date;x-amz-security-token" if content_type else \
            "host;x-amz-date;x-amz-security-token"
        auth = (f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{date[:8]}/us-east-1/s3/aws4_request, "
                f"SignedHeaders={signed}, Signature={signature}")
        return json_response({"authHeader": auth, "dateHeader": date, "url": url, "securityToken": token})

    def _open_upload(self, inp: Input, req: Request, body: dict[str, Any]) -> Upload:
        """The input's upload that ``body``'s uploadId names, if still open; caller holds the lock."""
        upload = self._current_upload(inp, req, body)
        if upload.state != "open":
            raise _not_open(upload)
        return upload

    def _current_upload(self, inp: Input, req: Request, body: dict[str, Any]) -> Upload:
        """The input's upload that ``body``'s uploadId names (``amazon`` ones have none):
        409 if there is none, 404 for another uploadId; caller holds the lock."""
        upload = inp.upload
        if upload is None:
            raise _error(409, f"no upload was initialised for input {inp.id}")
        kind = req.arg("type")
        if kind is not None and kind != upload.type:
            raise _error(400, f"type {kind} does not match the input's {upload.type} upload")
        if upload.upload_id is not None:
            upload_id = _string(body, "uploadId")
            if upload_id != upload.upload_id:
                raise _error(404, f"upload {upload_id} not found")
        return upload

    def _part_put(self, req: Request) -> Response:
        """``PUT /ingestio-s3/{key}``: one signed part (or the whole ``amazon`` file), streamed to disk."""
        key = unquote(req.params["key"])
        self._check_s3_signature(req, key)
        with self._lock:
            inp = self._inputs.get(_key_input(key) or "")
            if inp is None or inp.path != key:
                raise _no_such_upload()
            upload = inp.upload
            if upload is None or upload.upload_id != req.arg("uploadId") or upload.state != "open":
                raise _no_such_upload()
            number = 1 if upload.upload_id is None else int(req.arg("partNumber") or 0)  # signed: 1..pieceCount
            part = upload.parts.setdefault(number, Part())
            part.puts += 1
        req.on_finish(lambda r: self._count_bytes(part, r.bytes_in))
        incoming = upload.dir / f"{number}.{uuid.uuid4().hex}.partial"
        md5 = hashlib.md5(usedforsecurity=False)  # S3's ETag of a part
        sha256 = hashlib.sha256()
        size = _receive(req, incoming, md5, *([sha256] if upload.upload_id is None else []))
        with self._lock:
            if self._inputs.get(inp.id) is not inp or inp.upload is not upload or upload.state != "open":
                incoming.unlink(missing_ok=True)
                raise _no_such_upload()
            if upload.upload_id is None:  # the whole file: the upload is complete
                os.replace(incoming, self._file_path(inp))
                upload.state = "completed"
                self._input_done(inp, size, sha256.hexdigest())
            else:
                os.replace(incoming, upload.dir / str(number))
            part.size, part.etag = size, md5.hexdigest()
        return Response(200, headers={"ETag": f'"{md5.hexdigest()}"'})

    def _count_bytes(self, part: Part, nbytes: int) -> None:
        with self._lock:
            part.bytes_received += nbytes

    def _upload_complete(self, req: Request) -> Response:
        """``POST …/upload/complete``: join the parts in order into the input's file."""
        body = _body(req)
        with self._lock:
            inp = self._input(req.params["input_id"])
            upload = self._current_upload(inp, req, body)
            if upload.upload_id is None:  # single PUT: complete already, or nothing to complete yet
                if upload.state != "completed":
                    raise _error(409, f"the file of input {inp.id} has not been uploaded")
                return json_response(self._input_json(inp))
            if upload.state != "open":
                raise _not_open(upload)
            missing = [n for n in range(1, upload.piece_count + 1)
                       if n not in upload.parts or upload.parts[n].size is None]
            if missing:
                raise _error(409, f"upload {upload.upload_id} is missing parts {', '.join(map(str, missing))}")
            wrong = [f"{n} ({upload.parts[n].size} bytes)" for n in range(1, upload.piece_count)
                     if upload.parts[n].size != upload.piece_size]
            if wrong:
                raise _error(409, f"parts {', '.join(wrong)} must be exactly pieceSize ({upload.piece_size} "
                                  "bytes); only the last part may differ")
            upload.state = "completing"  # parts, signatures, completes and aborts: 409 meanwhile
            self._set_input_status(inp, "processing")
            target = self._file_path(inp)
        try:
            size, digest = _join([upload.dir / str(n) for n in range(1, upload.piece_count + 1)], target)
        except BaseException:
            with self._lock:
                upload.state = "open"
                self._set_input_status(inp, "uploading")
            raise
        with self._lock:
            if self._inputs.get(inp.id) is not inp or inp.upload is not upload:
                target.unlink(missing_ok=True)
                raise _error(404, f"upload {upload.upload_id} not found")
            upload.state = "completed"
            self._input_done(inp, size, digest)
            answer = self._input_json(inp)
            lose = self._lose_complete_left > 0
            self._lose_complete_left -= lose
        shutil.rmtree(upload.dir, ignore_errors=True)
        if lose:
            raise ClientGone("lose_next_complete_answers: the complete is done, its answer is lost")
        return json_response(answer)

    def _input_done(self, inp: Input, size: int, digest: str) -> None:
        """The input's file is whole: probe it, record it, tell the hooks; caller holds the lock."""
        inp.assembled_size, inp.sha256 = size, digest
        with open(self._file_path(inp), "rb") as f:
            self._set_input_status(inp, "ready" if is_video_container(f.read(12)) else "error")
        data = self._input_json(inp)
        self._emit("inputs.complete", data["url"], data)

    def _upload_abort(self, req: Request) -> Response:
        """``POST …/upload/abort``: drop the stored parts; the input stays ``uploading``."""
        body = _body(req)
        with self._lock:
            inp = self._input(req.params["input_id"])
            upload = self._current_upload(inp, req, body)
            if upload.upload_id is None:
                raise _error(409, "amazon (single PUT) uploads cannot be aborted")
            if upload.state != "open":
                raise _not_open(upload)
            upload.state = "aborted"
            for part in upload.parts.values():
                part.size = part.etag = None
            self._set_input_status(inp, "uploading")
            answer = self._input_json(inp)
            self._emit("inputs.cancelled", answer["url"], answer)
        shutil.rmtree(upload.dir, ignore_errors=True)
        return json_response(answer, 201)

    def _file_path(self, inp: Input) -> Path:
        path = self.ctx.data_dir / "inputs" / inp.id
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _s3_signature(self, key: str, query: list[tuple[str, str]], date: str, token: str, content_type: str) -> str:
        canonical = "\n".join(("PUT", S3_PREFIX + key, urlencode(sorted(query)), content_type, date, token))
        return hmac.new(self._s3_secret, canonical.encode(), hashlib.sha256).hexdigest()

    def _check_s3_signature(self, req: Request, key: str) -> None:
        """403 unless the PUT carries the headers a sign call gave for this URL, in time, and
        exactly the Content-Type the sign call named (none if it named none)."""
        date = req.header("x-amz-date") or ""
        token = req.header("x-amz-security-token") or ""
        content_type = (req.header("Content-Type") or "").strip()
        query = [(name, value) for name, values in req.query.items() for value in values]
        match = SIGNATURE.search(req.header("Authorization") or "")
        expected = self._s3_signature(key, query, date, token, content_type)
        if match is None or not hmac.compare_digest(match.group(1), expected):
            raise _S3Error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match "
                                                         "the signature you provided.")
        signed_at = datetime.strptime(date, AMZ_DATE).replace(tzinfo=UTC).timestamp()  # ours: it was signed
        if time.time() > signed_at + self.ctx.setting("sign_ttl"):
            raise _S3Error(403, "AccessDenied", "Request has expired")


def _not_open(upload: Upload) -> HttpError:
    """409 for an upload that takes no more parts, signatures, completes or aborts."""
    if upload.state == "completing":
        return _error(409, "upload is being completed")
    return _error(409, f"upload already {upload.state}")  # completed, aborted


def _key_input(key: str) -> str | None:
    """The input id in an upload key ``<network>/<input id>/<filename>``."""
    parts = key.split("/")
    return parts[1] if len(parts) == 3 else None


def _receive(req: Request, path: Path, *hashes: Any) -> int:
    """Stream the body into ``path`` in blocks, updating ``hashes``; all or nothing. Returns its size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "wb") as f:
            for block in req.iter_body():
                f.write(block)
                for h in hashes:
                    h.update(block)
    except BaseException:
        path.unlink(missing_ok=True)  # a cut body stores nothing
        raise
    return req.bytes_in


def _join(parts: list[Path], target: Path) -> tuple[int, str]:
    """Concatenate ``parts`` into ``target``, streamed; returns its size and sha256."""
    digest = hashlib.sha256()
    size = 0
    with open(target, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(BLOCK_SIZE):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
    return size, digest.hexdigest()
