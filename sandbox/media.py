"""Test media: files that pass (or fail) the emulators' container check, and a file server.

:func:`make_video_file` writes a file of an exact size that looks like an MP4 (an ``ftyp``
box, then one ``mdat`` box covering the rest) filled with pseudo-random bytes, fast enough
for 2 GiB. :func:`is_video_container` is the check the emulators apply before
"processing", standing in for a provider's probe of the source: Gcore marks a non-video
source "File Invalid" (seed: gcore-upload-video-via-api.md, "Video upload and processing
statuses").

:class:`MediaServer` serves a directory under ``/media/<name>`` so pull-from-URL ingests
have an origin on the same port (endpoint ``media.get``, fault provider ``media``).
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from collections.abc import Iterator
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote

from .web import BLOCK_SIZE, FileBody, HttpError, Request, Response, Route, route

#: ``ftyp`` box: size, type, major brand ``isom``, minor version 0x200, compatible brands.
FTYP_BOX = struct.pack(">I4s4sI4s4s", 24, b"ftyp", b"isom", 0x200, b"isom", b"iso2")
#: EBML magic that starts every Matroska / WebM file.
EBML_MAGIC = b"\x1a\x45\xdf\xa3"
MIN_VIDEO_SIZE = len(FTYP_BOX) + 16  # ftyp + the largest mdat header


def is_video_container(head: bytes) -> bool:
    """True for an MP4/MOV (``ftyp`` at bytes 4..8) or Matroska/WebM (EBML magic) file head."""
    return head[4:8] == b"ftyp" or head[:4] == EBML_MAGIC


def make_video_file(path: str | os.PathLike[str], size_bytes: int, seed: int = 0) -> Path:
    """Write exactly ``size_bytes`` bytes that pass :func:`is_video_container`; same seed, same bytes.

    The payload repeats one random 1 MiB block, XOR-ed with the block index (a byte
    translation, so it runs at disk speed) and stamped with the index, so no two blocks of
    a file are identical and a misplaced chunk changes the file's hash.
    """
    if size_bytes < MIN_VIDEO_SIZE:
        raise ValueError(f"a video file needs at least {MIN_VIDEO_SIZE} bytes, got {size_bytes}")
    payload = size_bytes - len(FTYP_BOX)
    if payload < 2**32:
        header = FTYP_BOX + struct.pack(">I4s", payload, b"mdat")
    else:  # a 64-bit "largesize" box: size field 1, then the real size
        header = FTYP_BOX + struct.pack(">I4sQ", 1, b"mdat", payload)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(header)
        for block in _pseudo_random_blocks(size_bytes - len(header), seed):
            f.write(block)
    return path


def make_invalid_file(path: str | os.PathLike[str], size_bytes: int) -> Path:
    """Write ``size_bytes`` of text that fails :func:`is_video_container` (e.g. a playlist)."""
    line = b"#EXTM3U - this is a playlist, not a video container\n"
    path = Path(path)
    with open(path, "wb") as f:
        remaining = size_bytes
        block = line * (BLOCK_SIZE // len(line) + 1)
        while remaining:
            n = min(remaining, len(block))
            f.write(block[:n])
            remaining -= n
    return path


def _pseudo_random_blocks(total: int, seed: int) -> Iterator[bytes]:
    base = random.Random(seed).randbytes(BLOCK_SIZE)
    tables = [bytes(b ^ k for b in range(256)) for k in range(256)]
    index = 0
    while total > 0:
        block = struct.pack(">Q", index) + base.translate(tables[index % 256])[8:]
        yield block[:total]
        total -= len(block)
        index += 1


class MediaServer:
    """``GET``/``HEAD /media/<name>``: files under ``media_dir``, as a static origin (a CDN,
    nginx) serves them (RFC 9110): ``Content-Length``, ``ETag`` (nginx's form: mtime and size in
    hex), ``Last-Modified``, ``Accept-Ranges: bytes``; one ``Range: bytes=A-B`` -> 206 with
    ``Content-Range`` (416 when unsatisfiable); ``If-Match`` / ``If-Unmodified-Since`` that no
    longer hold -> 412. ``?ranges=off`` serves the file as an origin without range support
    does: no ``Accept-Ranges``, and ``Range`` ignored (a whole 200)."""

    provider = "media"

    def __init__(self, media_dir: str | os.PathLike[str] | None):
        self.media_dir = Path(media_dir).resolve() if media_dir is not None else None

    def routes(self) -> list[Route]:
        return [route("GET", r"/media/(?P<name>[^?]+)", "media.get", self._get, provider=self.provider),
                route("HEAD", r"/media/(?P<name>[^?]+)", "media.head", self._get, provider=self.provider)]

    def _get(self, req: Request) -> Response:
        path = self._resolve(unquote(req.params["name"]))
        info = path.stat()
        size = info.st_size
        etag = f'"{int(info.st_mtime):x}-{size:x}"'
        modified = formatdate(info.st_mtime, usegmt=True)
        ranges = req.arg("ranges") != "off"
        headers = {"Content-Type": "application/octet-stream", "ETag": etag, "Last-Modified": modified}
        if ranges:
            headers["Accept-Ranges"] = "bytes"
        if_match = req.header("If-Match")
        if if_match and if_match.strip() not in ("*", etag):
            raise HttpError(412, {"error": "Precondition Failed"})
        since = req.header("If-Unmodified-Since")
        if since and _parsed(since) is not None and int(info.st_mtime) > _parsed(since):
            raise HttpError(412, {"error": "Precondition Failed"})
        wanted = req.header("Range") if ranges else None
        if wanted:
            first, last = _range(wanted, size)
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            return Response(206, FileBody(path, first, last - first + 1), headers, length=last - first + 1)
        return Response(200, FileBody(path, 0, size), headers, length=size)

    def _resolve(self, name: str) -> Path:
        if self.media_dir is not None:
            path = (self.media_dir / name).resolve()
            # Refuse anything outside media_dir (``..``, absolute names, symlinks out).
            if path.is_relative_to(self.media_dir) and path.is_file():
                return path
        raise HttpError(404, {"error": "Not Found"})


def _range(header: str, size: int) -> tuple[int, int]:
    """One ``bytes=A-B`` / ``bytes=A-`` / ``bytes=-N`` range of a ``size``-byte file; 416 otherwise."""
    unit, _, spec = header.partition("=")
    first_s, _, last_s = spec.strip().partition("-")
    try:
        if unit.strip() != "bytes" or "," in spec:
            raise ValueError
        if first_s:
            first, last = int(first_s), int(last_s) if last_s else size - 1
        else:
            first, last = max(0, size - int(last_s)), size - 1
    except ValueError:
        raise HttpError(416, {"error": "Range Not Satisfiable"}, {"Content-Range": f"bytes */{size}"}) from None
    if first >= size or last < first:
        raise HttpError(416, {"error": "Range Not Satisfiable"}, {"Content-Range": f"bytes */{size}"})
    return first, min(last, size - 1)


def _parsed(http_date: str) -> int | None:
    try:
        return int(parsedate_to_datetime(http_date).timestamp())
    except (TypeError, ValueError):
        return None


def file_sha256(path: Path | None) -> str | None:
    """sha256 of a stored file, streamed (files can be 2 GiB); None if it is gone."""
    if path is None:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()
