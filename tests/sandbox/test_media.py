"""The sandbox's media origin (``/media/``) as a static server serves files (RFC 9110 ranges and
conditions), and the fleet's relay reader over it (issue 15): ranged reads in blocks, a source
that changed refused, a server that ignores Range refused beyond one block."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests

from tasks.errors import PermanentError
from tasks.transfer.netguard import allow_nets, guarded_session
from tasks.transfer.relay import HttpRemote, RangeReader

MEDIA = {"clip.mp4": 3_000_000, "long.mp4": 17 * 1024 * 1024}
SANDBOX_OPTIONS: dict = {}
TIMEOUT = (5.0, 30.0)


def test_head_range_and_conditions(sandbox) -> None:
    url = f"{sandbox.url}/media/clip.mp4"
    head = requests.head(url, timeout=5)
    assert head.status_code == 200 and head.headers["Content-Length"] == "3000000"
    assert head.headers["Accept-Ranges"] == "bytes" and head.headers["ETag"].startswith('"')
    etag = head.headers["ETag"]
    part = requests.get(url, headers={"Range": "bytes=100-199", "If-Match": etag}, timeout=5)
    assert (part.status_code, part.headers["Content-Range"], len(part.content)) == (206, "bytes 100-199/3000000", 100)
    whole = requests.get(url, timeout=5).content
    assert part.content == whole[100:200]
    assert requests.get(url, headers={"Range": "bytes=-10"}, timeout=5).content == whole[-10:]
    assert requests.get(url, headers={"Range": "bytes=5000000-"}, timeout=5).status_code == 416
    assert requests.get(url, headers={"Range": "bytes=0-1", "If-Match": '"other"'}, timeout=5).status_code == 412
    plain = requests.get(f"{url}?ranges=off", headers={"Range": "bytes=0-9"}, timeout=5)
    assert plain.status_code == 200 and "Accept-Ranges" not in plain.headers and len(plain.content) == 3_000_000


def test_the_relay_reader_reads_in_blocks_and_refuses_a_changed_source(sandbox, media: Path) -> None:
    url = f"{sandbox.url}/media/clip.mp4"
    session = guarded_session(allow_nets("127.0.0.0/8"))
    remote = HttpRemote(url, session, timeout=TIMEOUT)
    calls = []
    fetch = remote.fetch
    remote.fetch = lambda start, end: calls.append((start, end)) or fetch(start, end)  # type: ignore[method-assign]
    reader = RangeReader(remote, block=1_000_000)
    digest = hashlib.sha256()
    while chunk := reader.read(300_000):
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256((media / "clip.mp4").read_bytes()).hexdigest()
    assert calls == [(0, 999_999), (1_000_000, 1_999_999), (2_000_000, 2_999_999)]  # one GET per block
    reader.seek(2_500_000)
    assert reader.read(10) == (media / "clip.mp4").read_bytes()[2_500_000:2_500_010]
    calls.clear()
    reader.seek(0)
    assert len(reader.read(1_500_000)) == 1_500_000  # a chunk: exactly it, and the next one read ahead
    assert reader.read(1_500_000) == (media / "clip.mp4").read_bytes()[1_500_000:3_000_000]
    assert calls == [(0, 1_499_999), (1_500_000, 2_999_999)]  # the second chunk came from the read-ahead

    first = dict(remote.validator, size=remote.size)
    os.utime(media / "clip.mp4", (1, 1))  # the origin's file is replaced (its ETag changes)
    with pytest.raises(PermanentError, match="source changed since its first read"):
        HttpRemote(url, session, timeout=TIMEOUT, expected=first)
    with pytest.raises(PermanentError, match="source changed"):
        RangeReader(remote).read(10)  # a read made conditional on the first ETag: 412


def test_a_server_that_ignores_range_is_relayed_only_when_small(sandbox) -> None:
    session = guarded_session(allow_nets("127.0.0.0/8"))
    small = HttpRemote(f"{sandbox.url}/media/notes.txt?ranges=off", session, timeout=TIMEOUT)
    assert len(RangeReader(small).read()) == 4096
    within = RangeReader(HttpRemote(f"{sandbox.url}/media/clip.mp4?ranges=off", session, timeout=TIMEOUT))
    within.seek(1_500_000)  # a resumed slice: the whole body again, kept from its offset
    assert len(within.read(2_000_000)) == 1_500_000
    big = HttpRemote(f"{sandbox.url}/media/long.mp4?ranges=off", session, timeout=TIMEOUT)
    with pytest.raises(PermanentError, match="ignores Range requests"):
        RangeReader(big).read(10)
