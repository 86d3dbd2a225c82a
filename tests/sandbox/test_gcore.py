"""The Gcore emulator over real sockets: REST calls with requests, uploads with tuspy.

One sandbox serves the whole module (``processing_seconds=0.3``); every test starts from
``POST /_sandbox/reset``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError

from sandbox import make_invalid_file, make_video_file
from sandbox.media import is_video_container

KEY = "test-gcore-key"
CLIENT_ID = 4242
MiB = 1024 * 1024
CHUNK = 5 * MiB
ROOT = Path(__file__).resolve().parents[2]


# -- fixtures and helpers ----------------------------------------------------------------


MEDIA = {"clip.mp4": 12 * MiB, "small.mp4": 300_000}
SANDBOX_OPTIONS = {"gcore_api_key": KEY, "gcore_client_id": CLIENT_ID}


@pytest.fixture
def api(sandbox):
    """A session that talks to the videos API like the fleet does."""
    s = requests.Session()
    s.headers["Authorization"] = f"APIKey {KEY}"
    s.base = f"{sandbox.url}/streaming"
    yield s
    s.close()


def create_video(api, **fields) -> dict:
    r = api.post(f"{api.base}/videos", json={"video": {"name": "clip", **fields}}, timeout=5)
    assert r.status_code == 201, r.text
    return r.json()


def get_video(api, video_id: int) -> dict:
    r = api.get(f"{api.base}/videos/{video_id}", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(api, video_id: int, done, timeout: float = 10.0) -> tuple[dict, list[str]]:
    """Poll until ``done(video)``; returns the video and every status seen on the way."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        video = get_video(api, video_id)
        if not seen or seen[-1] != video["status"]:
            seen.append(video["status"])
        if done(video):
            return video, seen
        assert time.monotonic() < deadline, f"video {video_id} stuck: {video['status']} {video['error']!r}"
        time.sleep(0.02)


def upload_session(api, video_id: int) -> tuple[str, dict]:
    """TUS endpoint and metadata from ``GET /streaming/videos/{id}/upload`` (seed, Steps 2-3)."""
    r = api.get(f"{api.base}/videos/{video_id}/upload", timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    server = body["servers"][0]
    endpoint = f"{'https' if server['ssl'] else 'http'}://{server['hostname']}/upload/"
    metadata = {"filename": "clip.mp4", "filetype": "video/mp4", "token": body["token"],
                "video_id": str(video_id), "client_id": str(body["video"]["client_id"])}
    return endpoint, metadata


def uploader(endpoint: str, path: Path, metadata: dict, **kwargs):
    return tus_client.TusClient(endpoint).uploader(file_path=str(path), chunk_size=CHUNK, metadata=metadata, **kwargs)


def tus_post(endpoint: str, metadata: dict, length: int = 1000, **headers) -> requests.Response:
    encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
    return requests.post(endpoint, headers={"Tus-Resumable": "1.0.0", "Upload-Length": str(length),
                                            "Upload-Metadata": encoded, **headers}, timeout=5)


def tus_head(url: str) -> requests.Response:
    return requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=5)


def put_faults(sandbox, **config) -> dict:
    r = requests.put(f"{sandbox.url}/_sandbox/faults", json={"provider": "gcore", **config}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def log(sandbox, **params) -> list[dict]:
    return requests.get(f"{sandbox.url}/_sandbox/log", params=params, timeout=5).json()["entries"]


def state(sandbox) -> dict:
    return requests.get(f"{sandbox.url}/_sandbox/state/gcore", timeout=30).json()


def video_state(sandbox, video_id: int) -> dict:
    return next(v for v in state(sandbox)["videos"] if v["id"] == video_id)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the happy paths -------------------------------------------------------------------


def test_tus_upload_with_tuspy_reaches_ready_with_identical_bytes(sandbox, api, media):
    clip = media / "clip.mp4"
    video = create_video(api, client_user_id=77, description="from the test")
    assert video["status"] == "empty" and video["error"] == "" and video["id"] >= 2_500_000
    assert len(video["slug"]) == 16 and video["client_id"] == CLIENT_ID and video["converted_videos"] == []

    endpoint, metadata = upload_session(api, video["id"])
    assert endpoint == f"{sandbox.url}/upload/"
    uploader(endpoint, clip, metadata).upload()

    video, seen = wait_for(api, video["id"], lambda v: v["status"] == "ready")
    assert set(seen) <= {"pending", "viewable", "ready"}
    assert video["origin_size"] == clip.stat().st_size and video["duration"] > 0
    assert [c["status"] for c in video["converted_videos"]] == ["complete"] * 3
    assert len(video["screenshots"]) == 5

    st = video_state(sandbox, video["id"])
    assert st["sha256"] == sha256(clip) and st["bytes_received"] == st["size"] == clip.stat().st_size
    assert state(sandbox)["tokens_issued"] == [metadata["token"]]
    [upload] = state(sandbox)["uploads"]
    assert upload["video_id"] == video["id"] and upload["offset"] == upload["length"] == clip.stat().st_size
    assert upload["bytes_received_total"] == clip.stat().st_size

    patches = log(sandbox, endpoint="gcore.tus_patch")
    assert [p["bytes_in"] for p in patches] == [CHUNK, CHUNK, 12 * MiB - 2 * CHUNK]
    assert {(p["status"], p["entity"], p["fault"]) for p in patches} == {(204, str(video["id"]), None)}

    found = api.get(f"{api.base}/videos", params={"client_user_id": 77}, timeout=5).json()
    assert [v["id"] for v in found] == [video["id"]]


def test_processing_passes_through_pending_and_viewable(sandbox, api):
    video = create_video(api, origin_url=f"{sandbox.url}/media/small.mp4")
    _, seen = wait_for(api, video["id"], lambda v: v["status"] == "ready")
    order = ["empty", "pending", "viewable", "ready"]  # the pull may finish before the first poll
    assert seen == sorted(seen, key=order.index) and {"pending", "viewable", "ready"} <= set(seen), seen


def test_pull_from_media_reaches_ready(sandbox, api, media):
    video = create_video(api, origin_url=f"{sandbox.url}/media/small.mp4")
    video, _ = wait_for(api, video["id"], lambda v: v["status"] == "ready")
    assert video["origin_size"] == 300_000
    assert video_state(sandbox, video["id"])["sha256"] == sha256(media / "small.mp4")
    [get] = log(sandbox, endpoint="media.get")
    assert get["status"] == 200 and get["provider"] == "media"


# -- REST API contract -----------------------------------------------------------------


def test_rest_calls_need_the_api_key(sandbox, api):
    video = create_video(api)
    for headers in ({}, {"Authorization": "APIKey wrong"}, {"Authorization": f"Bearer {KEY}"}):
        for method, path in (("POST", "/videos"), ("GET", "/videos"), ("GET", f"/videos/{video['id']}"),
                             ("GET", f"/videos/{video['id']}/upload"), ("DELETE", f"/videos/{video['id']}")):
            r = requests.request(method, f"{api.base}{path}", headers=headers, json={"video": {"name": "x"}}, timeout=5)
            assert (r.status_code, r.json()) == (401, {"error": "Unauthorized"}), (method, path, headers)


@pytest.mark.parametrize("body, message", [
    ({"video": {}}, "video.name must be a string of 1..255 characters"),
    ({"video": {"name": "x" * 256}}, "video.name must be a string of 1..255 characters"),
    ({"name": "not wrapped"}, 'body must be {"video": {...}}'),
    ({"video": {"name": "x", "client_user_id": "12"}}, "video.client_user_id must be an integer"),
    ({"video": {"name": "x", "priority": 11}}, "video.priority must be in -10..10"),
    ({"video": {"name": "x", "priority": -11}}, "video.priority must be in -10..10"),
    # G1 (assumed width): a marker above int32 is refused, as a 32-bit column would.
    ({"video": {"name": "x", "client_user_id": 2**31}},
     "video.client_user_id must be a 32-bit integer (-2147483648..2147483647)"),
    ({"video": {"name": "x", "origin_url": "http://h/a.mp4", "origin_http_headers": "X-Token: abc"}},
     'video.origin_http_headers must look like "Authorization: Bearer ..."'),
])
def test_create_validates_fields(api, body, message):
    r = api.post(f"{api.base}/videos", json=body, timeout=5)
    assert (r.status_code, r.json()) == (400, {"error": message})


def test_create_rejects_malformed_json(api):
    r = api.post(f"{api.base}/videos", data=b"{not json", headers={"Content-Type": "application/json"}, timeout=5)
    assert (r.status_code, r.json()) == (400, {"error": "Invalid JSON body"})


def test_list_filters_and_pages_and_delete_forgets(api):
    a = create_video(api, client_user_id=1)
    b = create_video(api, client_user_id=2)
    c = create_video(api, client_user_id=2)
    listed = api.get(f"{api.base}/videos", params={"client_user_id": 2}, timeout=5).json()
    assert [v["id"] for v in listed] == [c["id"], b["id"]]  # newest first
    page2 = api.get(f"{api.base}/videos", params={"per_page": 1, "page": 2}, timeout=5).json()
    assert [v["id"] for v in page2] == [b["id"]]
    assert api.get(f"{api.base}/videos", params={"client_user_id": 3}, timeout=5).json() == []
    assert api.get(f"{api.base}/videos", params={"client_user_id": 2**31}, timeout=5).status_code == 400

    assert api.delete(f"{api.base}/videos/{a['id']}", timeout=5).status_code == 204
    r = api.get(f"{api.base}/videos/{a['id']}", timeout=5)
    assert (r.status_code, r.json()) == (404, {"error": "Video not found"})
    assert api.delete(f"{api.base}/videos/{a['id']}", timeout=5).status_code == 404


def test_upload_params_match_the_seed(sandbox, api):
    video = create_video(api)
    body = api.get(f"{api.base}/videos/{video['id']}/upload", timeout=5).json()
    assert body["servers"] == [{"id": 561, "role": "upload", "hostname": sandbox.url.removeprefix("http://"),
                                "active": True, "ssl": False}]
    assert body["token"].startswith("eyJhbGciOi") and body["video"]["id"] == video["id"]


# -- TUS protocol ----------------------------------------------------------------------


def test_tus_options_and_tus_resumable_required(sandbox, api):
    r = requests.options(f"{sandbox.url}/upload/", timeout=5)
    assert r.status_code == 204
    assert (r.headers["Tus-Version"], r.headers["Tus-Extension"]) == ("1.0.0", "creation,termination")
    assert int(r.headers["Tus-Max-Size"]) > 2**31

    endpoint, metadata = upload_session(api, create_video(api)["id"])
    r = requests.post(endpoint, headers={"Upload-Length": "10"}, timeout=5)
    assert (r.status_code, r.headers["Tus-Version"]) == (412, "1.0.0")
    location = tus_post(endpoint, metadata).headers["Location"]
    assert requests.head(location, timeout=5).status_code == 412
    assert tus_head(location).headers["Tus-Resumable"] == "1.0.0"


def test_tus_patch_rules_409_415_404_and_termination(sandbox, api):
    endpoint, metadata = upload_session(api, create_video(api)["id"])
    r = tus_post(endpoint, metadata, length=1000)
    assert r.status_code == 201 and r.headers["Location"].startswith(endpoint)
    url = r.headers["Location"]
    head = tus_head(url)
    assert (head.status_code, head.headers["Upload-Offset"], head.headers["Upload-Length"]) == (200, "0", "1000")
    assert head.headers["Cache-Control"] == "no-store"

    with requests.Session() as s:  # one kept-alive connection: rejected bodies must be drained
        patch = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
        r = s.patch(url, data=b"x" * 100, headers={**patch, "Upload-Offset": "5"}, timeout=5)
        assert r.status_code == 409
        r = s.patch(url, data=b"x" * 100, headers={**patch, "Upload-Offset": "0", "Content-Type": "text/plain"},
                    timeout=5)
        assert r.status_code == 415
        assert s.head(url, headers=patch, timeout=5).headers["Upload-Offset"] == "0"  # nothing changed
        r = s.patch(url, data=b"x" * 100, headers={**patch, "Upload-Offset": "0"}, timeout=5)
        assert (r.status_code, r.headers["Upload-Offset"], r.headers["Tus-Resumable"]) == (204, "100", "1.0.0")
        r = s.patch(url, data=b"x" * 1000, headers={**patch, "Upload-Offset": "100"}, timeout=5)
        assert r.status_code == 413  # would run past Upload-Length

    [upload] = state(sandbox)["uploads"]
    assert (upload["offset"], upload["bytes_received_total"]) == (100, 1300)  # rejected bodies count too

    assert tus_head(url.rsplit("/", 1)[0] + "/" + "0" * 32).status_code == 404
    assert requests.delete(url, headers={"Tus-Resumable": "1.0.0"}, timeout=5).status_code == 204
    assert tus_head(url).status_code == 404


def test_tus_checksum_extension_when_offered(sandbox, api):
    """``tus_checksum`` (assumed off, as Gcore's docs are silent): OPTIONS offers the extension;
    a PATCH whose Upload-Checksum does not match its body gets 460 and keeps nothing, one with
    an algorithm not offered 400, a damaged body (the corrupt fault) 460; off, the header is
    ignored and a damaged body is stored as it came."""
    def checked(body: bytes, algorithm: str = "sha1") -> str:
        return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, body).digest()).decode()}"

    put_faults(sandbox, tus_checksum=True)
    r = requests.options(f"{sandbox.url}/upload/", timeout=5)
    assert r.headers["Tus-Extension"] == "creation,termination,checksum"
    assert r.headers["Tus-Checksum-Algorithm"] == "md5,sha1,sha256,sha512"
    endpoint, metadata = upload_session(api, create_video(api)["id"])
    url = tus_post(endpoint, metadata, length=300).headers["Location"]
    patch = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    with requests.Session() as s:
        body = b"a" * 100
        assert s.patch(url, data=body, headers={**patch, "Upload-Checksum": checked(b"b" * 100)},
                       timeout=5).status_code == 460
        assert s.patch(url, data=body, headers={**patch, "Upload-Checksum": "crc32 AAAA"}, timeout=5).status_code == 400
        assert tus_head(url).headers["Upload-Offset"] == "0"  # nothing kept
        r = s.patch(url, data=body, headers={**patch, "Upload-Checksum": checked(body, "sha256")}, timeout=5)
        assert (r.status_code, r.headers["Upload-Offset"]) == (204, "100")
        put_faults(sandbox, tus_checksum=True,
                   rules=[{"endpoint": "gcore.tus_patch", "action": "corrupt", "times": 1}])
        r = s.patch(url, data=body, headers={**patch, "Upload-Offset": "100", "Upload-Checksum": checked(body)},
                    timeout=5)
        assert r.status_code == 460 and tus_head(url).headers["Upload-Offset"] == "100"

        put_faults(sandbox, rules=[{"endpoint": "gcore.tus_patch", "action": "corrupt", "times": 1}])
        assert "checksum" not in requests.options(f"{sandbox.url}/upload/", timeout=5).headers["Tus-Extension"]
        r = s.patch(url, data=body, headers={**patch, "Upload-Offset": "100", "Upload-Checksum": checked(b"x")},
                    timeout=5)
        assert (r.status_code, r.headers["Upload-Offset"]) == (204, "200")  # ignored: damaged bytes kept
    assert [e["status"] for e in log(sandbox, endpoint="gcore.tus_patch")][-2:] == [460, 204]


def test_tus_create_needs_all_metadata(api):
    endpoint, metadata = upload_session(api, create_video(api)["id"])
    for missing in ("filename", "filetype", "video_id"):
        r = tus_post(endpoint, {k: v for k, v in metadata.items() if k != missing})
        assert r.status_code == 405 and missing in r.text
    assert tus_post(endpoint, metadata, **{"Upload-Length": "-1"}).status_code == 405
    # G2: an absent or empty client_id is "not this client", with the seed's 500 text.
    for meta in ({k: v for k, v in metadata.items() if k != "client_id"}, {**metadata, "client_id": ""}):
        r = tus_post(endpoint, meta)
        assert (r.status_code, r.text) == (500, f"token client ({CLIENT_ID}) does not match this client ()")


def test_video_answers_can_leave_out_client_id(sandbox, api):
    put_faults(sandbox, video_client_id=False)
    video = create_video(api)
    assert "client_id" not in video and "client_id" not in get_video(api, video["id"])
    body = api.get(f"{api.base}/videos/{video['id']}/upload", timeout=5).json()
    assert "client_id" not in body["video"] and body["token"]


def test_a_locked_upload_answers_423_to_another_connection(sandbox, api):
    """G4: while one connection holds the upload (tus_lock_hold_seconds), PATCH, HEAD and
    DELETE from another answer 423 at once, as tusd's ErrFileLocked; then the lock frees."""
    put_faults(sandbox, tus_lock_hold_seconds=1)
    endpoint, metadata = upload_session(api, create_video(api)["id"])
    url = tus_post(endpoint, metadata, length=1000).headers["Location"]
    patch = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    r = requests.patch(url, data=b"x" * 100, headers={**patch, "Upload-Offset": "0"}, timeout=5)
    assert r.status_code == 204
    started = time.monotonic()
    r = requests.patch(url, data=b"x" * 100, headers={**patch, "Upload-Offset": "100"}, timeout=5)
    assert (r.status_code, r.text) == (423, "file currently locked")
    assert time.monotonic() - started < 0.5, "423 must come at once, not after a wait"
    assert tus_head(url).status_code == 423
    assert requests.delete(url, headers={"Tus-Resumable": "1.0.0"}, timeout=5).status_code == 423
    time.sleep(1.2)
    assert tus_head(url).headers["Upload-Offset"] == "100"
    r = requests.patch(url, data=b"x" * 100, headers={**patch, "Upload-Offset": "100"}, timeout=5)
    assert (r.status_code, r.headers["Upload-Offset"]) == (204, "200")  # held once per upload only


def test_a_patch_stalled_mid_body_holds_the_lock_until_the_client_timeout(sandbox, api):
    """A client whose link dies mid-PATCH sends nothing more: the server keeps the upload
    locked (423 to anyone else) until it gives up on the silent connection
    (``client_timeout``, 120 s by default), then the upload goes on from what arrived."""
    endpoint, metadata = upload_session(api, create_video(api)["id"])
    url = tus_post(endpoint, metadata, length=1000).headers["Location"]
    patch = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    default = sandbox.client_timeout
    sandbox.client_timeout = 1.5  # read by each new connection
    try:
        where = urlsplit(url)
        stalled = socket.create_connection((where.hostname, where.port))
        stalled.sendall(f"PATCH {where.path} HTTP/1.1\r\nHost: {where.netloc}\r\nTus-Resumable: 1.0.0\r\n"
                        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
                        f"Content-Length: 1000\r\n\r\n".encode() + b"x" * 300)  # then silence
        silent_since = time.monotonic()
        time.sleep(0.3)
        r = requests.patch(url, data=b"y" * 100, headers={**patch, "Upload-Offset": "0"}, timeout=5)
        assert (r.status_code, r.text) == (423, "file currently locked")
        while (head := tus_head(url)).status_code == 423:
            assert time.monotonic() - silent_since < 10, "the stalled PATCH never let go of the lock"
            time.sleep(0.1)
        assert time.monotonic() - silent_since >= 1.4  # held for as long as the client was silent
        offset = int(head.headers["Upload-Offset"])
        assert offset in (0, 300)
        r = requests.patch(url, data=b"z" * (1000 - offset), headers={**patch, "Upload-Offset": str(offset)}, timeout=5)
        assert (r.status_code, r.headers["Upload-Offset"]) == (204, "1000")
        stalled.close()
    finally:
        sandbox.client_timeout = default


def test_tus_token_errors_use_gcore_texts(api):
    first, second = create_video(api), create_video(api)
    endpoint, metadata = upload_session(api, first["id"])
    _, other = upload_session(api, second["id"])
    forged = other["token"][:-4] + ("AAAA" if not other["token"].endswith("AAAA") else "BBBB")
    cases = [
        ({k: v for k, v in metadata.items() if k != "token"}, "token invalid (null)"),
        ({**metadata, "token": forged}, f"token invalid ({forged[:10]}...)"),
        ({**metadata, "token": "not-a-token"}, "token invalid (not-a-toke...)"),
        ({**metadata, "token": other["token"]},
         f"token video ({second['id']}) does not match this video ({first['id']})"),
        ({**metadata, "client_id": "999"}, f"token client ({CLIENT_ID}) does not match this client (999)"),
    ]
    for meta, text in cases:
        r = tus_post(endpoint, meta)
        assert (r.status_code, r.text) == (500, text)
    # tuspy surfaces the same answer.
    up = tus_client.TusClient(endpoint).uploader(file_stream=io.BytesIO(b"x" * 100),
                                                 metadata={**metadata, "token": other["token"]})
    with pytest.raises(TusCommunicationError) as err:
        up.create_url()
    assert err.value.status_code == 500 and b"does not match this video" in err.value.response_content


def test_dropped_patch_keeps_partial_bytes_and_tuspy_resumes(sandbox, api, media):
    clip = media / "clip.mp4"
    video = create_video(api)
    endpoint, metadata = upload_session(api, video["id"])
    put_faults(sandbox, rules=[{"endpoint": "gcore.tus_patch", "action": "drop", "after_bytes": 3_000_000}])

    up = uploader(endpoint, clip, metadata)
    up.set_url(up.create_url())
    with pytest.raises(TusCommunicationError):
        up.upload_chunk()  # the connection is cut 3,000,000 bytes into the first 5 MiB chunk
    assert tus_head(up.url).headers["Upload-Offset"] == "3000000"  # partial chunk kept

    resumed = uploader(endpoint, clip, metadata, url=up.url)  # HEAD, then on from 3,000,000
    assert resumed.offset == 3_000_000
    resumed.upload()
    wait_for(api, video["id"], lambda v: v["status"] == "ready")
    assert video_state(sandbox, video["id"])["sha256"] == sha256(clip)
    [upload] = state(sandbox)["uploads"]
    assert clip.stat().st_size <= upload["bytes_received_total"] <= clip.stat().st_size + 2 * CHUNK

    dropped = log(sandbox, endpoint="gcore.tus_patch")[0]
    assert (dropped["status"], dropped["fault"], dropped["bytes_in"]) == (None, "rule:drop", 3_000_000)


def test_client_disconnect_mid_patch_keeps_received_bytes(sandbox, api):
    endpoint, metadata = upload_session(api, create_video(api)["id"])
    url = tus_post(endpoint, metadata, length=MiB).headers["Location"]
    host, port = sandbox.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(f"PATCH {url.removeprefix(sandbox.url)} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                     "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                     f"Upload-Offset: 0\r\nContent-Length: {MiB}\r\n\r\n".encode() + b"y" * 200_000)
    # Until the emulator sees the connection gone, the PATCH holds the upload and a HEAD is
    # answered 423 Locked (as tusd's is): poll until the lock is released.
    deadline = time.monotonic() + 5
    while (head := tus_head(url)).headers.get("Upload-Offset") != "200000":
        assert head.status_code in (200, 204, 423), head.text
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_tuspy_retries_through_injected_drops_and_429(sandbox, api, media):
    clip = media / "clip.mp4"
    video = create_video(api)
    endpoint, metadata = upload_session(api, video["id"])
    put_faults(sandbox, rules=[
        {"endpoint": "gcore.tus_patch", "status": 429, "retry_after": 1, "times": 1},
        {"endpoint": "gcore.tus_patch", "action": "drop", "after_bytes": 1_234_567, "times": 1},
    ])
    uploader(endpoint, clip, metadata, retries=3, retry_delay=0).upload()
    wait_for(api, video["id"], lambda v: v["status"] == "ready")
    assert video_state(sandbox, video["id"])["sha256"] == sha256(clip)
    faults = [e["fault"] for e in log(sandbox, endpoint="gcore.tus_patch")]
    assert faults[:2] == ["rule:429", "rule:drop"] and set(faults[2:]) == {None}


# -- processing outcomes ---------------------------------------------------------------


def test_non_video_upload_ends_in_file_invalid(sandbox, api, media):
    video = create_video(api)
    endpoint, metadata = upload_session(api, video["id"])
    uploader(endpoint, media / "notes.txt", {**metadata, "filename": "notes.txt", "filetype": "text/plain"}).upload()
    video, _ = wait_for(api, video["id"], lambda v: v["status"] == "error")
    assert video["error"] == "File Invalid" and video["converted_videos"] == []


def test_pull_of_missing_url_stays_empty_after_three_attempts(sandbox, api):
    video = create_video(api, origin_url=f"{sandbox.url}/media/missing.mp4")
    video, seen = wait_for(api, video["id"], lambda v: v["error"])
    assert (seen, video["error"]) == (["empty"], "Origin download failed: HTTP 404")
    assert [e["status"] for e in log(sandbox, endpoint="media.get")] == [404, 404, 404]


def test_pull_with_unsupported_scheme_fails(api):
    video = create_video(api, origin_url="sftp://example.com/clip.mp4")
    video, _ = wait_for(api, video["id"], lambda v: v["error"])
    assert (video["status"], video["error"]) == ("empty", "Origin download failed: unsupported URL scheme 'sftp'")


def test_processing_fault_rule_ends_in_processing_failed(sandbox, api):
    put_faults(sandbox, rules=[{"endpoint": "gcore.processing", "action": "fail"}])
    failed = create_video(api, origin_url=f"{sandbox.url}/media/small.mp4")
    video, _ = wait_for(api, failed["id"], lambda v: v["status"] in ("ready", "error"))
    assert (video["status"], video["error"]) == ("error", "Processing failed")
    ok = create_video(api, origin_url=f"{sandbox.url}/media/small.mp4")  # the rule was used up
    wait_for(api, ok["id"], lambda v: v["status"] == "ready")


# -- fault injection, rate limit, request log ------------------------------------------


def test_scripted_429_sends_retry_after_then_clears(sandbox, api):
    video = create_video(api)
    put_faults(sandbox, rules=[{"endpoint": "gcore.get_video", "status": 429, "retry_after": 1, "times": 2}])
    for _ in range(2):
        r = api.get(f"{api.base}/videos/{video['id']}", timeout=5)
        assert (r.status_code, r.headers["Retry-After"], r.json()) == (429, "1", {"error": "Too Many Requests"})
    assert api.get(f"{api.base}/videos/{video['id']}", timeout=5).status_code == 200
    assert requests.get(f"{sandbox.url}/_sandbox/faults", timeout=5).json()["gcore"]["rules"] == []
    entries = log(sandbox, endpoint="gcore.get_video")
    assert [(e["status"], e["fault"], e["entity"]) for e in entries] == [
        (429, "rule:429", str(video["id"])), (429, "rule:429", str(video["id"])), (200, None, str(video["id"]))]


def test_scripted_403_on_create_with_body(sandbox, api):
    put_faults(sandbox, rules=[{"endpoint": "gcore.create_video", "status": 403,
                                "body": {"error": "Forbidden: account is blocked"}, "times": 1}])
    r = api.post(f"{api.base}/videos", json={"video": {"name": "x"}}, timeout=5)
    assert (r.status_code, r.json()) == (403, {"error": "Forbidden: account is blocked"})
    assert "Retry-After" not in r.headers
    create_video(api)
    assert len(api.get(f"{api.base}/videos", timeout=5).json()) == 1  # the refused call created nothing


def test_hang_rule_makes_the_client_time_out(sandbox, api):
    video = create_video(api)
    put_faults(sandbox, rules=[{"endpoint": "gcore.get_video", "action": "hang", "seconds": 1}])
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{api.base}/videos/{video['id']}", headers=api.headers, timeout=0.3)
    assert get_video(api, video["id"])["id"] == video["id"]  # only one request hangs
    deadline = time.monotonic() + 3
    while not (hung := [e for e in log(sandbox, endpoint="gcore.get_video") if e["fault"] == "rule:hang"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert hung[0]["status"] is None


def test_a_request_held_through_a_reset_is_not_logged_after_it(sandbox, api):
    """A hung request of one test must not show up in the next test's log when it ends."""
    video = create_video(api)
    put_faults(sandbox, rules=[{"endpoint": "gcore.get_video", "action": "hang", "seconds": 1}])
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{api.base}/videos/{video['id']}", headers=api.headers, timeout=0.3)
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=5).raise_for_status()
    time.sleep(1.2)  # the hang ends now
    create_video(api)
    entries = log(sandbox)
    assert [e["endpoint"] for e in entries] == ["gcore.create_video"], entries


def test_rate_limit_rps_is_enforced_with_retry_after(sandbox, api):
    put_faults(sandbox, rate_limit_rps=5)
    statuses = []
    started = time.monotonic()
    for _ in range(15):
        r = api.get(f"{api.base}/videos", timeout=5)
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
    allowed = 5 + int((time.monotonic() - started) * 5)  # a burst of 5, then 5 per second
    assert 5 <= statuses.count(200) <= allowed and statuses.count(429) == 15 - statuses.count(200) > 0
    throttled = [e for e in log(sandbox, endpoint="gcore.list_videos") if e["status"] == 429]
    assert len(throttled) == statuses.count(429) and {e["fault"] for e in throttled} == {"rate_limit_rps"}
    time.sleep(1.0)
    assert api.get(f"{api.base}/videos", timeout=5).status_code == 200  # the bucket refills


def test_random_faults_apply_only_to_listed_endpoints(sandbox, api):
    video = create_video(api)
    put_faults(sandbox, error_5xx_rate=1.0, error_5xx_endpoints=["gcore.get_video"],
               rate_429=1.0, rate_429_endpoints=["gcore.upload_params"], retry_after=7,
               latency_ms=200, latency_endpoints=["gcore.list_videos"])
    assert api.get(f"{api.base}/videos/{video['id']}", timeout=5).status_code in (500, 502, 503)
    r = api.get(f"{api.base}/videos/{video['id']}/upload", timeout=5)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "7")
    started = time.monotonic()
    assert api.get(f"{api.base}/videos", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.2
    faults = [(e["endpoint"], e["fault"]) for e in log(sandbox, since=0) if e["endpoint"] != "gcore.create_video"]
    assert faults == [("gcore.get_video", "error_5xx_rate"), ("gcore.upload_params", "rate_429"),
                      ("gcore.list_videos", "latency_ms")]


def test_processing_seconds_can_be_changed_at_runtime(sandbox, api):
    put_faults(sandbox, processing_seconds=0)
    video = create_video(api, origin_url=f"{sandbox.url}/media/small.mp4")
    _, seen = wait_for(api, video["id"], lambda v: v["status"] == "ready")
    assert "viewable" not in seen  # instant: no intermediate state to observe
    snapshot = requests.get(f"{sandbox.url}/_sandbox/faults", timeout=5).json()["gcore"]
    assert snapshot["processing_seconds"] == 0
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=5)
    assert requests.get(f"{sandbox.url}/_sandbox/faults", timeout=5).json()["gcore"]["processing_seconds"] is None


def test_fault_config_is_validated(sandbox):
    url = f"{sandbox.url}/_sandbox/faults"
    for config, needle in [
        ({"provider": "nope"}, "provider"),
        ({"provider": "gcore", "error_5xx_rate": 2}, "error_5xx_rate"),
        ({"provider": "gcore", "latency_endpoints": ["gcore.typo"]}, "gcore.typo"),
        ({"provider": "gcore", "processing_seconds": -1}, "processing_seconds"),
        ({"provider": "gcore", "rules": [{"endpoint": "gcore.typo", "status": 500}]}, "gcore.typo"),
        ({"provider": "gcore", "rules": [{"endpoint": "gcore.get_video", "action": "fail"}]}, "gcore.get_video"),
        ({"provider": "gcore", "rules": [{"endpoint": "gcore.get_video"}]}, "exactly one"),
        ({"provider": "gcore", "bogus": 1}, "bogus"),
    ]:
        r = requests.put(url, json=config, timeout=5)
        assert r.status_code == 400 and needle in r.json()["error"], (config, r.text)
    assert requests.get(url, timeout=5).json()["gcore"]["rules"] == []  # nothing half-applied


def test_request_log_records_and_filters(sandbox, api):
    t0 = time.time()
    video = create_video(api)
    api.get(f"{api.base}/videos/{video['id']}", timeout=5)
    api.get(f"{sandbox.url}/nowhere", timeout=5)
    entries = log(sandbox, since=t0)
    create = next(e for e in entries if e["endpoint"] == "gcore.create_video")
    assert create["provider"] == "gcore" and create["method"] == "POST" and create["path"] == "/streaming/videos"
    assert (create["status"], create["entity"], create["fault"]) == (201, str(video["id"]), None)
    assert create["bytes_in"] == len(b'{"video": {"name": "clip"}}') and create["t"] > t0
    assert create["client"] == "127.0.0.1"
    assert [e["endpoint"] for e in log(sandbox, endpoint="gcore.get_video")] == ["gcore.get_video"]
    assert any(e["endpoint"] is None and e["status"] == 404 for e in entries)
    assert log(sandbox, since=time.time()) == []
    assert all(not e["path"].startswith("/_sandbox/") for e in entries)


# -- media, CLI ------------------------------------------------------------------------


def test_media_server_streams_with_content_length(sandbox, media):
    r = requests.head(f"{sandbox.url}/media/small.mp4", timeout=5)
    assert (r.status_code, r.headers["Content-Length"]) == (200, "300000")
    r = requests.get(f"{sandbox.url}/media/small.mp4", timeout=5)
    assert r.content == (media / "small.mp4").read_bytes()
    assert requests.get(f"{sandbox.url}/media/%2e%2e/data", timeout=5).status_code == 404


def test_media_files_pass_or_fail_the_container_check(tmp_path):
    a = make_video_file(tmp_path / "a.mp4", 3 * MiB + 5, seed=3)
    b = make_video_file(tmp_path / "b.mp4", 3 * MiB + 5, seed=3)
    data = a.read_bytes()
    assert len(data) == 3 * MiB + 5 and is_video_container(data[:12]) and data[4:12] == b"ftypisom"
    assert data[28:32] == b"mdat" and a.read_bytes() == b.read_bytes()
    assert len({data[i:i + MiB] for i in range(32, 2 * MiB + 32, MiB)}) == 2  # blocks differ
    bad = make_invalid_file(tmp_path / "bad.bin", 1000)
    assert bad.stat().st_size == 1000 and not is_video_container(bad.read_bytes()[:12])


def test_cli_prints_settings_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--data-dir", str(tmp_path),
                             "--gcore-api-key", "cli-key"], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        lines = []
        for line in proc.stdout:  # one export line per setting, then the listening line
            lines.append(line.strip())
            if line.startswith("sandbox listening on "):
                break
        url = lines[-1].removeprefix("sandbox listening on ")
        assert lines[:2] == [f"export INGEST_GCORE_BASE_URL={url}", "export INGEST_GCORE_API_KEY=cli-key"]
        assert requests.get(f"{url}/_sandbox/health", timeout=5).json() == {"ok": True}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
