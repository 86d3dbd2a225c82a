"""Secrets at rest (issue 13, item 7): the upload credentials, signed URLs and OAuth tokens the
fleet keeps in Redis are sealed under INGEST_SECRET_KEY, so none of them is readable in any
key or in the append-only file (every write Redis ever persisted), and a worker without the key
refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import quote, urlencode

import pytest

from tasks.producer import submit, wait
from tests.conftest import MEDIA, SANDBOX_URL, TMP, cli, make_source, sha256_of

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


def test_credentials_in_a_source_url_are_sealed_and_shown_masked(start_fleet, sandbox, rt) -> None:
    """A presigned source URL is relayed (issue 15): the workers read it (unsealed for each
    slice), the provider never gets it; the record, the CLI, the logs, Redis and its AOF only
    ever show it with the signature masked."""
    fleet = start_fleet(workers=1)
    src = make_source("signed.mp4", 300_000, folder=MEDIA)
    signature, credential = "Zk3vQ9sig+SECRET/value=", "AKIAEXAMPLE/20261206/us-east-1/s3/aws4_request"
    query = urlencode({"X-Amz-Credential": credential, "X-Amz-Signature": signature, "X-Amz-Expires": "600"})
    url = f"{SANDBOX_URL}/media/{src.name}?{query}"
    job = wait(submit({"provider": "gcore", "source": url}), 60)
    assert job["state"] == "ready", job["error"]
    assert job["source"] == f"{SANDBOX_URL}/media/{src.name}?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=600"
    assert "source_sealed" not in job
    [video] = sandbox.state("gcore")["videos"]
    assert job["relay"] and not video["origin_url"] and video["sha256"] == sha256_of(src)

    shown = cli("status", job["id"], "--json").stdout + cli("jobs", "--json").stdout + fleet.logs()
    stored = _stored_everywhere(rt)
    for secret in (signature, credential, quote(signature, safe=""), quote(credential, safe="")):
        assert secret not in shown, secret
        assert secret.encode() not in stored, secret


def test_a_source_url_with_credentials_needs_the_key_where_it_is_submitted(sandbox) -> None:
    env = {k: v for k, v in os.environ.items() if k != "INGEST_SECRET_KEY"}
    out = cli("submit", "--provider", "gcore", "--source", f"{SANDBOX_URL}/media/a.mp4?sig=abc123", env=env)
    assert out.returncode == 2 and "INGEST_SECRET_KEY is not set" in out.stderr, out.stderr
    assert "abc123" not in out.stderr + out.stdout
