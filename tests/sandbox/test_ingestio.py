"""The Ingest.io emulator over real sockets: versioning, JWTs, its rate limit, signed
multipart uploads, range pagination, encoding jobs and signed webhooks, with requests.

One sandbox serves the whole module (``processing_seconds=0.3``) and one small HTTP server
receives the webhooks; every test starts from ``POST /_sandbox/reset``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import pytest
import requests

from sandbox.ingestio import DEFAULT_NETWORK, default_profile_id, mint_token

V1 = "application/vnd.ingest.v1+json"
MiB = 1024 * 1024
PIECE = 5 * MiB
BIG_SIZE = 2 * PIECE + MiB + 123  # three parts: 5 MiB, 5 MiB, the rest
SECRET = "test-ingestio-secret"
OCTET = "application/octet-stream"  # the node SDK signs and PUTs parts with this type


# -- fixtures and helpers ----------------------------------------------------------------


MEDIA = {"big.mp4": BIG_SIZE, "small.mp4": 300_000}
SANDBOX_OPTIONS = {"ingestio_jwt_secret": SECRET}
RECEIVER_PATH = "/ingestio-hooks"


@pytest.fixture(scope="module")
def big(media) -> bytes:
    return (media / "big.mp4").read_bytes()


@pytest.fixture
def api(sandbox):
    """A session that talks to the Ingest.io API like the SDKs do."""
    s = requests.Session()
    s.headers.update({"Accept": V1, "Authorization": f"Bearer {sandbox.env()['INGEST_INGESTIO_API_KEY']}"})
    s.base = sandbox.url
    yield s
    s.close()


@pytest.fixture
def profile(sandbox) -> str:
    return sandbox.env()["INGEST_INGESTIO_PROFILE"]


def ok(r: requests.Response, status: int = 200):
    assert r.status_code == status, r.text
    return r.json()


def errors(r: requests.Response, status: int) -> str:
    """The one message of an ``{"errors": [...]}`` answer."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    return body["errors"][0]


def s3_error(r: requests.Response, status: int) -> str:
    assert r.status_code == status and r.headers["Content-Type"] == "application/xml", r.text
    return r.text


def put_faults(sandbox, **config) -> requests.Response:
    return requests.put(f"{sandbox.url}/_sandbox/faults", json={"provider": "ingestio", **config}, timeout=5)


def state(sandbox) -> dict:
    return requests.get(f"{sandbox.url}/_sandbox/state/ingestio", timeout=30).json()


def input_state(sandbox, input_id: str) -> dict:
    return next(i for i in state(sandbox)["inputs"] if i["id"] == input_id)


def listed_as(api, input_id: str) -> list[str]:
    """The states an input is listed under: the reference's Input object has no ``status``,
    its states exist only as ``GET /encoding/inputs?filter=<state>``."""
    return [f for f in ("uploading", "queued", "processing", "error", "ready")
            if input_id in [i["id"] for i in ok(api.get(f"{api.base}/encoding/inputs", params={"filter": f},
                                                        timeout=5))]]


def create_video(api, title: str = "Tears of Steel", **fields) -> dict:
    return ok(api.post(f"{api.base}/videos", json={"title": title, **fields}, timeout=5), 201)


def create_input(api, size: int, filename: str = "big.mp4") -> dict:
    return ok(api.post(f"{api.base}/encoding/inputs", json={"filename": filename, "type": "video/mp4", "size": size},
                       timeout=5), 201)


def init(api, input_id: str, size: int, kind: str = "amazonMP") -> dict:
    return ok(api.post(f"{api.base}/encoding/inputs/{input_id}/upload", params={"type": kind},
                       json={"type": "video/mp4", "size": size}, timeout=5), 201)


def sign(api, input_id: str, part: int | None = None, upload_id: str | None = None, kind: str = "amazonMP",
         content_type: str | None = OCTET):
    """As the node SDK's ``_signChunk``: ``contentType`` with the part (``{}`` + it for ``amazon``)."""
    body = {} if part is None else {"partNumber": part, "uploadId": upload_id}
    if content_type is not None:
        body["contentType"] = content_type
    return api.post(f"{api.base}/encoding/inputs/{input_id}/upload/sign", params={"type": kind}, json=body,
                    timeout=5)


def put(signed: dict, blob: bytes, **overrides: str) -> requests.Response:
    headers = {"Authorization": signed["authHeader"], "x-amz-date": signed["dateHeader"],
               "x-amz-security-token": signed["securityToken"], "Content-Type": "application/octet-stream",
               **overrides}
    return requests.put(signed["url"], data=blob, headers=headers, timeout=30)


def piece(blob: bytes, n: int) -> bytes:
    return blob[(n - 1) * PIECE:n * PIECE]


def put_part(api, input_id: str, upload_id: str, n: int, blob: bytes) -> requests.Response:
    return put(ok(sign(api, input_id, n, upload_id)), blob)


def complete(api, input_id: str, upload_id: str | None) -> requests.Response:
    return api.post(f"{api.base}/encoding/inputs/{input_id}/upload/complete", json={"uploadId": upload_id},
                    timeout=30)


def upload_multipart(api, blob: bytes) -> dict:
    """A ready input holding ``blob``, uploaded in parts."""
    inp = create_input(api, len(blob))
    mp = init(api, inp["id"], len(blob))
    for n in range(1, mp["pieceCount"] + 1):
        assert put_part(api, inp["id"], mp["uploadId"], n, piece(blob, n)).status_code == 200
    return ok(complete(api, inp["id"], mp["uploadId"]))


def upload_single(api, path: Path) -> dict:
    """An input holding the file at ``path``, uploaded in one signed PUT."""
    blob = path.read_bytes()
    inp = create_input(api, len(blob), path.name)
    assert init(api, inp["id"], len(blob), "amazon") == {"key": inp["path"]}
    assert put(ok(sign(api, inp["id"], kind="amazon")), blob).status_code == 200
    return ok(api.get(f"{api.base}/encoding/inputs/{inp['id']}", timeout=5))


def wait_job(api, job_id: str, timeout: float = 10.0) -> tuple[dict, list[int]]:
    """Poll ``/progress`` until the job ends; returns the job and every progress seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        p = ok(api.get(f"{api.base}/encoding/jobs/{job_id}/progress", timeout=5))
        if not seen or seen[-1] != p["progress"]:
            seen.append(p["progress"])
        if p["status"] != 0:
            return ok(api.get(f"{api.base}/encoding/jobs/{job_id}", timeout=5)), seen
        assert time.monotonic() < deadline, f"job {job_id} still in progress"
        time.sleep(0.02)


def jwt(claims: dict, alg: str = "HS256") -> str:
    """A JWT signed with the module's secret, for claims ``mint_token`` would not make."""
    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signed = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims)}"
    signature = hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def rate_headers(r: requests.Response) -> tuple[str, str, str]:
    return r.headers["X-RateLimit-Limit"], r.headers["X-RateLimit-Remaining"], r.headers["X-RateLimit-Reset"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- versioning, tokens, request ids, the rate limit ----------------------------------------


def test_accept_header_selects_version_1_or_406(sandbox, api):
    url = f"{sandbox.url}/videos"
    token = sandbox.env()["INGEST_INGESTIO_API_KEY"]
    for accept in (None, "application/json", "*/*", "application/vnd.ingest.v2+json"):
        headers = {"Authorization": f"Bearer {token}", **({"Accept": accept} if accept else {})}
        r = requests.get(url, headers=headers, timeout=5)
        assert errors(r, 406) == f"Accept must be {V1}"
        assert uuid.UUID(r.headers["Request-Id"]) and r.headers["X-RateLimit-Limit"] == "600"
    r = requests.get(url, headers={"Authorization": f"Bearer {token}", "Accept": f"text/html, {V1};q=0.9"}, timeout=5)
    assert ok(r) == []


def test_bearer_jwt_must_be_signed_unexpired_and_for_this_network(sandbox, api):
    now = int(time.time())
    cases = {
        None: "missing bearer token",
        "Bearer": "missing bearer token",
        "Token abc": "missing bearer token",
        "Bearer not-a-jwt": "malformed token",
        "Bearer a.b.c": "malformed token",
        f"Bearer {mint_token('another-secret', exp=now + 60)}": "invalid token signature",
        f"Bearer {mint_token(SECRET, exp=now - 1)}": "token expired",
        f"Bearer {mint_token(SECRET, exp=now + 60, network_id=str(uuid.uuid4()))}": "token is not for this network",
        f"Bearer {jwt({'sub': 'u', 'network_id': DEFAULT_NETWORK})}": "token has no exp claim",
        f"Bearer {jwt({'exp': now + 60}, alg='none')}": "token must be an HS256 JWT",
    }
    for authorization, message in cases.items():
        headers = {"Accept": V1, **({"Authorization": authorization} if authorization else {})}
        r = requests.post(f"{sandbox.url}/videos", json={"title": "x"}, headers=headers, timeout=5)
        assert errors(r, 401) == message, authorization
        assert uuid.UUID(r.headers["Request-Id"])
    assert state(sandbox)["videos"] == []

    user = str(uuid.uuid4())
    r = requests.post(f"{sandbox.url}/videos", json={"title": "x"}, timeout=5, headers={
        "Accept": V1, "Authorization": f"Bearer {mint_token(SECRET, exp=now + 60, sub=user)}",
        "Content-Type": V1})  # the JS SDK's content type
    assert ok(r, 201)["author"] == user


def test_every_api_answer_has_a_request_id_and_rate_headers(sandbox, api):
    video = create_video(api)
    assert put_faults(sandbox, rules=[
        {"endpoint": "ingestio.get_video", "status": 429, "retry_after": 2, "times": 1},
        {"endpoint": "ingestio.get_video", "status": 500, "times": 1},
    ]).status_code == 200
    throttled = api.get(f"{api.base}/videos/{video['id']}", timeout=5)
    assert throttled.status_code == 429 and throttled.content == b""  # 429s have an empty body (docs)
    assert throttled.headers["Retry-After"] == "2"
    assert rate_headers(throttled) == ("600", "0", "2")  # the refusing window ends with the Retry-After
    failed = api.get(f"{api.base}/videos/{video['id']}", timeout=5)
    assert errors(failed, 500) == "Internal Server Error"
    answers = [
        throttled, failed,
        api.get(f"{api.base}/videos/{video['id']}", timeout=5),
        api.get(f"{api.base}/videos/{uuid.uuid4()}", timeout=5),
        api.post(f"{api.base}/videos", json={}, timeout=5),
        api.head(f"{api.base}/videos", timeout=5),
    ]
    assert [r.status_code for r in answers] == [429, 500, 200, 404, 400, 204]
    assert errors(answers[4], 400) == "title is required"
    ids = [r.headers["Request-Id"] for r in answers]
    assert len(set(ids)) == len(ids) and all(uuid.UUID(i).version == 4 for i in ids)
    for r in answers[1:]:
        limit, remaining, reset = rate_headers(r)
        assert limit == "600" and 55 < int(reset) <= 60 and 0 < int(remaining) < 600


def test_own_rate_limit_is_a_fixed_window(sandbox, api):
    assert put_faults(sandbox, rate_limit=3, rate_window=2).status_code == 200
    answers = [api.get(f"{api.base}/videos", timeout=5) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert [rate_headers(r) for r in answers] == [("3", "2", "2"), ("3", "1", "2"), ("3", "0", "2"), ("3", "0", "2")]
    assert answers[3].content == b"" and answers[3].headers["Retry-After"] == "2"
    assert state(sandbox)["throttled"] == 1
    time.sleep(int(answers[3].headers["Retry-After"]) + 0.05)
    r = api.get(f"{api.base}/videos", timeout=5)
    assert r.status_code == 200 and rate_headers(r) == ("3", "2", "2")  # a new window


# -- uploads -------------------------------------------------------------------------------


def test_multipart_upload_joins_three_parts(sandbox, api, media, big):
    inp = create_input(api, len(big))
    assert inp["path"] == f"{state(sandbox)['network_id']}/{inp['id']}/big.mp4" and "status" not in inp
    assert listed_as(api, inp["id"]) == ["uploading"]
    mp = init(api, inp["id"], len(big))
    assert set(mp) == {"key", "uploadId", "pieceCount", "pieceSize"}
    assert (mp["key"], mp["pieceCount"], mp["pieceSize"]) == (inp["path"], 3, PIECE)
    for n in (1, 2, 3):
        signed = ok(sign(api, inp["id"], n, mp["uploadId"]))
        assert set(signed) == {"authHeader", "dateHeader", "url", "securityToken"}
        assert signed["url"] == f"{sandbox.url}/ingestio-s3/{inp['path']}?partNumber={n}&uploadId={mp['uploadId']}"
        r = put(signed, piece(big, n))
        assert r.status_code == 200 and r.headers["ETag"] == f'"{hashlib.md5(piece(big, n)).hexdigest()}"'
        assert "Request-Id" not in r.headers and "X-RateLimit-Limit" not in r.headers  # S3, not the API
    done = ok(complete(api, inp["id"], mp["uploadId"]))
    assert done["id"] == inp["id"] and "status" not in done and listed_as(api, inp["id"]) == ["ready"]

    row = input_state(sandbox, inp["id"])
    assert (row["sha256"], row["assembled_size"]) == (sha256(media / "big.mp4"), BIG_SIZE)
    assert (row["completed"], row["aborted"], row["signatures"]) == (True, False, {"1": 1, "2": 1, "3": 1})
    assert row["upload"]["parts"] == {
        str(n): {"size": len(piece(big, n)), "etag": hashlib.md5(piece(big, n)).hexdigest(), "puts": 1,
                 "bytes_received": len(piece(big, n))} for n in (1, 2, 3)}
    assert errors(complete(api, inp["id"], mp["uploadId"]), 409) == "upload already completed"
    assert errors(api.post(f"{api.base}/encoding/inputs/{inp['id']}/upload", params={"type": "amazonMP"},
                           json={"size": 1}, timeout=5), 409) == f"input {inp['id']} is already uploaded"
    assert [i["id"] for i in ok(api.get(f"{api.base}/inputs", params={"filter": "ready"}, timeout=5))] == [inp["id"]]


def test_single_put_upload_needs_no_complete(sandbox, api, media):
    done = upload_single(api, media / "small.mp4")
    assert listed_as(api, done["id"]) == ["ready"]
    assert ok(complete(api, done["id"], None)) == done  # a complete for it answers 200 all the same
    row = input_state(sandbox, done["id"])
    assert (row["sha256"], row["assembled_size"], row["upload"]["state"]) == (sha256(media / "small.mp4"), 300_000,
                                                                            "completed")
    notes = upload_single(api, media / "notes.txt")  # not a video container
    assert listed_as(api, notes["id"]) == ["error"] and input_state(sandbox, notes["id"])["status"] == "error"


def test_sign_validates_and_a_new_init_replaces_the_upload(sandbox, api, big):
    inp = create_input(api, len(big))
    assert errors(sign(api, inp["id"], 1, "x"), 409) == f"no upload was initialised for input {inp['id']}"
    mp = init(api, inp["id"], len(big))
    upload_url = f"{api.base}/encoding/inputs/{inp['id']}/upload/sign"
    assert errors(api.post(upload_url, json={"uploadId": mp["uploadId"]}, timeout=5), 400) == "partNumber is required"
    assert errors(api.post(upload_url, json={"partNumber": 1}, timeout=5), 400) == "uploadId is required"
    message = errors(sign(api, inp["id"], 4, mp["uploadId"]), 409)
    assert message == f"partNumber must be 1..3 for upload {mp['uploadId']}"
    assert errors(sign(api, str(uuid.uuid4()), 1, mp["uploadId"]), 404).startswith("input ")
    r = api.post(upload_url, data="partNumber=1", headers={"Content-Type": "text/plain"}, timeout=5)
    assert errors(r, 415) == f"Content-Type must be {V1}"
    old = ok(sign(api, inp["id"], 1, mp["uploadId"]))

    again = init(api, inp["id"], len(big))
    assert again["uploadId"] != mp["uploadId"]
    assert errors(sign(api, inp["id"], 1, mp["uploadId"]), 404) == f"upload {mp['uploadId']} not found"
    assert "<Code>NoSuchUpload</Code>" in s3_error(put(old, piece(big, 1)), 404)
    assert errors(complete(api, inp["id"], mp["uploadId"]), 404) == f"upload {mp['uploadId']} not found"
    assert put_part(api, inp["id"], again["uploadId"], 1, piece(big, 1)).status_code == 200
    assert input_state(sandbox, inp["id"])["signatures"] == {"1": 2}  # per input, across its uploads


def test_complete_names_missing_and_wrong_sized_parts(sandbox, api, media, big):
    inp = create_input(api, len(big))
    mp = init(api, inp["id"], len(big))
    for n in (1, 3):
        assert put_part(api, inp["id"], mp["uploadId"], n, piece(big, n)).status_code == 200
    assert errors(complete(api, inp["id"], mp["uploadId"]), 409) == f"upload {mp['uploadId']} is missing parts 2"
    assert put_part(api, inp["id"], mp["uploadId"], 2, piece(big, 2)[:-1]).status_code == 200
    message = errors(complete(api, inp["id"], mp["uploadId"]), 409)
    assert message.startswith(f"parts 2 ({PIECE - 1} bytes) must be exactly pieceSize ({PIECE} bytes)")
    assert put_part(api, inp["id"], mp["uploadId"], 2, piece(big, 2)).status_code == 200  # replaces the short copy
    assert ok(complete(api, inp["id"], mp["uploadId"]))["id"] == inp["id"]
    assert listed_as(api, inp["id"]) == ["ready"]
    row = input_state(sandbox, inp["id"])
    assert row["sha256"] == sha256(media / "big.mp4") and row["upload"]["parts"]["2"]["puts"] == 2
    assert errors(complete(api, str(uuid.uuid4()), mp["uploadId"]), 404).startswith("input ")
    assert errors(complete(api, inp["id"], None), 400) == "uploadId is required"


def test_a_lost_complete_answer_leaves_the_input_ready_and_a_second_complete_409(sandbox, api, big):
    inp = create_input(api, len(big))
    mp = init(api, inp["id"], len(big))
    for n in (1, 2, 3):
        assert put_part(api, inp["id"], mp["uploadId"], n, piece(big, n)).status_code == 200
    assert put_faults(sandbox, lose_next_complete_answers=1).status_code == 200
    with pytest.raises(requests.ConnectionError):
        complete(api, inp["id"], mp["uploadId"])
    assert errors(complete(api, inp["id"], mp["uploadId"]), 409) == "upload already completed"
    assert listed_as(api, inp["id"]) == ["ready"] and input_state(sandbox, inp["id"])["completed"] is True


def test_expired_signature_is_refused_and_a_new_one_works(sandbox, api, big):
    inp = create_input(api, len(big))
    mp = init(api, inp["id"], len(big))
    assert put_faults(sandbox, expire_next_signatures=1).status_code == 200
    expired = ok(sign(api, inp["id"], 1, mp["uploadId"]))
    assert state(sandbox)["expire_next_signatures_left"] == 0
    body = s3_error(put(expired, piece(big, 1)), 403)
    assert "<Code>AccessDenied</Code><Message>Request has expired</Message>" in body

    fresh = ok(sign(api, inp["id"], 1, mp["uploadId"]))
    for tampered in ({"x-amz-security-token": "forged"}, {"x-amz-date": "20300101T000000Z"},
                     {"Authorization": fresh["authHeader"][:-4] + "0000"}):
        assert "<Code>SignatureDoesNotMatch</Code>" in s3_error(put(fresh, piece(big, 1), **tampered), 403)
    wrong_part = dict(fresh, url=fresh["url"].replace("partNumber=1", "partNumber=2"))
    assert "<Code>SignatureDoesNotMatch</Code>" in s3_error(put(wrong_part, piece(big, 2)), 403)
    assert put(fresh, piece(big, 1)).status_code == 200
    assert input_state(sandbox, inp["id"])["upload"]["parts"]["1"]["puts"] == 1  # refused PUTs are not parts


def test_the_signature_covers_the_signed_content_type(sandbox, api, big):
    """The node SDK signs each part with ``contentType`` and PUTs exactly that type: a PUT
    with another type, or with one the sign call did not name, is refused as S3 would."""
    inp = create_input(api, len(big))
    mp = init(api, inp["id"], len(big))
    signed = ok(sign(api, inp["id"], 1, mp["uploadId"]))
    assert "SignedHeaders=content-type;host;" in signed["authHeader"]
    for other in ("video/mp4", "application/octet-stream; charset=utf-8"):
        assert "<Code>SignatureDoesNotMatch</Code>" in s3_error(put(signed, piece(big, 1), **{"Content-Type": other}),
                                                                 403)
    unsigned = ok(sign(api, inp["id"], 1, mp["uploadId"], content_type=None))
    assert "<Code>SignatureDoesNotMatch</Code>" in s3_error(put(unsigned, piece(big, 1)), 403)
    assert input_state(sandbox, inp["id"])["signed_types"] == {"1": None}
    assert put(ok(sign(api, inp["id"], 1, mp["uploadId"])), piece(big, 1)).status_code == 200
    row = input_state(sandbox, inp["id"])
    assert (row["signed_types"], row["upload"]["parts"]["1"]["puts"]) == ({"1": OCTET}, 1)


def test_a_dropped_part_stores_nothing_and_is_sent_again(sandbox, api, media, big):
    inp = create_input(api, len(big))
    mp = init(api, inp["id"], len(big))
    signed = ok(sign(api, inp["id"], 2, mp["uploadId"]))
    put_faults(sandbox, rules=[{"endpoint": "ingestio.part_put", "action": "drop", "after_bytes": MiB}])
    with pytest.raises(requests.ConnectionError):
        put(signed, piece(big, 2))
    part = input_state(sandbox, inp["id"])["upload"]["parts"]["2"]
    assert (part["size"], part["etag"], part["puts"]) == (None, None, 1)
    assert MiB <= part["bytes_received"] < PIECE
    assert errors(complete(api, inp["id"], mp["uploadId"]), 409).endswith("is missing parts 1, 2, 3")

    assert put(signed, piece(big, 2)).status_code == 200  # the signature is still good
    for n in (1, 3):
        assert put_part(api, inp["id"], mp["uploadId"], n, piece(big, n)).status_code == 200
    assert ok(complete(api, inp["id"], mp["uploadId"]))["id"] == inp["id"]
    row = input_state(sandbox, inp["id"])
    assert row["status"] == "ready"
    assert {n: p["puts"] for n, p in row["upload"]["parts"].items()} == {"1": 1, "2": 2, "3": 1}
    assert row["sha256"] == sha256(media / "big.mp4")


def test_abort_drops_the_parts_and_a_new_init_starts_over(sandbox, api, big, receiver):
    ok(api.post(f"{api.base}/hooks", json={"event_names": ["inputs.cancelled"], "url": receiver.url}, timeout=5), 201)
    inp = create_input(api, len(big))
    mp = init(api, inp["id"], len(big))
    assert put_part(api, inp["id"], mp["uploadId"], 1, piece(big, 1)).status_code == 200
    late = ok(sign(api, inp["id"], 2, mp["uploadId"]))
    abort_url = f"{api.base}/encoding/inputs/{inp['id']}/upload/abort"
    aborted = ok(api.post(abort_url, json={"uploadId": mp["uploadId"]}, timeout=5), 201)
    assert aborted["id"] == inp["id"] and listed_as(api, inp["id"]) == ["uploading"]
    row = input_state(sandbox, inp["id"])
    assert (row["aborted"], row["completed"], row["upload"]["state"]) == (True, False, "aborted")
    assert row["upload"]["parts"]["1"]["size"] is None
    [hook] = receiver.wait_for(1)
    assert (hook["event"], hook["event_object"]["data"]["id"]) == ("inputs.cancelled", inp["id"])

    assert errors(api.post(abort_url, json={"uploadId": mp["uploadId"]}, timeout=5), 409) == "upload already aborted"
    assert errors(complete(api, inp["id"], mp["uploadId"]), 409) == "upload already aborted"
    assert errors(sign(api, inp["id"], 2, mp["uploadId"]), 409) == "upload already aborted"
    assert "<Code>NoSuchUpload</Code>" in s3_error(put(late, piece(big, 2)), 404)
    assert errors(api.post(abort_url, json={"uploadId": str(uuid.uuid4())}, timeout=5), 404).startswith("upload ")

    mp2 = init(api, inp["id"], len(big))
    for n in (1, 2, 3):
        assert put_part(api, inp["id"], mp2["uploadId"], n, piece(big, n)).status_code == 200
    assert ok(complete(api, inp["id"], mp2["uploadId"]))["id"] == inp["id"]
    assert listed_as(api, inp["id"]) == ["ready"]


def test_create_input_validates_and_lists(sandbox, api):
    url = f"{api.base}/encoding/inputs"
    assert errors(api.post(url, json={"type": "video/mp4", "size": 1}, timeout=5), 400) == "filename is required"
    assert errors(api.post(url, json={"filename": "a/b.mp4", "type": "video/mp4", "size": 1}, timeout=5),
                  400).startswith("filename must be")
    assert errors(api.post(url, json={"filename": "a.mp4", "size": 1}, timeout=5), 400) == "type is required"
    assert errors(api.post(url, json={"filename": "a.mp4", "type": "video/mp4", "size": 0}, timeout=5),
                  400) == "size must be an integer >= 1"
    inp = create_input(api, 10)
    assert set(inp) == {"id", "url", "filename", "type", "path", "size", "images", "network_id", "metadata",
                        "created_at", "updated_at"}  # no status: the reference's Input has none
    assert ok(api.get(inp["url"], timeout=5)) == ok(api.get(f"{api.base}/inputs/{inp['id']}", timeout=5)) == inp
    assert api.head(f"{api.base}/inputs", params={"filter": "uploading"}, timeout=5).headers["Resource-Count"] == "1"
    assert ok(api.get(url, params={"filter": "ready"}, timeout=5)) == []
    other = create_input(api, 10, "Other-Clip.mp4")
    assert [i["id"] for i in ok(api.get(url, params={"search": "other-clip", "filter": "uploading"}, timeout=5))] == [
        other["id"]]  # the node SDK's Inputs.search: ?search=&filter=
    assert errors(api.get(url, params={"filter": "done"}, timeout=5), 400).startswith("filter must be one of")
    r = api.post(f"{url}/{inp['id']}/upload", params={"type": "s3"}, json={"size": 10}, timeout=5)
    assert errors(r, 400) == "type must be amazonMP or amazon"


def test_piece_size_and_other_settings_are_validated(sandbox, api):
    r = put_faults(sandbox, piece_size=MiB)
    assert r.status_code == 400 and "piece_size must be an integer >= 5242880" in r.text
    for name in ("page_size", "rate_window"):
        assert put_faults(sandbox, **{name: 0}).status_code == 400
    assert put_faults(sandbox, piece_size=6 * MiB).status_code == 200
    inp = create_input(api, 13 * MiB)
    assert init(api, inp["id"], 13 * MiB)["pieceCount"] == 3


# -- videos and pagination -------------------------------------------------------------------


def test_lists_are_pages_with_next_range(sandbox, api):
    put_faults(sandbox, page_size=5)
    videos = [create_video(api, f"Clip {n}", description="d", tags=["t"]) for n in range(1, 13)]
    assert videos[0]["status"] == "CREATED" and (videos[0]["description"], videos[0]["tags"]) == ("d", ["t"])
    r = api.get(f"{api.base}/videos", timeout=5)  # default filter: draft, published
    assert ok(r) == [] and r.headers["Content-Range"] == "items */0"
    assert api.head(f"{api.base}/videos", timeout=5).headers["Resource-Count"] == "0"

    seen, pages = [], []
    headers: dict[str, str] = {}
    while True:
        r = api.get(f"{api.base}/videos", params={"status": "created"}, headers=headers, timeout=5)
        seen += [v["id"] for v in r.json()]
        pages.append((r.status_code, r.headers["Content-Range"], r.headers.get("Next-Range")))
        if r.status_code != 206:
            break
        headers = {"Range": r.headers["Next-Range"]}
    assert pages == [(206, "items 0-4/12", "items 5-9"), (206, "items 5-9/12", "items 10-14"),
                     (200, "items 10-11/12", None)]
    assert seen == [v["id"] for v in videos]  # oldest first, each once
    r = api.head(f"{api.base}/videos", params={"status": "created,error"}, timeout=5)
    assert (r.status_code, r.headers["Resource-Count"]) == (204, "12")

    r = api.get(f"{api.base}/videos", params={"status": "created", "search": "CLIP 1"}, timeout=5)
    assert [v["title"] for v in ok(r)] == ["Clip 1", "Clip 10", "Clip 11", "Clip 12"]
    r = api.get(f"{api.base}/videos", params={"status": "created"}, headers={"Range": "items 2-3"}, timeout=5)
    assert [v["title"] for v in r.json()] == ["Clip 3", "Clip 4"] and r.headers["Next-Range"] == "items 4-5"
    r = api.get(f"{api.base}/videos", params={"status": "created"}, headers={"Range": "items 20-29"}, timeout=5)
    assert ok(r) == [] and r.headers["Content-Range"] == "items */12"
    for bad in ("bytes=0-4", "items 5-2", "items x-y"):
        r = api.get(f"{api.base}/videos", params={"status": "created"}, headers={"Range": bad}, timeout=5)
        assert errors(r, 416).startswith("Range must look like")
    assert errors(api.get(f"{api.base}/videos", params={"status": "ready"}, timeout=5), 400).startswith("status must")
    assert ok(api.get(videos[0]["url"], timeout=5)) == videos[0]
    assert errors(api.get(f"{api.base}/videos/{uuid.uuid4()}", timeout=5), 404).startswith("video ")


# -- jobs ------------------------------------------------------------------------------------


def test_job_progresses_to_completed_and_the_video_becomes_draft(sandbox, api, media, profile):
    inp = upload_single(api, media / "small.mp4")
    video = create_video(api)
    job = ok(api.post(f"{api.base}/encoding/jobs", json={"inputs": [inp["id"]], "profile": profile,
                                                           "video": video["id"]}, timeout=5), 201)
    assert set(job) == {"id", "url", "status", "progress", "profile", "video", "inputs", "created_at", "updated_at",
                        "deleted_at"}
    assert (job["status"], job["progress"], job["inputs"], job["deleted_at"]) == (0, 0, [inp["id"]], None)
    assert ok(api.get(video["url"], timeout=5))["status"] == "PROCESSING"
    done, progress = wait_job(api, job["id"])
    assert (done["status"], done["progress"]) == (1, 100)
    assert progress[-1] == 100 and set(progress[1:-1]) <= {10, 50, 90} and progress == sorted(progress)
    assert len(progress) >= 3  # it was seen rising, not just jumping to 100
    video = ok(api.get(video["url"], timeout=5))
    assert video["status"] == "DRAFT" and video["playback_urls"][0].endswith("/master.m3u8")
    assert [v["id"] for v in ok(api.get(f"{api.base}/videos", timeout=5))] == [video["id"]]  # draft is listed
    assert [j["id"] for j in ok(api.get(f"{api.base}/encoding/jobs", params={"video": video["id"]}, timeout=5))] == [
        job["id"]]
    assert api.head(f"{api.base}/encoding/jobs", timeout=5).headers["Resource-Count"] == "1"


def test_failed_processing_ends_the_job_with_status_10(sandbox, api, media, profile):
    inp = upload_single(api, media / "small.mp4")
    video = create_video(api)
    put_faults(sandbox, rules=[{"endpoint": "ingestio.processing", "action": "fail", "times": 1}])
    job = ok(api.post(f"{api.base}/encoding/jobs", json={"inputs": [inp["id"]], "profile": profile,
                                                           "video": video["id"]}, timeout=5), 201)
    done, _ = wait_job(api, job["id"])
    assert done["status"] == 10
    assert ok(api.get(video["url"], timeout=5))["status"] == "ERROR"
    assert [v["id"] for v in ok(api.get(f"{api.base}/videos", params={"status": "error"}, timeout=5))] == [
        video["id"]]


def test_create_job_validates_and_duplicates_are_separate_jobs(sandbox, api, media, profile):
    ready = upload_single(api, media / "small.mp4")
    uploading = create_input(api, 10)
    video = create_video(api)
    url = f"{api.base}/encoding/jobs"
    body = {"inputs": [ready["id"]], "profile": profile, "video": video["id"]}
    for name in ("inputs", "profile", "video"):
        assert errors(api.post(url, json={k: v for k, v in body.items() if k != name}, timeout=5),
                      400) == f"{name} is required"
    unknown = str(uuid.uuid4())
    assert errors(api.post(url, json={**body, "video": unknown}, timeout=5), 404) == f"video {unknown} not found"
    assert errors(api.post(url, json={**body, "profile": unknown}, timeout=5), 404) == f"profile {unknown} not found"
    assert errors(api.post(url, json={**body, "inputs": [unknown]}, timeout=5), 404) == f"input {unknown} not found"
    assert errors(api.post(url, json={**body, "inputs": [uploading["id"]]}, timeout=5),
                  409) == f"input {uploading['id']} is not ready (status uploading)"
    first, second = (ok(api.post(url, json=body, timeout=5), 201) for _ in range(2))
    assert first["id"] != second["id"]  # no idempotency
    assert errors(api.get(f"{url}/{unknown}", timeout=5), 404) == f"job {unknown} not found"
    assert ok(api.get(f"{url}/{first['id']}", timeout=5))["id"] == first["id"]


def test_the_default_profile_survives_reset_as_does_the_token(sandbox, api, profile):
    env = sandbox.env()
    assert set(env) >= {"INGEST_INGESTIO_BASE_URL", "INGEST_INGESTIO_API_KEY", "INGEST_INGESTIO_PROFILE"}
    assert env["INGEST_INGESTIO_BASE_URL"] == sandbox.url and profile == default_profile_id(DEFAULT_NETWORK)
    create_video(api)
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=30).raise_for_status()
    r = api.get(f"{api.base}/encoding/profiles", timeout=5)
    assert [p["id"] for p in ok(r)] == [profile] and r.headers["Content-Range"] == "items 0-0/1"
    assert ok(api.get(f"{api.base}/encoding/profiles/{profile}", timeout=5))["name"] == "Default Profile"
    assert errors(api.get(f"{api.base}/encoding/profiles/{uuid.uuid4()}", timeout=5), 404).startswith("profile ")
    s = state(sandbox)
    assert (s["videos"], s["inputs"], s["jobs"], s["hooks"], s["webhooks_sent"]) == ([], [], [], [], [])
    assert s["requests"] == {"ingestio.list_profiles": 1, "ingestio.get_profile": 2}


# -- webhooks --------------------------------------------------------------------------------


def test_webhooks_are_signed_with_the_hook_secret(sandbox, api, media, profile, receiver):
    hook = ok(api.post(f"{api.base}/hooks", json={
        "event_names": ["inputs.complete", "jobs.create", "jobs.complete"], "url": receiver.url, "enabled": True,
        "secret": "c5809b07684a0f73"}, timeout=5), 201)
    assert set(hook) == {"id", "event_names", "url", "enabled", "secret", "created_at"}
    inp = upload_single(api, media / "small.mp4")
    job = ok(api.post(f"{api.base}/encoding/jobs", json={"inputs": [inp["id"]], "profile": profile,
                                                           "video": create_video(api)["id"]}, timeout=5), 201)
    wait_job(api, job["id"])
    receiver.wait_for(3)
    events = {}
    for got in receiver.received:
        raw = got["body"]
        expected = hmac.new(b"c5809b07684a0f73", raw, hashlib.sha1).hexdigest()
        assert got["headers"]["X-Ingest-Signature"] == expected
        assert got["headers"]["X-Ingest-Request-Attempt"] == "1" and "X-Ingest-Retry-Reason" not in got["headers"]
        payload = json.loads(raw)
        event_object = payload["event_object"]
        assert set(payload) == {"event", "URL", "event_object"}
        assert set(event_object) == {"event_id", "network_id", "event_name", "created_at", "data"}
        assert event_object["event_name"] == payload["event"] and payload["URL"] == event_object["data"]["url"]
        events[payload["event"]] = event_object["data"]
    assert events["inputs.complete"]["id"] == inp["id"] and "status" not in events["inputs.complete"]
    assert (events["jobs.create"]["id"], events["jobs.create"]["status"]) == (job["id"], 0)
    assert (events["jobs.complete"]["status"], events["jobs.complete"]["progress"]) == (1, 100)
    sent = state(sandbox)["webhooks_sent"]
    assert sorted((w["event"], w["status"], w["attempts"]) for w in sent) == [
        ("inputs.complete", 200, 1), ("jobs.complete", 200, 1), ("jobs.create", 200, 1)]


def test_webhooks_are_retried_unless_told_not_to(sandbox, api, receiver):
    ok(api.post(f"{api.base}/hooks", json={"event_names": ["videos.create"], "url": receiver.url}, timeout=5), 201)
    receiver.fail_first = 1
    video = create_video(api)
    [hook] = receiver.wait_for(1)
    assert hook["event_object"]["data"]["id"] == video["id"]
    first, second = receiver.received
    assert (first["status"], second["status"]) == (500, 200) and first["body"] == second["body"]
    assert second["headers"]["X-Ingest-Request-Attempt"] == "2"
    assert second["headers"]["X-Ingest-Retry-Reason"] == "HTTP 500"
    assert [(w["attempts"], w["status"]) for w in state(sandbox)["webhooks_sent"]] == [(2, 200)]

    receiver.clear()
    receiver.fail_first, receiver.fail_headers = 3, {"X-Ingest-No-Retry": "1"}
    create_video(api)
    deadline = time.monotonic() + 5
    while len(state(sandbox)["webhooks_sent"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    last = state(sandbox)["webhooks_sent"][-1]
    assert (last["attempts"], last["status"], last["no_retry"]) == (1, 500, True)
    assert len(receiver.received) == 1


def test_hooks_crud_disabled_hooks_and_duplicates(sandbox, api, receiver):
    url = f"{api.base}/hooks"
    assert errors(api.post(url, json={"url": receiver.url}, timeout=5), 400) == "event_names is required"
    assert errors(api.post(url, json={"event_names": ["job.complete"], "url": receiver.url}, timeout=5),
                  400) == "event_names: unknown events job.complete"
    assert errors(api.post(url, json={"event_names": ["jobs.create"], "url": "ftp://x"}, timeout=5),
                  400) == "url must be an http(s) URL"
    on = ok(api.post(url, json={"event_names": ["videos.create"], "url": receiver.url}, timeout=5), 201)
    assert on["enabled"] is True and len(on["secret"]) == 16 and int(on["secret"], 16) >= 0
    off = ok(api.post(url, json={"event_names": ["videos.create"], "url": receiver.url + "/off", "enabled": False},
                      timeout=5), 201)
    assert [h["id"] for h in ok(api.get(url, timeout=5))] == [on["id"], off["id"]]
    assert ok(api.get(f"{url}/{on['id']}", timeout=5)) == on
    assert [h["id"] for h in ok(api.get(f"{url}/videos.create", timeout=5))] == [on["id"], off["id"]]

    put_faults(sandbox, webhook_duplicates=True)
    create_video(api)
    first, second = receiver.wait_for(2)
    assert first == second  # the same event twice: same event_id
    assert {w["url"] for w in state(sandbox)["webhooks_sent"]} == {receiver.url}  # not the disabled hook

    assert api.delete(f"{url}/{on['id']}", timeout=5).status_code == 204
    assert errors(api.get(f"{url}/{on['id']}", timeout=5), 404) == f"hook {on['id']} not found"
    assert errors(api.delete(f"{url}/{on['id']}", timeout=5), 404) == f"hook {on['id']} not found"


def test_publish_turns_draft_videos_published(sandbox, api, media, profile):
    url = f"{api.base}/videos/publish"
    video = create_video(api)
    assert errors(api.post(url, json=[video["id"]], timeout=5), 409).endswith("have not finished encoding")
    assert errors(api.post(url, json={"ids": [video["id"]]}, timeout=5), 400).startswith("the request body must")
    assert errors(api.post(url, json=[str(uuid.uuid4())], timeout=5), 404).startswith("video ")
    inp = upload_single(api, media / "small.mp4")
    job = ok(api.post(f"{api.base}/encoding/jobs", json={"inputs": [inp["id"]], "profile": profile,
                                                        "video": video["id"]}, timeout=5), 201)
    wait_job(api, job["id"])
    [published] = ok(api.post(url, json=[video["id"]], timeout=5))
    assert (published["status"], bool(published["published_at"])) == ("PUBLISHED", True)
    assert [v["id"] for v in ok(api.get(f"{api.base}/videos", params={"status": "published"}, timeout=5))] == [
        video["id"]]
