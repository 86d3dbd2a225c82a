"""Local sources are re-checked at every open (issue 13, item 11): each test submits a file,
changes what lies at its path before any worker runs, then starts a worker: the job fails,
permanent, saying what changed - and no worker is held."""

from __future__ import annotations

import os
import shutil

import pytest

from tasks.producer import submit, wait
from tests.conftest import SOURCES, TMP, make_source

pytestmark = pytest.mark.integration


def _failed(start_fleet, job_id: str) -> dict:
    start_fleet(workers=1, concurrency=2)
    job = wait(job_id, 60)
    assert job["state"] == "failed", job
    assert job["error"]["kind"] == "permanent"
    return job


def test_a_folder_swapped_for_a_symlink_out_of_the_roots_is_not_read(start_fleet, sandbox) -> None:
    folder = SOURCES / "swapped"
    folder.mkdir(exist_ok=True)
    src = make_source("clip.mp4", 256 * 1024, folder=folder)
    job_id = submit({"provider": "gcore", "source": str(src)})
    outside = TMP / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(src, outside / "clip.mp4")
    folder.rename(SOURCES / "swapped.old")
    folder.symlink_to(outside, target_is_directory=True)
    try:
        job = _failed(start_fleet, job_id)
        assert "outside INGEST_SOURCE_ROOTS" in job["error"]["message"]
    finally:
        folder.unlink()


def test_a_file_replaced_by_a_fifo_fails_without_holding_a_worker(start_fleet, sandbox) -> None:
    src = make_source("fifo.mp4", 256 * 1024)
    job_id = submit({"provider": "gcore", "source": str(src)})
    src.unlink()
    os.mkfifo(src)
    try:
        job = _failed(start_fleet, job_id)
        assert "is no longer a regular file" in job["error"]["message"]
    finally:
        src.unlink()


def test_a_file_rewritten_after_submit_fails_naming_the_change(start_fleet, sandbox) -> None:
    src = make_source("rewritten.mp4", 256 * 1024)
    job_id = submit({"provider": "gcore", "source": str(src)})
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 5_000_000_000))  # same size, same inode
    job = _failed(start_fleet, job_id)
    assert "source changed since submit" in job["error"]["message"]


def test_a_part_damaged_on_the_way_is_refused_and_sent_again(start_fleet, sandbox) -> None:
    """Each S3 part carries its Content-MD5: a part that arrives damaged (the sandbox's S3 flips
    a byte of the second one) is refused (BadDigest) and sent again, so the object Brightcove
    ingests is the file submitted. Without the checksum S3 stores the damaged bytes."""
    from tests.conftest import sha256_of

    start_fleet(workers=1)
    sandbox.faults("s3", rules=[{"endpoint": "s3.upload_part", "action": "corrupt", "times": 1}])
    src = make_source("damaged.mp4", 12 * 1024 * 1024)  # multipart: 5 MiB parts in the tests
    job = wait(submit({"provider": "brightcove", "source": str(src)}), 120)
    assert job["state"] == "ready", job["error"]
    [video] = [v for v in sandbox.state("brightcove")["videos"] if v["id"] == job["provider_ids"]["video_id"]]
    assert video["jobs"][0]["source_sha256"] == sha256_of(src)
    refused = [e for e in sandbox.log(endpoint="s3.upload_part") if e["status"] == 400]
    assert [e["fault"] for e in refused] == ["rule:corrupt"]
