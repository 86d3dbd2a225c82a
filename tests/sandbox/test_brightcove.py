"""The Brightcove emulator over real sockets: OAuth, CMS and Dynamic Ingest with requests, S3 with boto3.

One sandbox serves the whole module (``processing_seconds=0.3``) and one small HTTP server
receives the ingest callbacks; every test starts from ``POST /_sandbox/reset``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

CLIENT_ID = "test-bc-client"
SECRET = "test-bc-secret-5Tq9"
ACCOUNT = "6200000000042"
BUCKET = "ingestion-upload-sandbox"
MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]
RENDITIONS = ["default/audio64", "default/audio128", "default/video360", "default/video720", "default/video1080"]


# -- fixtures and helpers ----------------------------------------------------------------


MEDIA = {"clip.mp4": 15 * MiB, "small.mp4": 300_000}  # clip: three 5 MiB parts
SANDBOX_OPTIONS = {"brightcove_client_id": CLIENT_ID, "brightcove_client_secret": SECRET, "brightcove_account_id": ACCOUNT}
RECEIVER_PATH = "/bc-callbacks"


def get_token(sandbox, secret: str = SECRET) -> requests.Response:
    return requests.post(f"{sandbox.url}/v4/access_token", auth=(CLIENT_ID, secret),
                         data={"grant_type": "client_credentials"}, timeout=5)


@pytest.fixture
def bc(sandbox):
    """A session that talks to the CMS and DI APIs like the fleet does."""
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {get_token(sandbox).json()['access_token']}"
    s.headers["Content-Type"] = "application/json"  # the DI and CMS references list it on every call
    s.base = f"{sandbox.url}/v1/accounts/{ACCOUNT}"
    yield s
    s.close()


def create_video(bc, **fields) -> dict:
    r = bc.post(f"{bc.base}/videos", json={"name": "clip", **fields}, timeout=5)
    assert r.status_code == 201, r.text
    return r.json()


def upload_urls(bc, video_id: str, source_name: str = "clip.mp4") -> dict:
    r = bc.get(f"{bc.base}/videos/{video_id}/upload-urls/{source_name}", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def ingest(bc, video_id: str, url: str, **fields) -> str:
    r = bc.post(f"{bc.base}/videos/{video_id}/ingest-requests", json={"master": {"url": url}, **fields}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def wait_job(bc, video_id: str, job_id: str, states=("finished", "failed"), timeout: float = 15.0):
    """Poll the job (10/s, under the 20 req/s limit) until it is in ``states``; returns it and the states seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        r = bc.get(f"{bc.base}/videos/{video_id}/ingest_jobs/{job_id}", timeout=5)
        assert r.status_code == 200, r.text
        job = r.json()
        if not seen or seen[-1] != job["state"]:
            seen.append(job["state"])
        if job["state"] in states:
            return job, seen
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job['state']}"
        time.sleep(0.1)


def s3_client(sandbox, creds: dict):
    """boto3 as the fleet uses it: the temporary credentials from upload-urls, path-style."""
    return boto3.session.Session().client(
        "s3", endpoint_url=sandbox.env()["INGEST_BRIGHTCOVE_S3_ENDPOINT"], region_name="us-east-1",
        aws_access_key_id=creds["access_key_id"], aws_secret_access_key=creds["secret_access_key"],
        aws_session_token=creds["session_token"], config=Config(s3={"addressing_style": "path"}))


def put_faults(sandbox, provider: str = "brightcove", **config) -> dict:
    r = requests.put(f"{sandbox.url}/_sandbox/faults", json={"provider": provider, **config}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def log(sandbox, **params) -> list[dict]:
    return requests.get(f"{sandbox.url}/_sandbox/log", params=params, timeout=5).json()["entries"]


def state(sandbox) -> dict:
    return requests.get(f"{sandbox.url}/_sandbox/state/brightcove", timeout=30).json()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- OAuth -----------------------------------------------------------------------------


def test_oauth_issues_bearer_tokens_and_rejects_bad_credentials(sandbox):
    r = get_token(sandbox)
    assert r.status_code == 200
    body = r.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 300) and len(body["access_token"]) > 40
    by_query = requests.post(f"{sandbox.url}/v4/access_token?grant_type=client_credentials",
                             auth=(CLIENT_ID, SECRET), timeout=5)
    assert by_query.status_code == 200  # grant_type in the query works too

    invalid = {"error": "invalid_client", "error_description": "The client credentials are invalid"}
    r = get_token(sandbox, "wrong")
    assert (r.status_code, r.json()) == (401, invalid)
    r = requests.post(f"{sandbox.url}/v4/access_token", data={"grant_type": "client_credentials"}, timeout=5)
    assert (r.status_code, r.json()) == (401, invalid)
    r = requests.post(f"{sandbox.url}/v4/access_token", auth=(CLIENT_ID, SECRET), data={"grant_type": "password"},
                      timeout=5)
    assert (r.status_code, r.json()["error"]) == (400, "unsupported_grant_type")
    assert state(sandbox)["tokens_issued"] == [body["access_token"], by_query.json()["access_token"]]


def test_calls_need_a_valid_unexpired_token(sandbox, bc):
    assert put_faults(sandbox, token_ttl=1)["token_ttl"] == 1
    short = get_token(sandbox).json()
    assert short["expires_in"] == 1
    headers = {"Authorization": f"Bearer {short['access_token']}"}
    assert requests.post(f"{bc.base}/videos", json={"name": "x"}, headers=headers, timeout=5).status_code == 201
    time.sleep(1.1)
    r = requests.post(f"{bc.base}/videos", json={"name": "x"}, headers=headers, timeout=5)
    assert (r.status_code, r.json()) == (401, [{"error_code": "UNAUTHORIZED", "message": "Access token expired."}])

    video = create_video(bc)  # the fixture's token was issued with the default 300 s
    denied = [{"error_code": "UNAUTHORIZED", "message": "Permission denied."}]
    for auth in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Basic {short['access_token']}"}):
        for method, path in (("GET", f"/videos/{video['id']}"), ("GET", f"/videos/{video['id']}/ingest_jobs"),
                             ("GET", f"/videos/{video['id']}/upload-urls/a.mp4"),
                             ("POST", f"/videos/{video['id']}/ingest-requests")):
            r = requests.request(method, f"{bc.base}{path}", headers=auth, json={}, timeout=5)
            assert (r.status_code, r.json()) == (401, denied), (method, path, auth)
    r = bc.get(f"{sandbox.url}/v1/accounts/999/videos/{video['id']}", timeout=5)
    assert r.status_code == 403 and r.json()[0]["error_code"] == "ACCESS_DENIED"


# -- CMS -------------------------------------------------------------------------------


def test_create_video_409_on_reference_id_and_ref_lookup(bc):
    video = create_video(bc, reference_id="intent-42", description="d", tags=["a", "b"],
                         custom_fields={"team": "fleet"})
    assert len(video["id"]) == 13 and video["id"].isdigit() and video["account_id"] == ACCOUNT
    assert (video["name"], video["reference_id"], video["description"], video["tags"]) == ("clip", "intent-42", "d",
                                                                                          ["a", "b"])
    assert (video["complete"], video["state"], video["duration"], video["custom_fields"]) == (
        False, "ACTIVE", None, {"team": "fleet"})
    assert video["created_at"].endswith("Z") and video["updated_at"] == video["created_at"]

    r = bc.post(f"{bc.base}/videos", json={"name": "again", "reference_id": "intent-42"}, timeout=5)
    assert (r.status_code, r.json()) == (409, [{"error_code": "REFERENCE_ID_IN_USE",
                                                "message": "reference id intent-42 is already in use"}])
    assert bc.get(f"{bc.base}/videos/ref:intent-42", timeout=5).json() == video
    assert bc.get(f"{bc.base}/videos/{video['id']}", timeout=5).json() == video
    for missing in ("ref:nope", "1234567890123"):
        r = bc.get(f"{bc.base}/videos/{missing}", timeout=5)
        assert (r.status_code, r.json()[0]["error_code"]) == (404, "RESOURCE_NOT_FOUND")


@pytest.mark.parametrize("body, status, code, needle", [
    ({}, 422, "ILLEGAL_FIELD", "name"),
    ({"name": "x" * 256}, 422, "ILLEGAL_FIELD", "name"),
    ({"name": "x", "description": "d" * 251}, 422, "ILLEGAL_FIELD", "description"),
    ({"name": "x", "reference_id": "r" * 151}, 422, "ILLEGAL_FIELD", "reference_id"),
    ({"name": "x", "tags": ["a,b"]}, 422, "ILLEGAL_FIELD", "tags"),
    ({"name": "x", "state": "DELETED"}, 422, "ILLEGAL_FIELD", "state"),
    ({"name": "x", "nmae": "typo"}, 400, "BAD_VALUE", "nmae"),
    (["not", "an", "object"], 400, "BAD_VALUE", "object"),
])
def test_create_video_validates(bc, body, status, code, needle):
    r = bc.post(f"{bc.base}/videos", json=body, timeout=5)
    assert r.status_code == status and r.json()[0]["error_code"] == code and needle in r.json()[0]["message"]


# -- Dynamic Ingest: the happy paths ---------------------------------------------------


def test_presigned_put_then_ingest_finishes_and_calls_back(sandbox, bc, media, receiver):
    small = media / "small.mp4"
    put_faults(sandbox, processing_seconds=1)  # each stage lasts >= 0.3 s: every state is seen at 10 polls/s
    video = create_video(bc)
    target = upload_urls(bc, video["id"], "small.mp4")
    assert target["bucket"] == BUCKET and target["access_key_id"].startswith("ASIA")
    account, video_id, uid, name = target["object_key"].split("/")
    assert (account, video_id, len(uid), name) == (ACCOUNT, video["id"], 36, "small.mp4")
    s3_url = sandbox.env()["INGEST_BRIGHTCOVE_S3_ENDPOINT"]
    assert target["api_request_url"] == f"{s3_url}/{BUCKET}/{target['object_key']}"
    # Signature v2, as the DI reference's example: AWSAccessKeyId, Expires, Signature.
    assert target["signed_url"].startswith(target["api_request_url"] + "?AWSAccessKeyId=")
    assert {"Expires", "Signature"} <= set(parse_qs(urlsplit(target["signed_url"]).query))
    again = upload_urls(bc, video["id"], "small.mp4")
    assert again["object_key"] != target["object_key"] and again["access_key_id"] != target["access_key_id"]

    assert requests.put(target["signed_url"], data=small.read_bytes(), timeout=10).status_code == 200
    job_id = ingest(bc, video["id"], target["api_request_url"], callbacks=[receiver.url])
    job, seen = wait_job(bc, video["id"], job_id)
    assert seen == ["processing", "publishing", "published", "finished"]
    assert (job["error_code"], job["priority"], job["video_id"], job["account_id"]) == (None, "normal", video["id"],
                                                                                        ACCOUNT)
    video = bc.get(f"{bc.base}/videos/{video['id']}", timeout=5).json()
    assert video["complete"] is True and video["duration"] > 0 and video["original_filename"] == "small.mp4"
    assert [j["id"] for j in bc.get(f"{bc.base}/videos/{video['id']}/ingest_jobs", timeout=5).json()] == [job_id]

    notes = receiver.wait_for(len(RENDITIONS) + 1)
    assert [n["entity"] for n in notes] == [*RENDITIONS, video["id"]]
    assert notes[2] == {"entity": "default/video360", "entityType": "DYNAMIC_RENDITION", "version": "1",
                        "action": "CREATE", "jobId": job_id, "videoId": video["id"],
                        "dynamicRenditionId": "default/video360", "accountId": ACCOUNT, "status": "SUCCESS"}
    assert notes[-1] == {"entity": video["id"], "entityType": "TITLE", "version": "1", "action": "CREATE",
                         "jobId": job_id, "videoId": video["id"], "accountId": ACCOUNT, "status": "SUCCESS"}

    st = state(sandbox)
    [obj] = [o for o in st["objects"] if o["key"] == target["object_key"]]
    assert (obj["size"], obj["sha256"]) == (small.stat().st_size, sha256(small))
    [row] = st["videos"]
    assert row["jobs"][0]["state"] == "finished" and row["jobs"][0]["source_sha256"] == sha256(small)
    assert st["ingest_requests"] == {video["id"]: 1}
    assert [c["access_key_id"] for c in st["credentials_issued"]] == [target["access_key_id"], again["access_key_id"]]
    assert len(st["callbacks_sent"]) == len(notes)
    assert {(c["url"], c["status"], c["attempts"]) for c in st["callbacks_sent"]} == {(receiver.url, 200, 1)}
    assert [e["endpoint"] for e in log(sandbox, provider="s3")] == ["s3.put_object"]


def test_boto3_multipart_upload_with_temporary_credentials(sandbox, bc, media):
    clip = media / "clip.mp4"
    video = create_video(bc, reference_id="multipart")
    target = upload_urls(bc, video["id"])
    s3_client(sandbox, target).upload_file(
        str(clip), target["bucket"], target["object_key"],
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=3))
    job_id = ingest(bc, "ref:multipart", f"s3://{target['bucket']}/{target['object_key']}")
    job, _ = wait_job(bc, "ref:multipart", job_id)
    assert job["state"] == "finished"

    parts = log(sandbox, endpoint="s3.upload_part")
    assert sorted(p["part_number"] for p in parts) == [1, 2, 3]
    assert {(p["status"], p["bytes_in"], p["entity"]) for p in parts} == {
        (200, 5 * MiB, f"{BUCKET}/{target['object_key']}")}
    endpoints = [e["endpoint"] for e in log(sandbox, provider="s3")]
    assert endpoints[0] == "s3.create_multipart_upload" and endpoints[-1] == "s3.complete_multipart_upload"
    st = state(sandbox)
    [obj] = st["objects"]
    assert (obj["size"], obj["sha256"]) == (clip.stat().st_size, sha256(clip))
    assert st["multipart_uploads"] == [] and st["videos"][0]["jobs"][0]["source_sha256"] == sha256(clip)


def test_pull_from_media_finishes(sandbox, bc, media):
    video = create_video(bc)
    job_id = ingest(bc, video["id"], f"{sandbox.url}/media/small.mp4", profile="multi-platform-standard-dynamic",
                    priority="low")
    job, _ = wait_job(bc, video["id"], job_id)
    assert (job["state"], job["priority"]) == ("finished", "low")
    [row] = state(sandbox)["videos"][0]["jobs"]
    assert (row["source_size"], row["source_sha256"]) == (300_000, sha256(media / "small.mp4"))
    assert [e["status"] for e in log(sandbox, endpoint="media.get")] == [200]


# -- Dynamic Ingest: failures ----------------------------------------------------------


def test_invalid_file_fails_with_file_invalid_and_a_failed_title(sandbox, bc, media, receiver):
    video = create_video(bc)
    target = upload_urls(bc, video["id"], "notes.txt")
    assert requests.put(target["signed_url"], data=(media / "notes.txt").read_bytes(), timeout=10).status_code == 200
    job_id = ingest(bc, video["id"], target["api_request_url"], callbacks=[receiver.url])
    job, _ = wait_job(bc, video["id"], job_id)
    assert (job["state"], job["error_code"], job["error_message"]) == (
        "failed", "FILE_INVALID", "The source file is not a valid video")
    [note] = receiver.wait_for(1)
    assert (note["entityType"], note["status"], note["errorMessage"]) == (
        "TITLE", "FAILED", "The source file is not a valid video")
    assert bc.get(f"{bc.base}/videos/{video['id']}", timeout=5).json()["complete"] is False


def test_source_fetch_failures(sandbox, bc):
    pulled = create_video(bc)
    job_id = ingest(bc, pulled["id"], f"{sandbox.url}/media/missing.mp4")
    job, _ = wait_job(bc, pulled["id"], job_id)
    assert (job["error_code"], job["error_message"]) == ("SOURCE_FETCH_FAILED", "Failed to fetch the source: HTTP 404")
    assert [e["status"] for e in log(sandbox, endpoint="media.get")] == [404, 404, 404]  # three attempts

    never_uploaded = create_video(bc)
    target = upload_urls(bc, never_uploaded["id"])
    job_id = ingest(bc, never_uploaded["id"], target["api_request_url"])
    job, _ = wait_job(bc, never_uploaded["id"], job_id)
    assert job["error_code"] == "SOURCE_FETCH_FAILED" and target["object_key"] in job["error_message"]


def test_processing_fault_fails_the_job_once(sandbox, bc, media):
    put_faults(sandbox, rules=[{"endpoint": "brightcove.processing", "action": "fail"}])
    failed, ok = create_video(bc), create_video(bc)
    job, _ = wait_job(bc, failed["id"], ingest(bc, failed["id"], f"{sandbox.url}/media/small.mp4"))
    assert (job["state"], job["error_code"]) == ("failed", "PROCESSING_FAILED")
    job, _ = wait_job(bc, ok["id"], ingest(bc, ok["id"], f"{sandbox.url}/media/small.mp4"))
    assert job["state"] == "finished"  # the rule was used up


@pytest.mark.parametrize("body, status, code", [
    ({}, 400, "NO_SOURCE"),
    ({"master": {}}, 400, "NO_SOURCE"),
    ({"master": {"url": "ftp://example.com/a.mp4"}}, 422, "BAD_PROTOCOL_SOURCE_URL"),
    ({"master": {"url": "https:///a.mp4"}}, 422, "MALFORMED_SOURCE_URL"),
    ({"master": {"url": "https://example.com/a.mp4"}, "callbacks": "https://x"}, 400, "BAD_CALLBACKS"),
    ({"master": {"url": "https://example.com/a.mp4"}, "callbacks": ["mailto:a@b"]}, 400, "BAD_CALLBACKS"),
    ({"master": {"url": "https://example.com/a.mp4"}, "priority": "urgent"}, 422, "TYPE_VIOLATION"),
    ({"master": {"url": "https://example.com/a.mp4"}, "callback": []}, 400, "BAD_REQUEST"),
])
def test_ingest_request_validates(bc, body, status, code):
    video = create_video(bc)
    r = bc.post(f"{bc.base}/videos/{video['id']}/ingest-requests", json=body, timeout=5)
    assert (r.status_code, r.json()[0]["error_code"]) == (status, code)


def test_unknown_video_and_bad_source_name(bc):
    for path in ("/videos/1234567890123/upload-urls/a.mp4", "/videos/ref:none/ingest-requests"):
        r = bc.request("POST" if path.endswith("requests") else "GET", f"{bc.base}{path}",
                       json={"master": {"url": "https://example.com/a.mp4"}}, timeout=5)
        assert (r.status_code, r.json()) == (404, [{"error_code": "NO_SUCH_VIDEO",
                                                    "message": "Unable to find the referenced video"}])
    video = create_video(bc)
    r = bc.get(f"{bc.base}/videos/{video['id']}/upload-urls/my%20clip.mp4", timeout=5)
    assert (r.status_code, r.json()[0]["error_code"]) == (400, "BAD_REQUEST")


def test_second_ingest_while_a_job_runs_is_409(sandbox, bc):
    put_faults(sandbox, processing_seconds=1)
    video = create_video(bc)
    source = f"{sandbox.url}/media/small.mp4"
    job_id = ingest(bc, video["id"], source)
    r = bc.post(f"{bc.base}/videos/{video['id']}/ingest-requests", json={"master": {"url": source}}, timeout=5)
    assert r.status_code == 409 and r.json()[0]["error_code"] == "CONCURRENT_JOB" and job_id in r.json()[0]["message"]
    st = state(sandbox)
    assert st["ingest_requests"] == {video["id"]: 2} and len(st["videos"][0]["jobs"]) == 1  # one ingest job
    wait_job(bc, video["id"], job_id)
    ingest(bc, video["id"], source)  # a finished job no longer blocks a new one


# -- limits and faults -----------------------------------------------------------------


def test_rate_limit_of_20_requests_a_second(sandbox, bc):
    video = create_video(bc)
    statuses = []
    started = time.monotonic()
    for _ in range(60):  # even at 25 ms a request, far more than 20 a second
        r = bc.get(f"{bc.base}/videos/{video['id']}", timeout=5)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json() == [{"error_code": "TOO_MANY_REQUESTS", "message": "Too Many Requests"}]
    allowed = 20 + int((time.monotonic() - started) * 20)  # a burst of 20 (less the create), then 20 a second
    assert 19 <= statuses.count(200) <= allowed and statuses.count(429) == 60 - statuses.count(200) > 0
    assert all(get_token(sandbox).status_code == 200 for _ in range(30))  # OAuth is not limited
    throttled = [e for e in log(sandbox, endpoint="brightcove.get_video") if e["status"] == 429]
    assert {e["fault"] for e in throttled} == {"rate_limit_rps"}


def test_per_video_requests_a_minute(sandbox, bc):
    put_faults(sandbox, per_video_per_minute=3)
    busy, other = create_video(bc), create_video(bc)
    assert [bc.get(f"{bc.base}/videos/{busy['id']}", timeout=5).status_code for _ in range(3)] == [200] * 3
    r = bc.get(f"{bc.base}/videos/{busy['id']}/ingest_jobs", timeout=5)
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.json()[0]["error_code"] == "TOO_MANY_REQUESTS"
    assert bc.get(f"{bc.base}/videos/{other['id']}", timeout=5).status_code == 200
    assert log(sandbox, endpoint="brightcove.list_ingest_jobs")[0]["fault"] == "per_video_per_minute"


def test_injected_errors_use_brightcove_error_bodies(sandbox, bc):
    video = create_video(bc)
    put_faults(sandbox, rules=[{"endpoint": "brightcove.get_video", "status": 503, "times": 1},
                               {"endpoint": "brightcove.get_video", "status": 500, "times": 1}])
    r = bc.get(f"{bc.base}/videos/{video['id']}", timeout=5)
    assert (r.status_code, r.json()) == (503, [{"error_code": "SERVICE_UNAVAILABLE", "message": "Service Unavailable"}])
    r = bc.get(f"{bc.base}/videos/{video['id']}", timeout=5)
    assert (r.status_code, r.json()[0]["error_code"]) == (500, "INTERNAL_ERROR")
    snapshot = requests.get(f"{sandbox.url}/_sandbox/faults", timeout=5).json()["brightcove"]
    assert (snapshot["rate_limit_rps"], snapshot["token_ttl"], snapshot["callback_duplicates"]) == (20, None, False)
    assert "brightcove.oauth_token" not in snapshot["rate_limit_endpoints"]
    r = requests.put(f"{sandbox.url}/_sandbox/faults", json={"provider": "brightcove", "callback_duplicates": 1},
                     timeout=5)
    assert r.status_code == 400 and "callback_duplicates" in r.json()["error"]


def test_callbacks_are_retried_and_can_be_duplicated(sandbox, bc, receiver):
    put_faults(sandbox, callback_duplicates=True)
    receiver.fail_first = 1
    video = create_video(bc)
    job_id = ingest(bc, video["id"], f"{sandbox.url}/media/small.mp4", callbacks=[receiver.url])
    notes = receiver.wait_for(len(RENDITIONS) + 2)
    assert [n["entity"] for n in notes] == [*RENDITIONS, video["id"], video["id"]]  # order kept through the retry
    assert notes[-1] == notes[-2] and notes[-1]["jobId"] == job_id and notes[-1]["status"] == "SUCCESS"
    sent = state(sandbox)["callbacks_sent"]
    assert (sent[0]["attempts"], sent[0]["status"]) == (2, 200) and {c["attempts"] for c in sent[1:]} == {1}


# -- S3 proxy --------------------------------------------------------------------------


def test_s3_faults_slow_down_parts_and_answer_s3_errors(sandbox, bc, media):
    video = create_video(bc)
    target = upload_urls(bc, video["id"])
    put_faults(sandbox, "s3", latency_ms=300, latency_endpoints=["s3.upload_part"],
               rules=[{"endpoint": "s3.upload_part", "status": 503, "times": 1}])
    started = time.monotonic()
    s3_client(sandbox, target).upload_file(
        str(media / "clip.mp4"), BUCKET, target["object_key"],
        Config=TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, use_threads=False))
    assert time.monotonic() - started >= 4 * 0.3  # three parts plus the retried one, each delayed
    parts = log(sandbox, endpoint="s3.upload_part")
    assert [(p["part_number"], p["status"], p["fault"]) for p in parts] == [
        (1, 503, "rule:503"), (1, 200, "latency_ms"), (2, 200, "latency_ms"), (3, 200, "latency_ms")]

    put_faults(sandbox, "s3", rules=[{"endpoint": "s3.put_object", "status": 503, "times": 1},
                                     {"endpoint": "s3.put_object", "action": "drop", "after_bytes": 1000}])
    small = upload_urls(bc, video["id"], "small.mp4")
    r = requests.put(small["signed_url"], data=(media / "small.mp4").read_bytes(), timeout=10)
    assert r.status_code == 503 and "<Code>SlowDown</Code>" in r.text
    with pytest.raises(requests.ConnectionError):
        requests.put(small["signed_url"], data=(media / "small.mp4").read_bytes(), timeout=10)
    dropped = log(sandbox, endpoint="s3.put_object")[-1]
    assert (dropped["status"], dropped["fault"], dropped["bytes_in"]) == (None, "rule:drop", 1000)
    assert [o["key"] for o in state(sandbox)["objects"]] == [target["object_key"]]  # nothing half-stored


def test_reset_empties_the_bucket_and_recreates_it(sandbox, bc, media):
    video = create_video(bc)
    target = upload_urls(bc, video["id"], "small.mp4")
    requests.put(target["signed_url"], data=b"x" * 100, timeout=10).raise_for_status()
    assert len(state(sandbox)["objects"]) == 1
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=30).raise_for_status()
    st = state(sandbox)
    assert (st["objects"], st["videos"], st["tokens_issued"], st["credentials_issued"]) == ([], [], [], [])
    bc.headers["Authorization"] = f"Bearer {get_token(sandbox).json()['access_token']}"  # tokens were forgotten
    again = upload_urls(bc, create_video(bc)["id"], "small.mp4")
    assert requests.put(again["signed_url"], data=b"y" * 10, timeout=10).status_code == 200  # the bucket is back


# -- settings and CLI ------------------------------------------------------------------


def test_env_names_every_brightcove_setting(sandbox):
    env = sandbox.env()
    assert {k: v for k, v in env.items() if k.startswith("INGEST_BRIGHTCOVE_")} == {
        "INGEST_BRIGHTCOVE_CLIENT_ID": CLIENT_ID, "INGEST_BRIGHTCOVE_CLIENT_SECRET": SECRET,
        "INGEST_BRIGHTCOVE_ACCOUNT_ID": ACCOUNT, "INGEST_BRIGHTCOVE_OAUTH_URL": sandbox.url,
        "INGEST_BRIGHTCOVE_BASE_URL": sandbox.url, "INGEST_BRIGHTCOVE_INGEST_URL": sandbox.url,
        "INGEST_BRIGHTCOVE_S3_ENDPOINT": sandbox.s3.url,
    }
    assert sandbox.s3.url != sandbox.url


def test_cli_takes_brightcove_options(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--data-dir", str(tmp_path),
                             "--brightcove-client-id", "cli-id", "--brightcove-client-secret", "cli-secret",
                             "--brightcove-account-id", "6200000000777", "--brightcove-token-ttl", "60"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        exports = {}
        for line in proc.stdout:
            if line.startswith("sandbox listening on "):
                url = line.strip().removeprefix("sandbox listening on ")
                break
            key, _, value = line.strip().removeprefix("export ").partition("=")
            exports[key] = value
        assert (exports["INGEST_BRIGHTCOVE_CLIENT_ID"], exports["INGEST_BRIGHTCOVE_ACCOUNT_ID"]) == (
            "cli-id", "6200000000777")
        assert exports["INGEST_BRIGHTCOVE_OAUTH_URL"] == url != exports["INGEST_BRIGHTCOVE_S3_ENDPOINT"]
        r = requests.post(f"{url}/v4/access_token", auth=("cli-id", "cli-secret"),
                          data={"grant_type": "client_credentials"}, timeout=5)
        assert r.json()["expires_in"] == 60
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()


def test_signed_url_is_v2_and_refuses_a_content_type_it_did_not_sign(sandbox, bc, media):
    """V2 signs Content-Type: the URL was signed with none, so a PUT with one is 403 SignatureDoesNotMatch."""
    small = media / "small.mp4"
    video = create_video(bc)
    target = upload_urls(bc, video["id"], "small.mp4")
    refused = requests.put(target["signed_url"], data=small.read_bytes(), headers={"Content-Type": "video/mp4"},
                           timeout=10)
    assert refused.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in refused.text
    tampered = target["signed_url"].replace("Expires=", "Expires=1")
    assert requests.put(tampered, data=b"x", timeout=10).status_code == 403
    with open(small, "rb") as f:  # a file body: requests adds no Content-Type
        assert requests.put(target["signed_url"], data=f, timeout=10).status_code == 200
    [obj] = state(sandbox)["objects"]
    assert obj["sha256"] == sha256(small)


def test_upload_urls_needs_json_content_type(bc):
    video = create_video(bc)
    r = bc.get(f"{bc.base}/videos/{video['id']}/upload-urls/clip.mp4", headers={"Content-Type": None}, timeout=5)
    assert r.status_code == 415 and r.json()[0]["error_code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_video_fields_and_undefined_custom_fields(bc):
    fields = bc.get(f"{bc.base}/video_fields", timeout=5).json()
    by_id = {f["id"]: f for f in fields["custom_fields"]}
    assert by_id["team"]["type"] == "string" and by_id["subject"]["type"] == "enum"
    assert "Mammals" in by_id["subject"]["enum_values"] and fields["max_custom_fields"] >= len(by_id)
    assert {"id", "required"} <= set(fields["standard_fields"][0])
    create_video(bc, custom_fields={"team": "video", "subject": "Mammals"})
    r = bc.post(f"{bc.base}/videos", json={"name": "x", "custom_fields": {"mood": "calm"}}, timeout=5)
    assert r.status_code == 422 and r.json() == [{"error_code": "VALIDATION_ERROR",
                                                  "message": "custom_fields.mood: ILLEGAL_FIELD"}]
    r = bc.post(f"{bc.base}/videos", json={"name": "x", "custom_fields": {"subject": "Rocks"}}, timeout=5)
    assert r.status_code == 422 and "subject" in r.json()[0]["message"]


def test_title_notifications_can_be_turned_off(sandbox, bc, media, receiver):
    put_faults(sandbox, title_notifications=False)
    video = create_video(bc)
    job_id = ingest(bc, video["id"], f"{sandbox.url}/media/small.mp4", callbacks=[receiver.url])
    wait_job(bc, video["id"], job_id)
    notes = receiver.wait_for(len(RENDITIONS))
    time.sleep(0.5)
    assert {n["entityType"] for n in receiver.hooks} == {"DYNAMIC_RENDITION"} and len(receiver.hooks) == len(notes)
