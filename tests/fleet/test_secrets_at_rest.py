"""Secrets at rest (issue 13, item 7): the upload credentials, signed URLs and OAuth tokens the
fleet keeps in Redis are sealed under INGEST_SECRET_KEY, so none of them is readable in any
key or in the append-only file (every write Redis ever persisted), and a worker without the key
refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tasks.producer import submit, wait
from tests.conftest import TMP, make_source

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def _issued_secrets(sandbox) -> list[str]:
    """Every secret the sandbox handed the fleet: Brightcove's S3 credentials, signed PUT URLs'
    signatures and OAuth tokens; Ittybit's upload signatures."""
    bc = sandbox.state("brightcove")
    found = [c[k] for c in bc["credentials_issued"] for k in ("secret_access_key", "session_token") if c.get(k)]
    found += [c["signed_url"].split("Signature=", 1)[1].split("&", 1)[0] for c in bc["credentials_issued"]]
    found += list(bc["tokens_issued"])
    found += [s["signature"] for s in sandbox.state("ittybit")["signatures_issued"]]
    return found


def _stored_everywhere(rt) -> bytes:
    """Every key's value as Redis holds it now, and every byte of its append-only files (the
    incremental ones are the commands as sent: whatever was ever written in clear is there)."""
    read = {"string": rt.redis.get, "list": lambda k: rt.redis.lrange(k, 0, -1), "hash": rt.redis.hgetall,
            "zset": lambda k: rt.redis.zrange(k, 0, -1), "set": rt.redis.smembers,
            "stream": lambda k: rt.redis.xrange(k)}
    blobs = [repr(read.get(rt.redis.type(key).decode(), lambda k: b"")(key)).encode()
             for key in rt.redis.scan_iter("*")]
    for root, _, files in os.walk(TMP / "redis"):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                blobs.append(f.read())
    return b"\n".join(blobs)


def test_no_secret_the_fleet_keeps_is_readable_in_redis_or_its_aof(start_fleet, sandbox, rt) -> None:
    start_fleet(workers=1, concurrency=2)
    jobs = [
        submit({"provider": "brightcove", "source": str(make_source("seal-small.mp4", 2 * MiB))}),  # one PUT
        submit({"provider": "brightcove", "source": str(make_source("seal-large.mp4", 12 * MiB))}),  # multipart
        submit({"provider": "ittybit", "source": str(make_source("seal-itty.mp4", 2 * MiB))}),  # signed PUT
    ]
    for job_id in jobs:
        assert wait(job_id, 120)["state"] == "ready"
    secrets = _issued_secrets(sandbox)
    assert len(secrets) >= 6
    stored = _stored_everywhere(rt)
    leaked = [s for s in secrets if s.encode() in stored]
    assert leaked == [], f"{len(leaked)} of {len(secrets)} secrets readable at rest"


def test_a_worker_without_the_secret_key_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if k != "INGEST_SECRET_KEY"}
    out = subprocess.run([sys.executable, "-m", "workers.cli", "worker"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "INGEST_SECRET_KEY is not set" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "workers.cli", "worker"], env={**env, "INGEST_SECRET_KEY": "short"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "INGEST_SECRET_KEY holds a value that is not a Fernet key" in out.stderr
