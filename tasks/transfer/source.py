"""Opening a local source at every read, re-checked (issue 13): a worker trusts nothing it saw
at submit. Between submit and a slice a folder may have been swapped for a symlink that leads
out of ``INGEST_SOURCE_ROOTS``, the file replaced by a FIFO (which would hold a worker on
``open``) or by another file, or the file rewritten. Each open resolves the path again, opens
it non-blocking without following a final symlink, and compares what it opened with what was
recorded at submit (size, inode, modification time): anything else fails the job, permanent,
with that reason.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3

from ingest_fleet.intent import fingerprint
from ingest_fleet.urls import redacted
from tasks.errors import ConfigError, PermanentError, TransientError
from tasks.transfer.netguard import guarded_session
from tasks.transfer.relay import HttpRemote, RangeReader, S3Remote

#: How far apart two readings of one mtime may be and still be the same file (a shared
#: volume may round it to microseconds).
MTIME_SLACK_NS = 1_000_000


def open_source(path: str, roots: Sequence[Path], expected: dict[str, Any] | None) -> BinaryIO:
    """``path`` opened for reading, after the checks above; PermanentError saying what changed."""
    if not roots:
        raise ConfigError("INGEST_SOURCE_ROOTS is not set on this worker: it reads local sources only from "
                          "there; set it as where the job was submitted")
    real = os.path.realpath(path)
    if not any(real == str(root) or real.startswith(str(root).rstrip(os.sep) + os.sep) for root in roots):
        raise PermanentError(f"source {path} now resolves to {real}, outside INGEST_SOURCE_ROOTS")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PermanentError(f"source {path} is gone") from None
    except OSError as exc:  # ELOOP: the last component became a symlink after it was resolved
        raise PermanentError(f"cannot open source {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PermanentError(f"source {path} is no longer a regular file")
        if expected:
            now = fingerprint(info)
            if now["size"] != expected["size"] or now["ino"] != expected["ino"] or \
                    abs(now["mtime_ns"] - expected["mtime_ns"]) > MTIME_SLACK_NS:
                raise PermanentError(f"source changed since submit: {path} is now {now['size']} bytes (was "
                                     f"{expected['size']}), inode {now['ino']} (was {expected['ino']}), "
                                     f"modified {now['mtime_ns'] - expected['mtime_ns']:+d} ns later")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_remote(url: str, settings: Any, expected: dict[str, Any] | None = None) -> RangeReader:
    """A relayed source (an http(s) URL or ``s3://BUCKET/KEY``) opened for reading in ranges:
    its size and validator are read now (and compared with ``expected``, the first read's)."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        s3 = settings.source_s3
        client = boto3.client("s3", endpoint_url=s3.endpoint or None, region_name=s3.region or None,
                              aws_access_key_id=s3.access_key_id or None,
                              aws_secret_access_key=s3.secret_access_key or None)
        return RangeReader(S3Remote(client, parts.netloc, parts.path.lstrip("/"), expected=expected))
    session = guarded_session(settings.relay_allow_nets)
    remote = HttpRemote(url, session, timeout=(settings.http_connect_timeout, settings.http_read_timeout),
                        expected=expected, shown=redacted(url))
    return RangeReader(remote)


def size_of(f: Any) -> int:
    """The size of an opened source: a relayed one knows it, a file asks the OS."""
    size = getattr(f, "size", None)
    return int(size) if size is not None else os.fstat(f.fileno()).st_size


def read_range(f: Any, offset: int, length: int) -> bytes:
    """``length`` bytes of an opened source from ``offset`` (a part, a chunk), all of them."""
    f.seek(offset)
    data = bytes(f.read(length))
    if len(data) != length:
        raise TransientError(f"the source gave {len(data)} of the {length} bytes at offset {offset}")
    return data
