"""Relayed sources (issue 15), through real workers, Redis and the sandbox: a URL the provider
cannot fetch is read by the fleet in ranges (the sandbox's media origin serves Range) and fed
to the provider's push protocol; a source that changes is refused, whenever it changes."""

from __future__ import annotations

import json
import os
import time

import pytest

from ingest_fleet import Client
from tasks.producer import status, submit, wait
from tests.conftest import MEDIA, SANDBOX_URL, cli, kill9_pool, make_source, sha256_of

pytestmark = pytest.mark.integration
MiB = 1024 * 1024


def test_ingestio_takes_a_video_from_an_http_url(start_fleet, sandbox) -> None:
    src = make_source("relayed-io.mp4", 12 * MiB, folder=MEDIA)
    start_fleet(workers=1)
    done = cli("submit", "--provider", "ingestio", "--source", f"{SANDBOX_URL}/media/{src.name}", "--wait",
               "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["mode"] == "push" and job["relay"] and job["bytes_total"] == src.stat().st_size
    assert job["source_stat"]["etag"] and job["source_stat"]["size"] == src.stat().st_size
    [inp] = [i for i in sandbox.state("ingestio")["inputs"] if i["id"] == job["provider_ids"]["input_id"]]
    assert inp["sha256"] == sha256_of(src)
    ranged = [e for e in sandbox.log(endpoint="media.get") if e["status"] == 206]
    assert ranged and all(e["status"] != 200 for e in sandbox.log(endpoint="media.get"))  # never read whole


@pytest.fixture
def tls_origin(tmp_path):
    """The sandbox's media origin over HTTPS (a certificate for 127.0.0.1 from a test CA):
    (base URL, CA file)."""
    import ssl

    from sandbox import Sandbox
    from tests.fleet.test_tls import _certificates

    ca, cert, key = _certificates(tmp_path)
    origin = Sandbox(media_dir=MEDIA, data_dir=tmp_path / "origin")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    origin._httpd.socket = context.wrap_socket(origin._httpd.socket, server_side=True)
    origin.start()
    try:
        yield origin.url.replace("http://", "https://"), ca
    finally:
        origin.stop()


def test_ingestio_takes_a_video_from_an_https_url_checking_its_certificate(start_fleet, sandbox, tls_origin) -> None:
    base, ca = tls_origin
    src = make_source("relayed-tls.mp4", 3 * MiB, folder=MEDIA)
    url = f"{base}/media/{src.name}"
    refused = cli("submit", "--provider", "ingestio", "--source", url)  # the test CA is not trusted
    assert refused.returncode == 2 and "certificate" in refused.stderr.lower(), refused.stderr

    trusted = {**os.environ, "REQUESTS_CA_BUNDLE": str(ca)}
    start_fleet(workers=1, env={"REQUESTS_CA_BUNDLE": str(ca)})
    done = cli("submit", "--provider", "ingestio", "--source", url, "--wait", "--json", env=trusted, timeout=120)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "ready" and job["relay"] and job["source"] == url
    [inp] = [i for i in sandbox.state("ingestio")["inputs"] if i["id"] == job["provider_ids"]["input_id"]]
    assert inp["sha256"] == sha256_of(src)


def test_relay_on_request_and_from_the_client(start_fleet, sandbox) -> None:
    """``relay: true`` makes the fleet push a URL Gcore could fetch itself; a client's relayed
    job is sized and checked by the worker that admits it."""
    src = make_source("relayed-gcore.mp4", 3 * MiB, folder=MEDIA)
    start_fleet(workers=1)
    url = f"{SANDBOX_URL}/media/{src.name}"
    job = wait(submit({"provider": "gcore", "source": url, "relay": True}), 90)
    assert job["state"] == "ready" and job["mode"] == "push", job["error"]
    [video] = [v for v in sandbox.state("gcore")["videos"] if v["id"] == job["provider_ids"]["video_id"]]
    assert video["sha256"] == sha256_of(src) and video["origin_url"] in (None, "")

    client = Client()
    from_app = client.wait(client.submit({"provider": "ittybit", "source": url, "relay": True}), timeout=90)
    assert from_app["state"] == "ready" and from_app["bytes_total"] == src.stat().st_size, from_app["error"]


def test_a_source_that_changes_mid_relay_fails_saying_so(start_fleet, sandbox) -> None:
    src = make_source("relayed-changing.mp4", 40 * MiB, folder=MEDIA)
    sandbox.faults("gcore", latency_ms=300, latency_endpoints=["gcore.tus_patch"])  # slices take a moment
    start_fleet(workers=1)
    job_id = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{src.name}", "relay": True})
    deadline = time.monotonic() + 60
    while (status(job_id)["bytes_done"] or 0) == 0:
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    os.utime(src, (time.time() + 100, time.time() + 100))  # the origin's file is replaced mid-relay
    job = wait(job_id, 90)
    assert job["state"] == "failed" and "source changed since its first read" in job["error"]["message"], job
    assert job["error"]["kind"] == "permanent" and job["bytes_done"] < src.stat().st_size


def test_gcore_and_brightcove_take_an_s3_object_relayed(start_fleet, sandbox) -> None:
    import boto3

    endpoint = os.environ["INGEST_BRIGHTCOVE_S3_ENDPOINT"]  # the sandbox's S3 (moto)
    s3env = {"INGEST_SOURCE_S3_ENDPOINT": endpoint, "INGEST_SOURCE_S3_REGION": "us-east-1",
             "INGEST_SOURCE_S3_ACCESS_KEY_ID": "relay-test", "INGEST_SOURCE_S3_SECRET_ACCESS_KEY": "relay-secret-42x"}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="relay-test",
                      aws_secret_access_key="relay-secret-42x")
    s3.create_bucket(Bucket="relay-sources")
    src = make_source("relayed-s3.mp4", 7 * MiB)
    s3.upload_file(str(src), "relay-sources", "library/a.mp4")
    start_fleet(workers=1, env=s3env)
    client = Client()
    gcore = client.submit({"provider": "gcore", "source": "s3://relay-sources/library/a.mp4"})  # Gcore reads no s3
    bc = client.submit({"provider": "brightcove", "source": "s3://relay-sources/library/a.mp4", "relay": True})
    g, b = client.wait(gcore, timeout=120), client.wait(bc, timeout=120)
    assert (g["state"], b["state"]) == ("ready", "ready"), (g["error"], b["error"])
    assert g["source_stat"]["etag"] and g["bytes_total"] == src.stat().st_size
    [video] = [v for v in sandbox.state("gcore")["videos"] if v["id"] == g["provider_ids"]["video_id"]]
    assert video["sha256"] == sha256_of(src)
    [row] = [v for v in sandbox.state("brightcove")["videos"] if v["id"] == b["provider_ids"]["video_id"]]
    assert row["jobs"][0]["source_sha256"] == sha256_of(src)


def test_kill_9_mid_relay_resumes_at_the_providers_offset(start_fleet, sandbox) -> None:
    """The process relaying killed (kill -9): its worker sends the step again at once and a new
    process takes the job on from the offset Gcore acknowledged; the origin is read chunk by
    chunk, at most one chunk twice. (The whole worker killed: tests/fleet/test_gcore.py.)"""
    chunk = int(os.environ["INGEST_TUS_CHUNK_SIZE"]) if "INGEST_TUS_CHUNK_SIZE" in os.environ else 10_000_000
    size = 60 * MiB
    src = make_source("relayed-killed.mp4", size, folder=MEDIA)
    sandbox.faults("gcore", latency_ms=200, latency_endpoints=["gcore.tus_patch"])
    fleet = start_fleet(workers=1, concurrency=1)
    job_id = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{src.name}", "relay": True})
    deadline = time.monotonic() + 60
    while (done := status(job_id)["bytes_done"] or 0) < 2 * chunk:
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    assert done < size - chunk, "the relay finished before the kill; slow it down further"
    kill9_pool(fleet.workers[0])  # the process relaying; the worker goes on with a new one
    job = wait(job_id, 60)  # sent again at once (default_retry_delay), not after the visibility timeout
    assert job["state"] == "ready", job["error"]
    [video] = [v for v in sandbox.state("gcore")["videos"] if v["id"] == job["provider_ids"]["video_id"]]
    assert video["sha256"] == sha256_of(src)
    reads = [e for e in sandbox.log(endpoint="media.get") if e["status"] == 206]
    # At most the chunk in flight and the one read ahead of it are read again after the kill.
    assert len(reads) <= -(-size // chunk) + 2, f"{len(reads)} ranged reads for {-(-size // chunk)} chunks"


def test_a_small_source_from_a_server_without_range_is_relayed_whole(start_fleet, sandbox) -> None:
    src = make_source("relayed-norange.mp4", 12 * MiB, folder=MEDIA)  # more than one TUS chunk
    start_fleet(workers=1)
    job = wait(submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{src.name}?ranges=off",
                       "relay": True}), 90)
    assert job["state"] == "ready", job["error"]
    [video] = [v for v in sandbox.state("gcore")["videos"] if v["id"] == job["provider_ids"]["video_id"]]
    assert video["sha256"] == sha256_of(src)
