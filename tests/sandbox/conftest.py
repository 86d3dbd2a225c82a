"""Fixtures the emulator tests share: a media folder, an in-process Sandbox with the module's
options, the notification receiver (tests/receiver.py) and a clean slate for every test.

A test module says what differs, at module level:

* ``MEDIA`` - ``{file name: size}`` of the video files served under ``/media/`` (seeded 1, 2, ...
  in that order); ``notes.txt``, 4 KiB that is not a video, is always there;
* ``SANDBOX_OPTIONS`` - the emulator options (``Sandbox(<provider>_<option>=...)``);
* ``PROCESSING_SECONDS`` (default 0.3) and ``RECEIVER_PATH`` (default ``/hooks``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox import Sandbox, make_invalid_file, make_video_file
from tests.receiver import Receiver


@pytest.fixture(scope="module")
def media(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("media")
    for seed, (name, size) in enumerate(request.module.MEDIA.items(), 1):
        make_video_file(d / name, size, seed=seed)
    make_invalid_file(d / "notes.txt", 4096)
    return d


@pytest.fixture(scope="module")
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, media: Path) -> Iterator[Sandbox]:
    sb = Sandbox(data_dir=tmp_path_factory.mktemp("data"), media_dir=media,
                 processing_seconds=getattr(request.module, "PROCESSING_SECONDS", 0.3), seed=1,
                 **request.module.SANDBOX_OPTIONS)
    with sb:
        yield sb


@pytest.fixture(scope="module")
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    r = Receiver(getattr(request.module, "RECEIVER_PATH", "/hooks"))
    yield r
    r.close()


@pytest.fixture(autouse=True)
def clean(sandbox: Sandbox, receiver: Receiver) -> None:
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=30).raise_for_status()
    receiver.clear()
