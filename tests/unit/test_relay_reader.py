"""The relay's reader (tasks/transfer/relay.RangeReader) as a file: what the push code of every
adapter reads from it, over an in-memory source that counts its ranged reads."""

from __future__ import annotations

import io

import pytest

from tasks.errors import TransientError
from tasks.transfer.relay import DIRECT, RangeReader

SIZE = 3 * DIRECT + 12345
DATA = bytes(i * 7 % 251 for i in range(SIZE))


class MemoryRemote:
    def __init__(self, data: bytes = DATA):
        self.data, self.size, self.validator = data, len(data), {"etag": '"1"'}
        self.ranges: list[tuple[int, int]] = []
        self.fetched: list[bytes] = []

    def fetch(self, start: int, end: int) -> bytes:
        self.ranges.append((start, end))
        self.fetched.append(self.data[start:end + 1])
        return self.fetched[-1]


def test_a_chunk_read_hands_over_the_fetched_bytes_and_reads_the_next_one_ahead():
    remote = MemoryRemote()
    reader = RangeReader(remote)
    first = reader.read(DIRECT)
    assert first == DATA[:DIRECT]
    assert first is remote.fetched[0]  # no copy of the chunk on its way to the provider
    second = reader.read(DIRECT)
    assert second == DATA[DIRECT:2 * DIRECT]
    assert remote.ranges[:2] == [(0, DIRECT - 1), (DIRECT, 2 * DIRECT - 1)]  # the second came from the read-ahead
    reader.close()


def test_reads_of_any_size_and_seeks_give_the_source_bytes():
    reader = RangeReader(MemoryRemote(), block=64 * 1024)
    out = io.BytesIO()
    for size in (1, 10, 8192, 100_000, DIRECT, DIRECT + 3, 17):
        out.write(reader.read(size))
    assert out.getvalue() == DATA[:out.tell()]
    assert reader.tell() == out.tell()
    reader.seek(SIZE - 100)
    assert reader.read() == DATA[-100:]
    assert reader.read(10) == b""
    reader.seek(-5000, io.SEEK_END)
    buffer = bytearray(6000)
    assert reader.readinto(buffer) == 5000 and bytes(buffer[:5000]) == DATA[-5000:]
    reader.seek(123)
    assert reader.read(-1) == DATA[123:]


def test_buffered_reads_across_blocks():
    reader = io.BufferedReader(RangeReader(MemoryRemote(), block=50_000), buffer_size=8192)
    assert reader.read() == DATA


def test_a_source_that_gives_nothing_is_a_transient_error():
    class Empty(MemoryRemote):
        def fetch(self, start: int, end: int) -> bytes:
            return b""

    with pytest.raises(TransientError, match="no bytes at offset 0"):
        RangeReader(Empty()).read(10)
