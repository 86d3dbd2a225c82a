"""The fleet end to end on Gcore: real redis-server, real `celery worker` processes, the
sandbox over real sockets (TUS included)."""

from __future__ import annotations

import itertools
import json
import time
from urllib.parse import quote

import pytest
import requests

from tasks.producer import status, submit, wait
from tasks.queues import all_queues, queue_length
from tests.conftest import GCORE_KEY, MEDIA, SANDBOX_URL, SOURCES, cli, make_source, sha256_of

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
CHUNK = 10_000_000


def _video(sandbox, job: dict) -> dict:
    vid = job["provider_ids"]["video_id"]
    return next(v for v in sandbox.state()["videos"] if v["id"] == vid)


def test_push_and_pull_reach_ready_with_the_source_bytes(start_fleet, sandbox) -> None:
    start_fleet(workers=1, concurrency=2)
    src = make_source("push-32m.mp4", 32 * MiB)
    pulled = make_source("pull-6m.mp4", 6 * MiB, folder=MEDIA)
    push_id = submit({"provider": "gcore", "source": str(src), "title": "push 32 MiB"})
    pull_id = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": "pull"})

    push, pull = wait(push_id, 120), wait(pull_id, 120)
    assert push["state"] == "ready", push
    assert pull["state"] == "ready", pull
    assert push["bytes_done"] == push["bytes_total"] == 32 * MiB
    assert _video(sandbox, push)["sha256"] == sha256_of(src)
    assert _video(sandbox, pull)["sha256"] == sha256_of(pulled)
    assert _video(sandbox, push)["name"] == "push 32 MiB"
    events = [h["event"] for h in push["history"]]
    assert events[0] == "submitted" and "upload.complete" in events and events[-1] == "ready"
    assert len(sandbox.state()["videos"]) == 2


def test_a_chunk_damaged_on_the_way_is_refused_and_sent_again_where_tus_offers_checksums(start_fleet, sandbox) -> None:
    """Where the TUS server offers the checksum extension (OPTIONS), every PATCH carries
    Upload-Checksum: a chunk damaged on its way (the sandbox flips a byte of the second) gets
    460 and is sent again, so the video is the file submitted. Where it is not offered, no
    checksum is sent (and such damage would go unseen: the server has no way to tell)."""
    sandbox.faults(tus_checksum=True, rules=[{"endpoint": "gcore.tus_patch", "action": "corrupt", "times": 1}])
    start_fleet(workers=1)
    src = make_source("tus-damaged.mp4", 25 * MiB)  # three 10 MB chunks
    job = wait(submit({"provider": "gcore", "source": str(src)}), 120)
    assert job["state"] == "ready", job["error"]
    assert _video(sandbox, job)["sha256"] == sha256_of(src)
    patches = sandbox.log(endpoint="gcore.tus_patch")
    assert [(e["status"], e["fault"]) for e in patches if e["status"] != 204] == [(460, "rule:corrupt")]
    assert next(h for h in job["history"] if h["event"] == "upload.session")["checksum"] == "sha256"


def test_kill_9_of_the_whole_worker_mid_upload_resumes_elsewhere(start_fleet, sandbox) -> None:
    size = 200 * MiB
    src = make_source("push-200m.mp4", size)
    # Slow each PATCH a little so the kill lands mid-upload on any machine.
    sandbox.faults(latency_ms=150, latency_endpoints=["gcore.tus_patch"])
    fleet = start_fleet(workers=1, concurrency=1)
    job_id = submit({"provider": "gcore", "source": str(src), "title": "killed mid-upload"})

    deadline = time.monotonic() + 120
    while (done := status(job_id)["bytes_done"]) < 4 * CHUNK:
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    assert done < size - 4 * CHUNK, "the upload finished before the kill; slow it down further"
    fleet.workers[0].kill9()  # parent and pool children at once, no warm shutdown
    fleet.start_worker(concurrency=1)

    job = wait(job_id, 240)
    assert job["state"] == "ready", job
    state = sandbox.state()
    assert len(state["videos"]) == 1, state["videos"]
    assert state["videos"][0]["sha256"] == sha256_of(src)
    received = sum(u["bytes_received_total"] for u in state["uploads"])
    assert received <= size + 2 * CHUNK, f"{received - size} bytes sent twice"


def test_the_same_key_gives_the_same_job_and_one_video(start_fleet, sandbox) -> None:
    start_fleet(workers=1)
    pulled = make_source("pull-key.mp4", 3 * MiB, folder=MEDIA)
    args = ["submit", "--provider", "gcore", "--source", f"{SANDBOX_URL}/media/{pulled.name}", "--key", "order-4711"]
    first, second = cli(*args), cli(*args)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout.strip() == second.stdout.strip()
    job_id = first.stdout.strip()
    assert wait(job_id, 60)["state"] == "ready"
    # A late duplicate of the first message (as a redelivery would be) is recognised and dropped.
    from tasks.dispatch import publish
    from tasks.queues import PRIORITY, member

    publish(member("gcore.api", f"{job_id}.1.create", PRIORITY["normal"]))
    time.sleep(1.5)
    assert status(job_id)["state"] == "ready"
    assert len(sandbox.state()["videos"]) == 1
    assert len(sandbox.log("gcore.create_video")) == 1
    assert len(sandbox.log("gcore.list_videos")) == 1


def test_throttling_and_server_errors_are_survived(start_fleet, sandbox) -> None:
    sandbox.faults(rules=[
        {"endpoint": "gcore.create_video", "status": 429, "retry_after": 1, "times": 2},
        {"endpoint": "gcore.upload_params", "status": 502, "times": 1},
        {"endpoint": "gcore.tus_patch", "status": 429, "retry_after": 1, "times": 1},
        {"endpoint": "gcore.tus_patch", "status": 503, "times": 2},
        {"endpoint": "gcore.tus_patch", "action": "drop", "after_bytes": 3_000_000, "times": 1},
        {"endpoint": "gcore.get_video", "status": 500, "times": 2},
    ])
    start_fleet(workers=1, concurrency=2)
    src = make_source("push-faults.mp4", 24 * MiB)
    job = wait(submit({"provider": "gcore", "source": str(src), "title": "faults"}), 120)
    assert job["state"] == "ready", job
    assert _video(sandbox, job)["sha256"] == sha256_of(src)
    injected = [e for e in sandbox.log() if e.get("fault")]
    assert len(injected) == 9, injected  # every scripted fault was really served
    events = [h["event"] for h in job["history"]]
    assert "throttled" in events and "retry" in events
    assert len(sandbox.state()["videos"]) == 1


def test_a_permanent_error_fails_at_once_with_the_providers_message(start_fleet, sandbox) -> None:
    sandbox.faults(rules=[{"endpoint": "gcore.create_video", "status": 403,
                           "body": {"error": "Forbidden: account is blocked"}, "times": 1}])
    start_fleet(workers=1)
    pulled = make_source("pull-403.mp4", 1 * MiB, folder=MEDIA)
    run = cli("submit", "--provider", "gcore", "--source", f"{SANDBOX_URL}/media/{pulled.name}", "--wait",
              "--timeout", "60", "--json")
    assert run.returncode == 1, run.stderr
    job = json.loads(run.stdout)
    assert job["state"] == "failed"
    assert "Forbidden: account is blocked" in job["error"]["message"]
    assert job["error"]["step"] == "create" and job["error"]["kind"] == "permanent"
    assert len(sandbox.log("gcore.create_video")) == 1  # no retry loop


def test_a_file_that_is_not_a_video_fails_with_gcores_text(start_fleet, sandbox) -> None:
    start_fleet(workers=1)
    src = make_source("not-a-video.mp4", 2 * MiB, valid=False)
    job = wait(submit({"provider": "gcore", "source": str(src)}), 60)
    assert job["state"] == "failed"
    assert "File Invalid" in job["error"]["message"]
    assert job["error"]["step"] == "await"


@pytest.mark.parametrize(
    "args, field, words",
    [
        (["--provider", "vimeo", "--source", "https://h/a.mp4"], "provider", "unknown provider"),
        (["--source", str(SOURCES / "missing.mp4")], "source", "file not found"),
        (["--source", "/etc/hostname"], "source", "outside INGEST_SOURCE_ROOTS"),
        (["--source", "ftp://h/a.mp4"], "source", "scheme 'ftp' is not supported"),
        (["--source", str(SOURCES)], "source", "is a directory"),
        (["--source", "https://h/a.mp4", "--title", "x" * 300], "title", "the limit is 255"),
        (["--source", "https://h/a.mp4", "--title", b"caf\xe9 latin-1"], "title", "not valid UTF-8"),
        (["--source", "https://h/a.mp4", "--meta", "novalue"], "metadata", "KEY=VALUE"),
    ],
)
def test_bad_input_is_refused_at_the_door(rt, args, field, words) -> None:
    from tests.conftest import _wipe_fleet_keys

    _wipe_fleet_keys(rt.redis)
    if "--provider" not in args:
        args = ["--provider", "gcore", *args]
    run = cli("submit", *args)
    assert run.returncode == 2, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {field}"), run.stderr
    assert words in lines[0]
    assert list(rt.redis.scan_iter("if:*")) == []  # no job record, no schedule entry
    assert all(queue_length(rt.redis, q) == 0 for q in all_queues())


def test_no_secret_reaches_redis_logs_or_flower(start_fleet, sandbox, rt, tmp_path) -> None:
    from workers.embedded_redis import free_port
    from workers.procs import flower_argv

    fleet = start_fleet(workers=1)
    port = free_port()
    flower = fleet.group.start("flower", flower_argv(port), env={"FLOWER_BASIC_AUTH": "ops:flower-pass-1"})
    src = make_source("push-secrets.mp4", 12 * MiB)
    pulled = make_source("pull-secrets.mp4", 1 * MiB, folder=MEDIA)
    ids = [submit({"provider": "gcore", "source": str(src)}),
           submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{pulled.name}"})]
    assert all(wait(i, 90)["state"] == "ready" for i in ids)

    tokens = sandbox.state()["tokens_issued"]
    assert tokens, "the sandbox issued no TUS token: the test would prove nothing"
    secrets = [GCORE_KEY, *tokens]

    # Redis: every key and every value, messages and the schedule included.
    for key in rt.redis.scan_iter("*"):
        kind = rt.redis.type(key).decode()
        value = {"string": lambda k: rt.redis.get(k), "list": lambda k: rt.redis.lrange(k, 0, -1),
                 "hash": lambda k: rt.redis.hgetall(k), "zset": lambda k: rt.redis.zrange(k, 0, -1),
                 "set": lambda k: rt.redis.smembers(k)}.get(kind, lambda k: b"")(key)
        blob = repr((key, value))
        for secret in secrets:
            assert secret not in blob, f"secret in Redis key {key!r}"

    # Logs: the workers logged these jobs (JSON, with their context), and no secret.
    logs = fleet.logs()
    assert ids[0] in logs
    ready = [json.loads(line) for line in logs.splitlines()
             if line.startswith("{") and '"job.ready"' in line]
    assert {"job_id", "provider", "step", "task_id"} <= set(ready[0])
    for secret in secrets:
        assert secret not in logs

    # Flower: basic auth on; its task API knows the tasks and shows no secret. (The jobs above
    # may all end before Flower listens to events: wait for Flower itself, then send one more.)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/api/tasks", auth=("ops", "flower-pass-1"), timeout=5).ok:
                break
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline and flower.alive(), flower.tail()
        time.sleep(0.5)
    assert requests.get(f"{base}/api/tasks", timeout=5).status_code == 401
    # Events flow only while Flower listens, which starts a little after its HTTP server:
    # warm-up jobs until Flower shows one, then a new job is seen there, by name and args.
    deadline = time.monotonic() + 30
    while True:
        warm = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": "warm-up"})
        assert wait(warm, 60)["state"] == "ready"
        time.sleep(0.5)
        if warm in requests.get(f"{base}/api/tasks", auth=("ops", "flower-pass-1"), timeout=5).text:
            break
        assert time.monotonic() < deadline, "Flower never received task events"
    late = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": "seen by flower"})
    # A presigned URL is relayed by the workers (issue 15): its signature is a secret too.
    signature = "Flower9sig+SECRET/value="
    signed = submit({"provider": "gcore", "title": "relayed, seen by flower",
                     "source": f"{SANDBOX_URL}/media/{pulled.name}?X-Amz-Signature={quote(signature, safe='')}"})
    assert wait(late, 60)["state"] == "ready"
    assert wait(signed, 60)["state"] == "ready"
    time.sleep(1.0)
    body = requests.get(f"{base}/api/tasks", auth=("ops", "flower-pass-1"), timeout=5).text
    assert late in body and "ingest.create_entity" in body
    assert f"provider=gcore, account=default, step=create, job={late}" in body
    assert f"step=upload, job={signed}" in body  # Flower saw the relay's slices
    for secret in [*secrets, signature, quote(signature, safe="")]:
        assert secret not in body
        assert secret not in fleet.logs()


def test_waiting_jobs_hold_no_worker(start_fleet, sandbox, rt) -> None:
    # Processing outlasts creating all 200 (one worker, 2 processes), so they all wait at once.
    sandbox.faults(processing_seconds=12)
    # Budgets are not what this measures: the 400 creating calls must not outlast processing.
    start_fleet(workers=1, concurrency=2, env={"INGEST_POLL_INITIAL": "1", "INGEST_POLL_MAX": "3",
                                               "INGEST_GCORE_RATE": "500", "INGEST_GCORE_BURST": "50"})
    pulled = make_source("pull-wait.mp4", 256 * 1024, folder=MEDIA)
    ids = [submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": f"wait {i}"})
           for i in range(200)]
    max_unacked = max_scheduled = 0
    deadline = time.monotonic() + 240
    for tick in itertools.count():
        max_unacked = max(max_unacked, rt.redis.hlen("unacked"))
        max_scheduled = max(max_scheduled, rt.redis.zcard("if:schedule"))
        if tick % 5 == 0:  # reading 200 records is the costly part: once a second
            states = [status(i)["state"] for i in ids]
            if all(s in ("ready", "failed") for s in states):
                break
            assert time.monotonic() < deadline, {s: states.count(s) for s in set(states)}
        time.sleep(0.2)
    assert states.count("ready") == 200
    assert max_scheduled >= 100, "the waits should sit in the schedule, not in workers"
    assert max_unacked <= 4, f"{max_unacked} messages held by workers at once"


def test_a_provider_that_goes_silent_is_timed_out_and_retried(start_fleet, sandbox) -> None:
    # tuspy alone would wait forever on a silent server; every call here has a read timeout.
    sandbox.faults(rules=[{"endpoint": "gcore.tus_patch", "action": "hang", "seconds": 30, "times": 1},
                          {"endpoint": "gcore.get_video", "action": "hang", "seconds": 30, "times": 1}])
    start_fleet(workers=1, env={"INGEST_HTTP_READ_TIMEOUT": "1.5"})
    src = make_source("push-hang.mp4", 12 * MiB)
    job = wait(submit({"provider": "gcore", "source": str(src), "title": "silent provider"}), 60)
    assert job["state"] == "ready", job
    retries = {h["step"]: h for h in job["history"] if h["event"] == "retry"}
    assert set(retries) == {"upload", "await"}, job["history"]
    assert "timed out" in retries["await"]["error"]
    # A silent PATCH receiver stalls the body upload: the socket timeout cuts it too.
    assert retries["upload"]["at"] - job["created_at"] < 15, "the stalled PATCH was not cut short"
    assert _video(sandbox, job)["sha256"] == sha256_of(src)


def test_status_and_jobs_commands(start_fleet, sandbox) -> None:
    start_fleet(workers=1)
    pulled = make_source("pull-cli.mp4", 1 * MiB, folder=MEDIA)
    job_id = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": "cli"})
    assert wait(job_id, 60)["state"] == "ready"
    shown = cli("status", job_id, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["id"] == job_id
    human = cli("status", job_id)
    assert "ready" in human.stdout and "entity.created" in human.stdout
    listed = json.loads(cli("jobs", "--state", "ready", "--json").stdout)
    assert [j["id"] for j in listed] == [job_id]
    assert json.loads(cli("jobs", "--state", "failed", "--json").stdout) == []
    missing = cli("status", "0" * 32)
    assert missing.returncode == 2 and missing.stderr.startswith("error: job_id")


def test_flower_refuses_to_run_without_basic_auth() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    run = cli("flower", env=env)
    assert run.returncode == 2 and "FLOWER_BASIC_AUTH" in run.stderr


def test_a_video_created_before_a_crash_is_found_not_created_again(start_fleet, sandbox) -> None:
    """A worker that died after Gcore created the video but before the checkpoint: the
    step's next run finds the video by its marker (client_user_id) and its job tag."""
    from tasks.providers.gcore import job_tag, marker

    src = make_source("push-crash-create.mp4", 3 * MiB)
    job_id = submit({"provider": "gcore", "source": str(src), "title": "created once"})  # no worker yet
    orphan = requests.post(f"{SANDBOX_URL}/streaming/videos", headers={"Authorization": f"APIKey {GCORE_KEY}"},
                           json={"video": {"name": "created once", "client_user_id": marker(job_id),
                                           "description": job_tag(job_id)}},
                           timeout=5).json()
    start_fleet(workers=1)
    job = wait(job_id, 60)
    assert job["state"] == "ready", job
    assert job["provider_ids"]["video_id"] == orphan["id"]
    assert len(sandbox.state()["videos"]) == 1
    assert len(sandbox.log("gcore.create_video")) == 1  # the "crashed" worker's call only


# -- provider audit (issue 11): G1-G4 and priority ----------------------------------------


def test_a_colliding_marker_is_not_adopted_only_the_jobs_own_video(start_fleet, sandbox) -> None:
    """G1: the marker fits int32, so it may collide; the lookup adopts a video only if its
    description carries this job's tag."""
    from tasks.providers.gcore import job_tag, marker

    src = make_source("push-collide.mp4", 3 * MiB)
    job_id = submit({"provider": "gcore", "source": str(src), "title": "collide"})  # no worker yet
    assert 0 <= marker(job_id) < 2**31
    def post(body: dict) -> requests.Response:
        return requests.post(f"{SANDBOX_URL}/streaming/videos", headers={"Authorization": f"APIKey {GCORE_KEY}"},
                             json={"video": body}, timeout=5)

    stranger = post({"name": "collide", "client_user_id": marker(job_id), "description": "another job's video"})
    assert stranger.status_code == 201, stranger.text
    start_fleet(workers=1)
    job = wait(job_id, 60)
    assert job["state"] == "ready", job
    assert job["provider_ids"]["video_id"] != stranger.json()["id"]
    mine = _video(sandbox, job)
    assert mine["client_user_id"] == marker(job_id) and mine["description"].endswith(job_tag(job_id))
    assert "entity.marker_collision" in [h["event"] for h in job["history"]]


@pytest.mark.parametrize("client_id, outcome", [(None, "failed"), ("999", "failed"), ("4242", "ready")])
def test_the_tus_client_id_is_the_accounts_and_never_empty(start_fleet, sandbox, client_id, outcome) -> None:
    """G2: with video answers that leave ``client_id`` out, the TUS session takes it from
    INGEST_GCORE_CLIENT_ID; missing or wrong, the job fails at once naming the variable."""
    import os

    sandbox.faults(video_client_id=False)
    env = {k: v for k, v in os.environ.items() if k != "INGEST_GCORE_CLIENT_ID"}
    if client_id:
        env["INGEST_GCORE_CLIENT_ID"] = client_id
    start_fleet(workers=1, env=env)
    src = make_source("push-client-id.mp4", 3 * MiB)
    job = wait(submit({"provider": "gcore", "source": str(src), "title": "client id"}), 60)
    assert job["state"] == outcome, job
    sessions = sandbox.log("gcore.tus_create")
    if outcome == "failed":
        assert job["error"]["step"] == "target" and job["error"]["kind"] == "permanent", job["error"]
        assert "INGEST_GCORE_CLIENT_ID" in job["error"]["message"]
        assert len(sessions) == (1 if client_id else 0)  # no retry loop; none sent with an empty id
    else:
        assert _video(sandbox, job)["sha256"] == sha256_of(src)


def test_an_authenticated_pull_sends_origin_http_headers_and_keeps_them_secret(start_fleet, sandbox, rt) -> None:
    """G3: ``--opt origin_http_headers="Authorization: ..."`` reaches Gcore's pull; the value
    leaves the job record once the video exists and never reaches a log."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    secret = "Bearer origin-secret-Zq81xT"
    body = make_source("pull-auth.mp4", 1 * MiB, folder=MEDIA).read_bytes()

    class Origin(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.headers.get("Authorization") == secret
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    origin = ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{origin.server_port}/private/a.mp4"
    try:
        fleet = start_fleet(workers=1)
        plain = wait(submit({"provider": "gcore", "source": url, "title": "no auth"}), 60)
        assert plain["state"] == "failed" and "HTTP 401" in plain["error"]["message"], plain
        job_id = submit({"provider": "gcore", "source": url, "title": "auth",
                         "options": {"origin_http_headers": f"Authorization: {secret}"}})
        job = wait(job_id, 60)
    finally:
        origin.shutdown()
    assert job["state"] == "ready", job
    assert _video(sandbox, job)["origin_auth"] is True
    assert "origin_http_headers" not in job["options"]
    for key in rt.redis.scan_iter("if:*"):
        if rt.redis.type(key) == b"string":
            assert secret.encode() not in rt.redis.get(key), key
    assert secret not in fleet.logs()


def test_a_locked_upload_is_a_wait_not_a_failure(start_fleet, sandbox) -> None:
    """G4: 423 on a TUS PATCH/HEAD (another connection holds the upload) defers the step
    without spending attempts, and the upload completes once the lock is free."""
    sandbox.faults(tus_lock_hold_seconds=2)
    start_fleet(workers=1)
    src = make_source("push-locked.mp4", 24 * MiB)
    job = wait(submit({"provider": "gcore", "source": str(src), "title": "locked"}), 90)
    assert job["state"] == "ready", job
    locked = [e for e in sandbox.log() if e.get("endpoint") in ("gcore.tus_patch", "gcore.tus_head")
              and e.get("status") == 423]
    assert locked, "the sandbox never answered 423: the test proves nothing"
    events = [h for h in job["history"] if h.get("step") == "upload"]
    assert any(h["event"] == "throttled" for h in events), job["history"]
    assert not any(h["event"] == "retry" for h in events), job["history"]
    assert _video(sandbox, job)["sha256"] == sha256_of(src)


def test_intent_priority_maps_to_gcore_priority(start_fleet, sandbox) -> None:
    start_fleet(workers=1)
    pulled = make_source("pull-prio.mp4", 256 * 1024, folder=MEDIA)
    ids = {p: submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": p, "priority": p})
           for p in ("low", "normal", "high")}
    jobs = {p: wait(i, 60) for p, i in ids.items()}
    assert all(j["state"] == "ready" for j in jobs.values()), jobs
    assert {p: _video(sandbox, j)["priority"] for p, j in jobs.items()} == {"low": -5, "normal": 0, "high": 5}
