"""Ittybit files: create (from a URL), list and get them, and the fetching of a source.

Files. ``POST /files`` ``{url, filename?, folder?, metadata?, label?, ref?}`` downloads the URL
while the client waits (http/https, up to 3 attempts expecting 200, streamed to disk),
checks the container and answers 201 with the File: ``id`` (``file_…``), ``object``,
``kind`` ``video``, ``type`` (``video/mp4``, or ``video/webm`` for Matroska), ``width``,
``height``, ``duration``, ``fps``, ``filesize``, ``url`` (``<sandbox>/files-cdn/{folder/}
{filename}``; the sandbox does not serve it), ``folder``, ``filename`` (default: the URL's
last path segment), ``status`` ``ready``, ``metadata``, ``label``, ``ref``, ``created``,
``updated`` (ISO 8601, UTC, seconds). The ``create_file_answer_delay`` setting (seconds)
makes ``POST /files`` answer that much later *after* the file exists, as when a client's
read timeout fires while Ittybit finishes. ``GET /files`` lists files newest first (``limit``,
``page``; sdk-php v1.0.0 ``FilesListRequest``).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from ..fetch import FetchFailed, download
from ..media import EBML_MAGIC, is_video_container
from ..web import Request, Response, json_response
from .api import FILE_FIELDS, _new_id, _now, _optional_str

log = logging.getLogger(__name__)

FETCH_ATTEMPTS = 3
FETCH_RETRY_DELAY = 0.25  # seconds times the attempt number; short so tests stay fast
FETCH_TIMEOUT = 30.0
# The File's media properties: plausible constants, the duration derived from the size.
WIDTH, HEIGHT, FPS = 1920, 1080, 30
SOURCE_BYTES_PER_SECOND = 500_000
UNSUPPORTED = "Unsupported file type"
UNFETCHABLE = "Could not fetch url"


@dataclass
class StoredFile:
    id: str
    folder: str | None
    filename: str
    type: str
    filesize: int
    path: Path  # the stored bytes
    metadata: dict[str, Any]
    label: str | None
    created: str
    status: str = "ready"
    ref: str | None = None


class _Rejected(Exception):
    """A source cannot be ingested: the client-facing message and its bare-shape ``kind``."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class Files:
    """The files resource and source fetching, mixed into the emulator (whose ``__init__`` declares ``_files``)."""

    def _file_json(self, f: StoredFile, status: str | None = None) -> dict[str, Any]:
        path = f"{f.folder}/{f.filename}" if f.folder else f.filename
        return {
            "id": f.id, "object": "file", "kind": "video", "type": f.type, "width": WIDTH, "height": HEIGHT,
            "duration": round(f.filesize / SOURCE_BYTES_PER_SECOND, 3), "fps": FPS, "filesize": f.filesize,
            "url": f"{self._base}/files-cdn/{quote(path)}", "folder": f.folder, "filename": f.filename,
            "status": status or f.status, "metadata": f.metadata, "label": f.label, "ref": f.ref, "created": f.created,
            "updated": f.created,
        }

    def _file_response(self, shape: str, f: StoredFile, status: int = 200) -> Response:
        return json_response(self._envelope(shape, self._file_json(f), f"{self._base}/files/{f.id}"), status)

    def _create_file(self, req: Request) -> Response:
        """``POST /files``: fetch and check the source while the client waits (seed, option 1)."""
        shape = self._api(req)
        body = self._json_body(req, shape, FILE_FIELDS)
        url, filename, folder, metadata = self._ingest_fields(body, shape)
        label = _optional_str(body, "label", self._invalid(shape))
        ref = _optional_str(body, "ref", self._invalid(shape))
        try:
            path, size, mime = self._acquire(url, lambda: True)
        except _Rejected as exc:
            raise self._error(shape, 400, str(exc), exc.kind) from None
        f = self._add_file(path, size, mime, folder, filename or _default_filename(url), metadata, label, ref)
        req.entity = f.id
        delay = self.ctx.setting("create_file_answer_delay")
        if delay:  # the file exists; its answer is late (a client's read timeout, see Files)
            self.ctx.stopping.wait(delay)
        return self._file_response(shape, f, 201)

    def _list_files(self, req: Request) -> Response:
        """``GET /files``: newest first, paged by ``limit`` and ``page`` (SDK v1.0.0 ``FilesListRequest``)."""
        shape = self._api(req)
        with self._lock:
            files = [self._file_json(f) for f in reversed(self._files.values())]
        return self._list_response(req, shape, files, "/files")

    def _get_file(self, req: Request) -> Response:
        shape = self._api(req)
        with self._lock:
            f = self._files.get(req.params["file_id"])
        if f is None:
            raise self._error(shape, 404, "File not found", "file_not_found")
        return self._file_response(shape, f)

    def _acquire(self, url: str, alive: Callable[[], bool]) -> tuple[Path, int, str]:
        """Fetch ``url`` and check it is a video: ``(path, size, type)``, else :class:`_Rejected`."""
        path = self._incoming()
        try:
            size = self._fetch(url, path, alive)
        except FetchFailed as exc:
            path.unlink(missing_ok=True)
            log.info("ittybit: could not fetch %s: %s", url, exc)
            raise _Rejected(UNFETCHABLE, "url_unreachable") from None
        mime = _video_type(path)
        if mime is None:
            path.unlink(missing_ok=True)
            raise _Rejected(UNSUPPORTED, "format_unsupported")
        return path, size, mime

    def _fetch(self, url: str, path: Path, alive: Callable[[], bool]) -> int:
        """Download ``url`` to ``path``: up to 3 attempts expecting 200."""
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise FetchFailed(f"unsupported URL scheme {scheme!r}")
        attempt = 1
        while True:
            try:
                return self._download(url, path, alive)
            except FetchFailed:
                if attempt == FETCH_ATTEMPTS or not alive() or self.ctx.stopping.wait(FETCH_RETRY_DELAY * attempt):
                    raise
            attempt += 1

    def _download(self, url: str, path: Path, alive: Callable[[], bool]) -> int:
        return download(url, path, timeout=FETCH_TIMEOUT, alive=alive, stopping=self.ctx.stopping)

    def _add_file(self, data: Path, size: int, mime: str, folder: str | None, filename: str,
                  metadata: dict[str, Any], label: str | None, ref: str | None = None) -> StoredFile:
        """Move checked bytes into the project's files."""
        file_id = _new_id("file_")
        path = self.ctx.data_dir / "files" / file_id
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(data, path)  # same filesystem: a rename, even for 2 GiB
        f = StoredFile(id=file_id, folder=folder, filename=filename, type=mime, filesize=size, path=path,
                       metadata=metadata, label=label, created=_now(), ref=ref)
        with self._lock:
            self._files[f.id] = f
        return f

    def _incoming(self) -> Path:
        path = self.ctx.data_dir / "incoming" / uuid.uuid4().hex
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


def _default_filename(url: str) -> str:
    """The URL's last path segment, as Ittybit names an ingested file by default."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name if name and name not in (".", "..") and "\\" not in name and len(name) <= 255 else "file"


def _video_type(path: Path) -> str | None:
    """The MIME type of a video container, or None (the emulators' stand-in for a probe)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return None
    if not is_video_container(head):
        return None
    return "video/webm" if head.startswith(EBML_MAGIC) else "video/mp4"
