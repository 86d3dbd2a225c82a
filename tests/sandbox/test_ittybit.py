"""The Ittybit emulator over real sockets: files, tasks, signatures and uploads with requests.

One sandbox serves the whole module (``processing_seconds=0.3``) and one small HTTP server
receives the task webhooks; every test starts from ``POST /_sandbox/reset``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox import Sandbox

KEY = "test-ittybit-key"
MiB = 1024 * 1024
CLIP_SIZE = 2 * MiB + 300_000  # three chunks: 1 MiB, 1 MiB, the rest
ROOT = Path(__file__).resolve().parents[2]
ENVELOPE_KEYS = {"meta", "data", "error", "links"}


# -- fixtures and helpers ----------------------------------------------------------------


MEDIA = {"clip.mp4": CLIP_SIZE, "small.mp4": 300_000}
SANDBOX_OPTIONS = {"ittybit_api_key": KEY}
RECEIVER_PATH = "/ittybit-hooks"


@pytest.fixture
def api(sandbox):
    """A session that talks to the Ittybit API like the fleet does."""
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {KEY}"
    s.base = sandbox.url
    yield s
    s.close()


def data(r: requests.Response, status: int = 200):
    """The envelope's ``data`` after checking the status and the envelope's other parts."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == ENVELOPE_KEYS and body["error"] is None, body
    assert body["meta"]["request_id"].startswith("req_") and body["meta"]["version"] == "2025-01-01"
    return body["data"]


def create_file(api, url: str, **fields) -> dict:
    return data(api.post(f"{api.base}/files", json={"url": url, **fields}, timeout=30), 201)


def create_task(api, url: str, **fields) -> dict:
    return data(api.post(f"{api.base}/tasks", json={"kind": "ingest", "url": url, **fields}, timeout=5), 201)


def wait_task(api, task_id: str, done=("completed", "failed", "succeeded"), timeout: float = 10.0):
    """Poll until the task is in ``done``; returns its JSON (``data`` or bare) and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"{api.base}/tasks/{task_id}", timeout=5)
        assert r.status_code == 200, r.text
        task = r.json().get("data", r.json())
        if not seen or seen[-1] != task["status"]:
            seen.append(task["status"])
        if task["status"] in done:
            return task, seen
        assert time.monotonic() < deadline, f"task {task_id} stuck in {task['status']}"
        time.sleep(0.02)


def sign(api, filename: str = "clip.mp4", **fields) -> dict:
    return data(api.post(f"{api.base}/signatures", json={"filename": filename, "method": "put", **fields},
                         timeout=5), 201)


def put_chunk(url: str, blob: bytes, start: int, end: int, total: int, form: str = "bytes=") -> requests.Response:
    return requests.put(url, data=blob[start:end + 1], headers={"Content-Range": f"{form}{start}-{end}/{total}"},
                        timeout=10)


def error_message(r: requests.Response, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["data"] is None and body["meta"]["type"] == "error" and body["links"] == {}, body
    return body["error"]["message"]


def put_faults(sandbox, **config) -> dict:
    r = requests.put(f"{sandbox.url}/_sandbox/faults", json={"provider": "ittybit", **config}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def log(sandbox, **params) -> list[dict]:
    return requests.get(f"{sandbox.url}/_sandbox/log", params=params, timeout=5).json()["entries"]


def state(sandbox) -> dict:
    return requests.get(f"{sandbox.url}/_sandbox/state/ittybit", timeout=30).json()


def upload_state(sandbox, path: str) -> dict:
    return next(u for u in state(sandbox)["uploads"] if u["path"] == path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- authentication and shapes ---------------------------------------------------------


def test_api_calls_need_the_bearer_key_in_both_shapes(sandbox, api):
    calls = [("POST", "/files"), ("GET", "/files/file_x"), ("POST", "/tasks"), ("GET", "/tasks"),
             ("GET", "/tasks/task_x"), ("POST", "/signatures")]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"APIKey {KEY}"}):
        for method, path in calls:
            r = requests.request(method, f"{sandbox.url}{path}", headers=headers, json={}, timeout=5)
            assert error_message(r, 401) == "Invalid API key", (method, path, headers)
            assert r.json()["meta"]["request_id"].startswith("req_")
    put_faults(sandbox, shape="bare")
    r = requests.get(f"{sandbox.url}/tasks", headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert (r.status_code, r.json()) == (401, {"kind": "token_invalid", "message": "Invalid API key"})


def test_bare_shape_answers_objects_arrays_and_kind_errors(sandbox, api, media):
    put_faults(sandbox, shape="bare")
    r = api.post(f"{api.base}/files", json={"url": f"{sandbox.url}/media/small.mp4"}, timeout=30)
    assert r.status_code == 201 and r.json()["object"] == "file" and r.json()["status"] == "ready"
    r = api.post(f"{api.base}/tasks", json={"kind": "ingest", "url": f"{sandbox.url}/media/small.mp4"}, timeout=5)
    assert r.status_code == 201 and (r.json()["object"], r.json()["status"]) == ("task", "pending")
    task, _ = wait_task(api, r.json()["id"])
    assert (task["status"], task["progress"], task["output"]["status"]) == ("succeeded", 100, "ready")
    assert [t["id"] for t in api.get(f"{api.base}/tasks", timeout=5).json()] == [task["id"]]
    r = api.get(f"{api.base}/tasks/task_nope", timeout=5)
    assert (r.status_code, r.json()) == (404, {"kind": "task_not_found", "message": "Task not found"})
    r = api.post(f"{api.base}/files", json={"url": f"{sandbox.url}/media/notes.txt"}, timeout=30)
    assert (r.status_code, r.json()) == (400, {"kind": "format_unsupported", "message": "Unsupported file type"})
    target = api.post(f"{api.base}/signatures", json={"filename": "b.mp4", "method": "put"}, timeout=5).json()
    blob = (media / "clip.mp4").read_bytes()
    r = put_chunk(target["url"], blob, 0, MiB - 1, len(blob))
    assert (r.status_code, r.json()) == (202, {"received": MiB})
    r = put_chunk(target["url"], blob, 0, MiB - 1, len(blob))
    assert r.status_code == 409 and r.json()["kind"] == "upload_offset_mismatch"


def test_shape_option_and_fault_setting_are_validated(tmp_path, sandbox):
    with pytest.raises(ValueError, match="shape"):
        Sandbox(data_dir=tmp_path, ittybit_shape="xml")
    for config, needle in [({"shape": "xml"}, "shape"), ({"signature_ttl": -1}, "signature_ttl"),
                           ({"webhook_duplicates": 1}, "webhook_duplicates")]:
        r = requests.put(f"{sandbox.url}/_sandbox/faults", json={"provider": "ittybit", **config}, timeout=5)
        assert r.status_code == 400 and needle in r.json()["error"], r.text
    snapshot = requests.get(f"{sandbox.url}/_sandbox/faults", timeout=5).json()["ittybit"]
    assert (snapshot["shape"], snapshot["signature_ttl"], snapshot["webhook_duplicates"]) == (None, None, False)
    assert snapshot["rate_limit_rps"] == 0


# -- files (synchronous ingest) --------------------------------------------------------


def test_create_file_from_media_is_ready_with_identical_bytes(sandbox, api, media):
    r = api.post(f"{api.base}/files", json={"url": f"{sandbox.url}/media/clip.mp4", "folder": "/user_1/uploads/",
                                            "filename": "intro.mp4", "metadata": {"job": "j1"}, "label": "x"},
                 timeout=30)
    f = data(r, 201)
    assert f["id"].startswith("file_") and len(f["id"]) == 17
    assert (f["object"], f["kind"], f["type"], f["status"]) == ("file", "video", "video/mp4", "ready")
    assert (f["folder"], f["filename"], f["filesize"], f["metadata"]) == ("user_1/uploads", "intro.mp4", CLIP_SIZE,
                                                                          {"job": "j1"})
    assert f["url"] == f"{sandbox.url}/files-cdn/user_1/uploads/intro.mp4"
    assert f["width"] > 0 and f["height"] > 0 and f["duration"] > 0 and f["fps"] > 0
    assert f["created"].endswith("Z") and f["updated"] == f["created"]
    meta, links = r.json()["meta"], r.json()["links"]
    assert (meta["type"], meta["project_id"], meta["org_id"]) == ("object", "prj_sandbox", "org_sandbox")
    assert links == {"self": f"{sandbox.url}/files/{f['id']}"}

    assert data(api.get(f"{api.base}/files/{f['id']}", timeout=5)) == f
    [row] = state(sandbox)["files"]
    assert row == {"id": f["id"], "folder": "user_1/uploads", "filename": "intro.mp4", "status": "ready",
                   "filesize": CLIP_SIZE, "ref": None, "sha256": sha256(media / "clip.mp4")}
    assert create_file(api, f"{sandbox.url}/media/small.mp4")["filename"] == "small.mp4"  # named after the URL
    assert [e["status"] for e in log(sandbox, endpoint="ittybit.create_file")] == [201, 201]
    assert error_message(api.get(f"{api.base}/files/file_nope", timeout=5), 404) == "File not found"


def test_create_file_rejects_non_video_unfetchable_and_bad_bodies(sandbox, api):
    r = api.post(f"{api.base}/files", json={"url": f"{sandbox.url}/media/notes.txt"}, timeout=30)
    assert error_message(r, 400) == "Unsupported file type"
    r = api.post(f"{api.base}/files", json={"url": f"{sandbox.url}/media/missing.mp4"}, timeout=30)
    assert error_message(r, 400) == "Could not fetch url"
    assert [e["status"] for e in log(sandbox, endpoint="media.get")] == [200, 404, 404, 404]  # three attempts
    r = api.post(f"{api.base}/files", json={"url": "ftp://example.com/a.mp4"}, timeout=30)
    assert error_message(r, 400) == "Could not fetch url"
    for body, message in [({}, "url is required"), ({"url": 5}, "url must be a string"),
                          ({"url": "http://x/a.mp4", "folder": "a/../b"}, "folder must be a path"),
                          ({"url": "http://x/a.mp4", "filename": "a/b.mp4"}, "filename must be a file name"),
                          ({"url": "http://x/a.mp4", "metadata": []}, "metadata must be an object")]:
        r = api.post(f"{api.base}/files", json=body, timeout=5)
        assert error_message(r, 400).startswith(message), body
    r = api.post(f"{api.base}/files", data=b"{nope", timeout=5)
    assert error_message(r, 400) == "Invalid JSON body"
    assert state(sandbox)["files"] == []


# -- tasks (asynchronous ingest) and webhooks ------------------------------------------


def hook_endpoint(api, url: str, topics=("task.succeeded", "task.failed")) -> dict:
    return data(api.post(f"{api.base}/webhooks/endpoints", json={"url": url, "topics": list(topics)}, timeout=5), 201)


def test_ingest_task_completes_and_its_events_reach_the_endpoint(sandbox, api, media, receiver):
    endpoint = hook_endpoint(api, receiver.url)
    assert endpoint["id"].startswith("we_") and endpoint["object"] == "webhook_endpoint"
    assert (endpoint["url"], endpoint["topics"], endpoint["status"]) == (
        receiver.url, ["task.succeeded", "task.failed"], "active")
    assert isinstance(endpoint["created_at"], int)
    url = f"{sandbox.url}/media/clip.mp4"
    r = api.post(f"{api.base}/tasks", json={"kind": "ingest", "url": url, "folder": "in", "ref": "job-1"}, timeout=5)
    task = data(r, 201)
    assert task["id"].startswith("task_") and r.json()["links"] == {"self": f"{sandbox.url}/tasks/{task['id']}"}
    assert (task["object"], task["kind"], task["status"], task["progress"]) == ("task", "ingest", "pending", 0)
    assert (task["error"], task["output"], task["results"]) == (None, None, None)
    assert task["input"] == {"url": url, "filename": None, "folder": "in"} and task["options"] == {"ref": "job-1"}

    done, seen = wait_task(api, task["id"])
    assert seen[0] == "pending" and seen[-1] == "completed" and set(seen) <= {"pending", "processing", "completed"}
    assert done["progress"] == 100 and done["error"] is None
    output = done["output"]
    assert (output["status"], output["folder"], output["filename"], output["filesize"], output["ref"]) == (
        "complete", "in", "clip.mp4", CLIP_SIZE, "job-1")  # "complete" in the envelope, as in the seed
    assert data(api.get(f"{api.base}/files/{output['id']}", timeout=5))["status"] == "ready"
    assert state(sandbox)["files"][0]["sha256"] == sha256(media / "clip.mp4")

    [event] = receiver.wait_for(1)  # subscribed to succeeded/failed only: no created/updated events
    assert event["id"].startswith("evt_") and (event["object"], event["kind"]) == ("event", "task.succeeded")
    assert isinstance(event["created_at"], int)
    assert (event["data"]["id"], event["data"]["status"]) == (task["id"], "succeeded")  # the later vocabulary
    [sent] = state(sandbox)["webhooks_sent"]
    assert (sent["task_id"], sent["url"], sent["status"], sent["attempts"], sent["error"]) == (
        task["id"], receiver.url, 200, 1, None)
    [row] = state(sandbox)["tasks"]
    assert (row["id"], row["status"], row["error"], row["ref"]) == (task["id"], "completed", None, "job-1")


def test_webhook_endpoints_are_validated_listed_deleted_and_reset(sandbox, api, receiver):
    for body, message in [({"topics": ["task.failed"]}, "url is required"),
                          ({"url": "http://example.com/h", "topics": ["task.failed"]}, "url must be an https URL"),
                          ({"url": receiver.url, "topics": []}, "topics must be"),
                          ({"url": receiver.url, "topics": ["task.completed"]}, "topics must be"),
                          ({"url": receiver.url, "topics": ["task.failed"], "secret": "x"}, "unknown field secret")]:
        assert error_message(api.post(f"{api.base}/webhooks/endpoints", json=body, timeout=5), 400).startswith(
            message), body
    first = hook_endpoint(api, "https://hooks.example.com/a", ["task.created"])
    second = hook_endpoint(api, receiver.url, ["task.created", "task.updated", "task.succeeded"])
    assert [e["id"] for e in data(api.get(f"{api.base}/webhooks/endpoints", timeout=5))] == [second["id"], first["id"]]
    assert api.delete(f"{api.base}/webhooks/endpoints/{first['id']}", timeout=5).status_code == 204
    assert error_message(api.delete(f"{api.base}/webhooks/endpoints/{first['id']}", timeout=5), 404)
    put_faults(sandbox, processing_seconds=0)
    task = create_task(api, f"{sandbox.url}/media/small.mp4")
    wait_task(api, task["id"])
    deadline = time.monotonic() + 10
    while not {"task.created", "task.succeeded"} <= set(kinds := [e["kind"] for e in receiver.hooks]) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    # Deliveries go out concurrently, as a real sender's may: arrival order is not promised.
    assert sorted(kinds) == ["task.created", "task.succeeded"] + ["task.updated"] * (len(kinds) - 2), kinds
    assert len(kinds) >= 3
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=30).raise_for_status()
    assert data(api.get(f"{api.base}/webhooks/endpoints", timeout=5)) == []  # the provider lost it


def test_task_failures_report_the_reason(sandbox, api, receiver):
    hook_endpoint(api, receiver.url, ["task.failed"])
    bad = create_task(api, f"{sandbox.url}/media/notes.txt")
    missing = create_task(api, f"{sandbox.url}/media/missing.mp4")
    for task_id, message in ((bad["id"], "Unsupported file type"), (missing["id"], "Could not fetch url")):
        task, _ = wait_task(api, task_id)
        assert (task["status"], task["error"], task["output"]) == ("failed", {"message": message}, None)
    hooks = receiver.wait_for(2)
    assert {(h["kind"], h["data"]["status"], h["data"]["error"]["message"]) for h in hooks} == {
        ("task.failed", "failed", "Unsupported file type"), ("task.failed", "failed", "Could not fetch url")}

    put_faults(sandbox, rules=[{"endpoint": "ittybit.processing", "action": "fail", "times": 1}])
    failed = create_task(api, f"{sandbox.url}/media/small.mp4")
    task, _ = wait_task(api, failed["id"])
    assert (task["status"], task["error"]) == ("failed", {"message": "Processing failed"})
    task, _ = wait_task(api, create_task(api, f"{sandbox.url}/media/small.mp4")["id"])  # the rule was used up
    assert task["status"] == "completed"
    assert {t["id"]: t["error"] for t in state(sandbox)["tasks"]}[failed["id"]] == "Processing failed"
    assert len(state(sandbox)["files"]) == 1


def test_create_task_validates(api, receiver):
    for body, message in [({"url": "http://x/a.mp4"}, "kind is required"),
                          ({"kind": "video", "url": "http://x/a.mp4"}, "kind 'video' is not supported"),
                          ({"kind": "ingest"}, "url is required"),
                          # changelog 2025-12-01: the per-task field was replaced by Webhook Endpoints
                          ({"kind": "ingest", "url": "http://x/a.mp4", "webhook_url": receiver.url},
                           "webhook_url is no longer supported"),
                          ({"kind": "ingest", "url": "http://x/a.mp4", "metadata": {"a": "b"}},
                           "unknown field metadata")]:
        r = api.post(f"{api.base}/tasks", json=body, timeout=5)
        assert error_message(r, 400).startswith(message), body
    assert error_message(api.get(f"{api.base}/tasks/task_nope", timeout=5), 404) == "Task not found"


def test_webhooks_are_retried_and_can_be_duplicated(sandbox, api, receiver):
    put_faults(sandbox, webhook_duplicates=True, processing_seconds=0)
    hook_endpoint(api, receiver.url)
    receiver.fail_first = 1
    task = create_task(api, f"{sandbox.url}/media/small.mp4")
    first, second = receiver.wait_for(2)
    assert first == second and first["data"]["id"] == task["id"] and first["kind"] == "task.succeeded"
    sent = state(sandbox)["webhooks_sent"]
    assert [(s["attempts"], s["status"]) for s in sent] == [(2, 200), (1, 200)]


def test_accept_version_selects_the_shape(sandbox, api):
    """ittybit.com/api/versioning: ``Accept-Version`` picks the version, none = the default."""
    small = f"{sandbox.url}/media/small.mp4"
    r = api.post(f"{api.base}/files", json={"url": small}, headers={"Accept-Version": "2025-08-20"}, timeout=30)
    assert r.status_code == 201 and r.json()["object"] == "file" and "meta" not in r.json()  # bare
    for version in ("2025-08-20", "latest"):
        r = api.get(f"{api.base}/files", headers={"Accept-Version": version}, timeout=5)
        assert isinstance(r.json(), list) and r.headers["Has-More"] == "false"
    r = api.get(f"{api.base}/files", headers={"Accept-Version": "2025-01-01"}, timeout=5)
    assert r.json()["meta"]["version"] == "2025-01-01"
    assert isinstance(data(api.get(f"{api.base}/files", timeout=5)), list)  # no header: the default (envelope)
    put_faults(sandbox, shape="bare")
    assert isinstance(api.get(f"{api.base}/files", timeout=5).json(), list)  # ... or bare, as configured
    r = api.get(f"{api.base}/files", headers={"Accept-Version": "2024-13-01"}, timeout=5)
    assert r.status_code == 400 and r.json()["kind"] == "request_invalid" and "Accept-Version" in r.json()["message"]
    assert state(sandbox)["api_versions"] == {"2025-08-20": 2, "latest": 1, "2025-01-01": 1, "": 2, "2024-13-01": 1}


def test_files_are_listed_newest_first_with_their_ref(sandbox, api):
    first = create_file(api, f"{sandbox.url}/media/small.mp4", ref="ingest-fleet:a")
    second = create_file(api, f"{sandbox.url}/media/small.mp4")
    r = api.get(f"{api.base}/files", params={"limit": 1}, timeout=5)
    assert [f["id"] for f in data(r)] == [second["id"]] and r.json()["meta"]["pages"] == 2
    [listed] = data(api.get(r.json()["links"]["next"], timeout=5))
    assert (listed["id"], listed["ref"]) == (first["id"], "ingest-fleet:a")
    r = api.post(f"{api.base}/files", json={"url": f"{sandbox.url}/media/small.mp4", "colour": "red"}, timeout=5)
    assert error_message(r, 400).startswith("unknown field colour")


def test_a_slow_create_file_answer_comes_after_the_file_exists(sandbox, api):
    put_faults(sandbox, create_file_answer_delay=2)
    with pytest.raises(requests.ReadTimeout):
        api.post(f"{api.base}/files", json={"url": f"{sandbox.url}/media/small.mp4", "ref": "r1"}, timeout=(5, 0.5))
    [row] = state(sandbox)["files"]
    assert row["ref"] == "r1"


def test_list_tasks_pages_newest_first(sandbox, api):
    put_faults(sandbox, processing_seconds=60)  # keep them pending: listing is all this test needs
    ids = [create_task(api, f"{sandbox.url}/media/small.mp4")["id"] for _ in range(3)]
    r = api.get(f"{api.base}/tasks", params={"limit": 2}, timeout=5)
    assert [t["id"] for t in data(r)] == [ids[2], ids[1]]
    meta, links = r.json()["meta"], r.json()["links"]
    assert (meta["type"], meta["limit"], meta["total"], meta["page"], meta["pages"]) == ("list", 2, 3, 1, 2)
    assert links["prev"] is None and links["next"] == f"{sandbox.url}/tasks?limit=2&page=2"
    r = api.get(links["next"], timeout=5)
    assert [t["id"] for t in data(r)] == [ids[0]] and r.json()["links"]["next"] is None
    assert len(data(api.get(f"{api.base}/tasks", timeout=5))) == 3  # default limit
    r = api.get(f"{api.base}/tasks", params={"limit": 0}, timeout=5)
    assert error_message(r, 400).startswith("limit must be")


# -- signed uploads --------------------------------------------------------------------


def test_signature_then_whole_put_returns_the_file(sandbox, api, media):
    target = sign(api, "intro.mp4", folder="user 1")
    assert (target["domain"], target["filename"], target["folder"], target["method"]) == (
        sandbox.url.removeprefix("http://"), "intro.mp4", "user 1", "put")
    assert 3500 <= target["expiry"] - time.time() <= 3600
    assert target["url"] == (f"{sandbox.url}/upload/user%201/intro.mp4?expiry={target['expiry']}&method=put"
                             f"&signature={target['signature']}")
    r = requests.put(target["url"], data=(media / "clip.mp4").read_bytes(), timeout=10)
    f = data(r, 201)
    assert (f["folder"], f["filename"], f["filesize"], f["status"]) == ("user 1", "intro.mp4", CLIP_SIZE, "ready")
    assert state(sandbox)["files"][0]["sha256"] == sha256(media / "clip.mp4")
    assert upload_state(sandbox, "user 1/intro.mp4") == {"path": "user 1/intro.mp4", "received": CLIP_SIZE,
                                                         "total": CLIP_SIZE, "bytes_received_total": CLIP_SIZE}
    [issued] = state(sandbox)["signatures_issued"]
    assert issued == {"path": "user 1/intro.mp4", "method": "put", "expiry": target["expiry"],
                      "signature": target["signature"]}
    [put] = log(sandbox, endpoint="ittybit.upload_put")
    assert (put["status"], put["entity"], put["bytes_in"]) == (201, "user 1/intro.mp4", CLIP_SIZE)

    r = requests.put(sign(api, "notes.txt")["url"], data=(media / "notes.txt").read_bytes(), timeout=10)
    assert error_message(r, 400) == "Unsupported file type"
    assert len(state(sandbox)["files"]) == 1


def test_signatures_are_checked(sandbox, api):
    target = sign(api)
    tampered = target["url"].replace(f"expiry={target['expiry']}", f"expiry={target['expiry'] + 60}")
    read_only = sign(api, method="get")["url"]
    unsigned = target["url"].split("?")[0]
    other_path = target["url"].replace("/upload/clip.mp4", "/upload/other.mp4")
    for url in (tampered, read_only, unsigned, other_path):
        assert error_message(requests.put(url, data=b"x" * 100, timeout=5), 403) == "Invalid signature", url
    assert requests.head(read_only, timeout=5).status_code == 200  # get signatures may read the upload's offset
    for body, message in [({}, "filename is required"), ({"filename": "a/b.mp4"}, "filename must be a file name"),
                          ({"filename": "a.mp4", "method": "post"}, "method must be 'get' or 'put'"),
                          ({"filename": "a.mp4", "expiry": 1}, "expiry must be a unix time in the future")]:
        assert error_message(api.post(f"{api.base}/signatures", json=body, timeout=5), 400).startswith(message)


def test_chunked_put_with_content_range(sandbox, api, media):
    blob = (media / "clip.mp4").read_bytes()
    url = sign(api, folder="big")["url"]
    r = put_chunk(url, blob, 0, MiB - 1, CLIP_SIZE)
    assert data(r, 202) == {"received": MiB}
    r = put_chunk(url, blob, MiB, 2 * MiB - 1, CLIP_SIZE, form="bytes ")  # the RFC 9110 form
    assert data(r, 202) == {"received": 2 * MiB}
    assert upload_state(sandbox, "big/clip.mp4")["received"] == 2 * MiB and state(sandbox)["files"] == []
    f = data(put_chunk(url, blob, 2 * MiB, CLIP_SIZE - 1, CLIP_SIZE), 201)
    assert (f["folder"], f["filename"], f["filesize"]) == ("big", "clip.mp4", CLIP_SIZE)
    assert state(sandbox)["files"][0]["sha256"] == sha256(media / "clip.mp4")
    assert upload_state(sandbox, "big/clip.mp4")["bytes_received_total"] == CLIP_SIZE
    puts = log(sandbox, endpoint="ittybit.upload_put")
    assert [(p["status"], p["bytes_in"]) for p in puts] == [(202, MiB), (202, MiB), (201, CLIP_SIZE - 2 * MiB)]

    for header in ("bytes=0-99/50", "bytes=10-5/100", "items=0-9/10", "bytes=0-99/100"):
        r = requests.put(url, data=b"x" * 10, headers={"Content-Range": header}, timeout=5)
        assert error_message(r, 400).startswith("Content-Range"), header


def test_wrong_offset_is_409_with_upload_offset_and_head_resyncs(sandbox, api, media):
    blob = (media / "clip.mp4").read_bytes()
    url = sign(api)["url"]
    assert requests.head(url, timeout=5).headers["Upload-Offset"] == "0"  # nothing received yet
    with requests.Session() as s:  # one kept-alive connection: rejected bodies must be drained
        assert s.put(url, data=blob[:MiB], headers={"Content-Range": f"bytes=0-{MiB - 1}/{CLIP_SIZE}"},
                     timeout=10).status_code == 202
        for start, end in ((2 * MiB, CLIP_SIZE - 1), (0, MiB - 1)):  # a gap, then a duplicate
            r = s.put(url, data=blob[start:end + 1], headers={"Content-Range": f"bytes={start}-{end}/{CLIP_SIZE}"},
                      timeout=10)
            assert str(MiB) in error_message(r, 409) and r.headers["Upload-Offset"] == str(MiB)
        head = s.head(url, timeout=5)
        assert (head.status_code, head.headers["Upload-Offset"], head.headers["Upload-Length"]) == (
            200, str(MiB), str(CLIP_SIZE))
        offset = int(head.headers["Upload-Offset"])
        r = s.put(url, data=blob[offset:], headers={"Content-Range": f"bytes={offset}-{CLIP_SIZE - 1}/{CLIP_SIZE}"},
                  timeout=10)
        assert data(r, 201)["filesize"] == CLIP_SIZE
    assert state(sandbox)["files"][0]["sha256"] == sha256(media / "clip.mp4")
    rejected = (CLIP_SIZE - 2 * MiB) + MiB
    assert upload_state(sandbox, "clip.mp4")["bytes_received_total"] == CLIP_SIZE + rejected


def test_the_last_chunk_sent_again_gets_the_same_file(sandbox, api, media):
    blob = (media / "clip.mp4").read_bytes()
    url = sign(api)["url"]
    for start, end in ((0, MiB - 1), (MiB, 2 * MiB - 1)):
        assert put_chunk(url, blob, start, end, CLIP_SIZE).status_code == 202
    f = data(put_chunk(url, blob, 2 * MiB, CLIP_SIZE - 1, CLIP_SIZE), 201)
    assert data(put_chunk(url, blob, 2 * MiB, CLIP_SIZE - 1, CLIP_SIZE), 201) == f  # its 201 was lost: again
    r = put_chunk(url, blob, MiB, 2 * MiB - 1, CLIP_SIZE)  # any other chunk is still out of place
    assert str(CLIP_SIZE) in error_message(r, 409) and r.headers["Upload-Offset"] == str(CLIP_SIZE)
    assert [row["id"] for row in state(sandbox)["files"]] == [f["id"]]


def test_dropped_chunk_is_discarded_whole_and_resent(sandbox, api, media):
    blob = (media / "clip.mp4").read_bytes()
    url = sign(api)["url"]
    put_faults(sandbox, rules=[{"endpoint": "ittybit.upload_put", "action": "drop", "after_bytes": 300_000}])
    with pytest.raises(requests.ConnectionError):
        put_chunk(url, blob, 0, MiB - 1, CLIP_SIZE)
    assert upload_state(sandbox, "clip.mp4")["received"] == 0  # a chunk counts whole or not at all
    assert data(put_chunk(url, blob, 0, MiB - 1, CLIP_SIZE), 202) == {"received": MiB}


def test_upload_resumes_with_a_renewed_signature_after_expiry(sandbox, api, media):
    blob = (media / "clip.mp4").read_bytes()
    put_faults(sandbox, signature_ttl=2)
    first = sign(api)
    assert first["expiry"] <= time.time() + 2
    assert data(put_chunk(first["url"], blob, 0, MiB - 1, CLIP_SIZE), 202) == {"received": MiB}
    while time.time() < first["expiry"]:
        time.sleep(0.05)
    r = put_chunk(first["url"], blob, MiB, 2 * MiB - 1, CLIP_SIZE)
    assert error_message(r, 403) == "Signature expired"
    assert requests.head(first["url"], timeout=5).status_code == 403  # HEAD checks the signature too

    renewed = sign(api)  # the same path: the partial upload carries over
    assert renewed["signature"] != first["signature"]
    offset = int(requests.head(renewed["url"], timeout=5).headers["Upload-Offset"])
    assert offset == MiB
    assert data(put_chunk(renewed["url"], blob, offset, 2 * MiB - 1, CLIP_SIZE), 202) == {"received": 2 * MiB}
    f = data(put_chunk(renewed["url"], blob, 2 * MiB, CLIP_SIZE - 1, CLIP_SIZE), 201)
    assert state(sandbox)["files"][0]["sha256"] == sha256(media / "clip.mp4") and f["filesize"] == CLIP_SIZE
    assert len(state(sandbox)["signatures_issued"]) == 2
    assert upload_state(sandbox, "clip.mp4")["bytes_received_total"] == CLIP_SIZE + MiB  # the refused chunk too


def test_a_new_file_at_the_same_path_starts_over(sandbox, api, media):
    blob, small = (media / "clip.mp4").read_bytes(), (media / "small.mp4").read_bytes()
    url = sign(api)["url"]
    assert put_chunk(url, blob, 0, MiB - 1, CLIP_SIZE).status_code == 202
    f = data(put_chunk(url, small, 0, len(small) - 1, len(small)), 201)  # START 0, another TOTAL
    assert f["filesize"] == len(small) and state(sandbox)["files"][0]["sha256"] == sha256(media / "small.mp4")


# -- faults ----------------------------------------------------------------------------


def test_429_rule_answers_retry_after_in_the_current_shape(sandbox, api):
    task = create_task(api, f"{sandbox.url}/media/small.mp4")
    put_faults(sandbox, rules=[{"endpoint": "ittybit.get_task", "status": 429, "retry_after": 3, "times": 1},
                               {"endpoint": "ittybit.get_task", "status": 503, "times": 1}])
    r = api.get(f"{api.base}/tasks/{task['id']}", timeout=5)
    assert r.headers["Retry-After"] == "3" and error_message(r, 429) == "Too many requests"
    assert error_message(api.get(f"{api.base}/tasks/{task['id']}", timeout=5), 503) == "Service Unavailable"
    assert api.get(f"{api.base}/tasks/{task['id']}", timeout=5).status_code == 200
    assert [(e["status"], e["fault"], e["entity"]) for e in log(sandbox, endpoint="ittybit.get_task")] == [
        (429, "rule:429", task["id"]), (503, "rule:503", task["id"]), (200, None, task["id"])]

    put_faults(sandbox, shape="bare", rate_limit_rps=2, rate_limit_endpoints=["ittybit.list_tasks"])
    statuses = [api.get(f"{api.base}/tasks", timeout=5) for _ in range(6)]
    throttled = [r for r in statuses if r.status_code == 429]
    assert throttled and int(throttled[0].headers["Retry-After"]) >= 1
    assert throttled[0].json() == {"kind": "rate_limited", "message": "Too many requests"}
    assert {e["fault"] for e in log(sandbox, endpoint="ittybit.list_tasks") if e["status"] == 429} == {
        "rate_limit_rps"}


def test_reset_forgets_everything(sandbox, api, media):
    create_file(api, f"{sandbox.url}/media/small.mp4")
    create_task(api, f"{sandbox.url}/media/small.mp4")
    requests.put(sign(api)["url"], data=(media / "small.mp4").read_bytes(), timeout=10)
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=30).raise_for_status()
    assert state(sandbox) == {"files": [], "tasks": [], "uploads": [], "signatures_issued": [], "webhooks_sent": [],
                              "webhook_endpoints": [], "api_versions": {}}


# -- settings and CLI ------------------------------------------------------------------


def test_env_names_the_ittybit_settings(sandbox):
    assert {k: v for k, v in sandbox.env().items() if k.startswith("INGEST_ITTYBIT_")} == {
        "INGEST_ITTYBIT_API_KEY": KEY, "INGEST_ITTYBIT_BASE_URL": sandbox.url}


def test_cli_takes_ittybit_options(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--data-dir", str(tmp_path),
                             "--ittybit-api-key", "cli-key", "--ittybit-shape", "bare"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        exports = {}
        for line in proc.stdout:
            if line.startswith("sandbox listening on "):
                url = line.strip().removeprefix("sandbox listening on ")
                break
            key, _, value = line.strip().removeprefix("export ").partition("=")
            exports[key] = value
        assert (exports["INGEST_ITTYBIT_API_KEY"], exports["INGEST_ITTYBIT_BASE_URL"]) == ("cli-key", url)
        r = requests.get(f"{url}/tasks", headers={"Authorization": "Bearer cli-key"}, timeout=5)
        assert (r.status_code, r.json()) == (200, [])  # the bare shape
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
