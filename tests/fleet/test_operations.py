"""Running it as a fleet: graceful SIGTERM mid-upload, a Redis crash and restart under a batch
of 100 jobs, `ingest-fleet reconcile`, the metrics exporter, and the Procfile run by honcho.
Real Redis, real workers, the sandbox over sockets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tasks.jobstore import SCHEDULE_CLAIMED_KEY, SCHEDULE_KEY
from tasks.producer import status, submit, wait
from tasks.queues import priority_lists
from tests.conftest import MEDIA, ROOT, SANDBOX_URL, WEBHOOK_PORT, _wipe_fleet_keys, cli, make_source
from workers.embedded_redis import free_port

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def _scrape(url: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value}."""
    out = {}
    for line in requests.get(url, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_sigterm_mid_upload_hands_the_slice_on_within_a_chunk(start_fleet, sandbox) -> None:
    """A worker told to stop (SIGTERM to its main process, as Kubernetes and tini do) ends
    the running slice at its next chunk: another worker finishes the job, nothing is lost and
    at most the chunk in flight is sent twice."""
    size, chunk = 60 * MiB, 5 * MiB
    src = make_source("op-sigterm.mp4", size)
    sandbox.faults("gcore", latency_ms=400, latency_endpoints=["gcore.tus_patch"])
    env = {"INGEST_SLICE_SECONDS": "120", "INGEST_VISIBILITY_TIMEOUT": "300", "INGEST_TUS_CHUNK_SIZE": str(chunk)}
    fleet = start_fleet(workers=1, concurrency=1, env=env)
    job_id = submit({"provider": "gcore", "source": str(src), "title": "sigterm"})
    deadline = time.monotonic() + 60
    while status(job_id)["bytes_done"] < 2 * chunk:
        assert time.monotonic() < deadline, status(job_id)
        time.sleep(0.05)
    first = fleet.workers[0]
    stopped_at = time.monotonic()
    os.kill(first.pid, signal.SIGTERM)
    first.popen.wait(30)
    took = time.monotonic() - stopped_at
    assert took < 10, f"the worker took {took:.1f} s to stop; its slice (120 s) did not end early"
    handed_on = status(job_id)
    assert handed_on["state"] == "uploading" and 0 < handed_on["bytes_done"] < size
    assert "warm shutdown" in first.tail().lower() or first.popen.returncode == 0

    fleet.start_worker(concurrency=1)
    job = wait(job_id, 120)
    assert job["state"] == "ready", job["error"]
    [upload] = sandbox.state("gcore")["uploads"]
    assert size <= upload["bytes_received_total"] <= size + chunk  # at most one chunk twice


def test_a_redis_crash_mid_batch_loses_and_duplicates_nothing(start_fleet, sandbox, redis_server, rt) -> None:
    """kill -9 of Redis (AOF, appendfsync everysec) while 100 jobs run: the workers and the
    scheduler reconnect, `reconcile` re-enqueues whatever the last second of writes lost,
    every job ends ready, and the provider saw each video created once."""
    sandbox.processing(0.3)
    start_fleet(workers=2, concurrency=2)
    media = make_source("op-redis.mp4", 256 * 1024, folder=MEDIA)
    ids = [submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{media.name}", "title": f"r{i}",
                   "idempotency_key": f"redis-restart-{i}"}) for i in range(100)]
    deadline = time.monotonic() + 120
    while sum(status(i)["state"] == "ready" for i in ids[:50]) < 20:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    redis_server.proc.kill()  # no shutdown: up to a second of AOF writes may be lost
    redis_server.proc.wait()
    time.sleep(3)
    redis_server.start()
    time.sleep(5)  # the workers and the scheduler find Redis again by themselves
    result = cli("reconcile", "--json")
    assert result.returncode == 0, result.stderr

    jobs = [wait(i, 300) for i in ids]
    assert [j["state"] for j in jobs].count("ready") == 100, [(j["id"], j["state"], j["error"]) for j in jobs
                                                              if j["state"] != "ready"]
    videos = sandbox.state("gcore")["videos"]
    assert len(videos) == 100, f"{len(videos)} videos at the provider for 100 jobs"
    assert len({v["name"] for v in videos}) == 100
    assert cli("reconcile", "--json").stdout.strip() == "[]"


def test_reconcile_re_enqueues_jobs_whose_dispatch_was_lost(start_fleet, sandbox, rt) -> None:
    media = make_source("op-orphan.mp4", 256 * 1024, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{media.name}"
    ids = [submit({"provider": "gcore", "source": url, "title": f"o{i}"}) for i in range(4)]
    # What a Redis that lost writes can leave: records in progress, their messages and
    # schedule entries gone (no worker runs yet, so nothing else holds them).
    for i in ids[:3]:
        dispatch = rt.store.get(i).dispatch
        rt.redis.delete(*priority_lists(dispatch["queue"]))
        rt.redis.zrem(SCHEDULE_KEY, dispatch["member"])
    # ids[3]'s message was in the same queue, so it is lost too; re-schedule it to keep one live.
    rt.store.schedule(rt.store.get(ids[3]).dispatch["member"], 3600)

    dry = cli("reconcile", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    listed = {e["job_id"] for e in json.loads(dry.stdout)}
    assert listed == set(ids[:3])  # the live one (scheduled) is left alone
    assert "would re-enqueue" in cli("reconcile", "--dry-run").stdout
    done = cli("reconcile")
    assert done.returncode == 0 and "3 job(s) re-enqueued" in done.stdout, done.stdout + done.stderr

    start_fleet(workers=1)
    for i in ids[:3]:
        assert wait(i, 60)["state"] == "ready"
    assert status(ids[3])["state"] == "queued"  # still waiting for its (far) schedule entry
    assert len(sandbox.state("gcore")["videos"]) == 3


def test_the_scheduler_re_enqueues_a_job_whose_message_a_killed_worker_took(start_fleet, sandbox, rt) -> None:
    """kombu moves a message from its queue (BRPOP) to ``unacked`` in two steps; a worker
    killed between them takes the message with it. Here a client BRPOPs one job's message and
    drops it, as such a worker does: the scheduler's reconciler finds the job with no live
    dispatch on two sweeps and re-enqueues it, with no operator. A job whose dispatch is
    claimed by a scheduler (about to be published) is left alone."""
    media = make_source("op-lost.mp4", 256 * 1024, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{media.name}"
    lost, claimed = (submit({"provider": "gcore", "source": url, "title": t}) for t in ("lost", "claimed"))
    queue = rt.store.get(lost).dispatch["queue"]
    for _ in range(2):  # both messages leave the queue; neither reaches unacked
        assert rt.redis.brpop(priority_lists(queue), timeout=5) is not None
    for job_id in (lost, claimed):
        rt.store.unschedule(rt.store.get(job_id).dispatch["member"])  # the outbox entries, too
    rt.redis.zadd(SCHEDULE_CLAIMED_KEY, {rt.store.get(claimed).dispatch["member"]: time.time() + 3600})

    fleet = start_fleet(workers=1, env={"INGEST_RECONCILE_SECONDS": "1"})
    assert wait(lost, 60)["state"] == "ready"
    assert status(claimed)["state"] == "queued"
    assert "scheduler.reconciled" in fleet.scheduler.tail(1_000_000)
    assert len(sandbox.state("gcore")["videos"]) == 1


def test_the_reconciler_acts_only_on_a_job_orphaned_twice_and_unchanged(rt) -> None:
    from tasks.reconcile import Reconciler

    _wipe_fleet_keys(rt.redis)
    media = make_source("op-suspect.mp4", 256 * 1024, folder=MEDIA)
    ids = [submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{media.name}", "title": f"s{i}"})
           for i in range(2)]
    for job_id in ids:
        member = rt.store.get(job_id).dispatch["member"]
        rt.store.unschedule(member)
    rt.redis.delete(*priority_lists(rt.store.get(ids[0]).dispatch["queue"]))
    sweep = Reconciler(rt, quiet=0)
    assert sweep() == 0  # seen once: only suspected
    # ids[1] moves on meanwhile (a worker wrote its record): no longer the same suspect.
    job = rt.store.get(ids[1])
    lease = rt.store.acquire(ids[1], ttl=5)
    rt.store.save(job, lease, release=True)
    assert sweep() == 1
    assert rt.redis.zscore(SCHEDULE_KEY, rt.store.get(ids[0]).dispatch["member"]) is not None
    assert rt.redis.zscore(SCHEDULE_KEY, rt.store.get(ids[1]).dispatch["member"]) is None
    assert sweep() == 1  # ids[1], orphaned twice now; ids[0] is scheduled, so alive
    assert sweep() == 0
    # Orphaned again: a reconciler waiting for an hour of quiet leaves them be; one without does not.
    for job_id in ids:
        rt.store.unschedule(rt.store.get(job_id).dispatch["member"])
    patient = Reconciler(rt, quiet=3600)
    assert patient() == 0 and patient() == 0
    assert sweep() == 0 and sweep() == 2
    _wipe_fleet_keys(rt.redis)


def test_the_automatic_sweep_leaves_a_long_queue_unread(rt, monkeypatch) -> None:
    from tasks import reconcile
    from tasks.reconcile import orphans

    monkeypatch.setattr(reconcile, "PAGE", 2)  # the backlog is read in several pages
    _wipe_fleet_keys(rt.redis)
    media = make_source("op-long.mp4", 256 * 1024, folder=MEDIA)
    ids = [submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{media.name}", "title": f"l{i}"})
           for i in range(3)]
    lost = rt.store.get(ids[0]).dispatch
    rt.store.unschedule(lost["member"])
    rt.redis.lrem(priority_lists(lost["queue"])[1], 0, rt.redis.lindex(priority_lists(lost["queue"])[1], -1))
    for i in ids[1:]:
        rt.store.unschedule(rt.store.get(i).dispatch["member"])
    assert [j.id for j in orphans(rt)] == [ids[0]]  # the others' messages are in the queue
    assert [j.id for j in orphans(rt, scan_limit=2)] == [ids[0]]
    assert orphans(rt, scan_limit=1) == []  # 2 messages: too long to read at this limit
    _wipe_fleet_keys(rt.redis)


def test_the_metrics_endpoint_shows_queues_backlog_jobs_bytes_and_throttles(start_fleet, sandbox, rt) -> None:
    from workers.metrics import MetricsServer

    server = MetricsServer(rt).serve()
    try:
        base = f"http://127.0.0.1:{server.port}"
        media = make_source("op-metrics.mp4", 256 * 1024, folder=MEDIA)
        queued = [submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{media.name}", "title": f"m{i}"})
                  for i in range(3)]
        before = _scrape(f"{base}/metrics")
        assert before["ingest_redis_up"] == 1
        assert before['ingest_queue_length{account="default",kind="api",provider="gcore",queue="gcore.api"}'] == 3
        assert before['ingest_backlog_jobs{account="default",provider="gcore"}'] == 3
        assert before['ingest_jobs{provider="gcore",state="queued"}'] == 3
        assert before['ingest_oldest_job_age_seconds{account="default",provider="gcore"}'] >= 0
        assert requests.get(f"{base}/scaling", timeout=5).json()["api"]["queued"] == 3

        sandbox.faults("gcore", rules=[{"endpoint": "gcore.create_video", "status": 429, "retry_after": 1,
                                        "times": 1}])
        start_fleet(workers=1)
        pushed = make_source("op-metrics-push.mp4", 3 * MiB)
        jobs = [wait(i, 60) for i in [*queued, submit({"provider": "gcore", "source": str(pushed)})]]
        assert all(j["state"] == "ready" for j in jobs)
        after = _scrape(f"{base}/metrics")
        assert after['ingest_jobs_finished_total{provider="gcore",state="ready"}'] == 4
        assert after['ingest_bytes_uploaded_total{account="default",provider="gcore"}'] == 3 * MiB
        assert after['ingest_cooldowns_total{account="default",provider="gcore"}'] >= 1
        assert after['ingest_backlog_jobs{account="default",provider="gcore"}'] == 0
        assert after.get('ingest_jobs{provider="gcore",state="queued"}', 0) == 0
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        server.stop()


def test_metrics_report_redis_down_instead_of_failing() -> None:
    from tasks.config import Settings
    from tasks.runtime import Runtime
    from workers.metrics import MetricsServer

    dead = Runtime(Settings.from_env({**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    server = MetricsServer(dead).serve()  # what the exporter sees while Redis is down
    try:
        metrics = _scrape(f"http://127.0.0.1:{server.port}/metrics")
        assert metrics["ingest_redis_up"] == 0
        assert requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).status_code == 200
    finally:
        server.stop()


def test_the_procfile_runs_the_fleet_for_every_provider(tmp_path: Path, sandbox, rt) -> None:
    """honcho starts the Procfile's processes as written (one of each), against the test
    Redis and the sandbox; a job to every provider reaches ready; SIGTERM stops them all."""
    _wipe_fleet_keys(rt.redis)
    requests.post(f"{SANDBOX_URL}/_sandbox/reset", timeout=30).raise_for_status()
    honcho = shutil.which("honcho", path=str(Path(sys.executable).parent))
    assert honcho, "honcho is a test dependency"
    # honcho gives each process type PORT = base + 100 x its place in the Procfile (Flower: 5th).
    flower_port = free_port()
    base_port = flower_port - 400
    metrics_port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "WEBHOOK_PORT": str(WEBHOOK_PORT), "FLOWER_BASIC_AUTH": "ops:procfile-test",
           "METRICS_PORT": str(metrics_port),
           "INGEST_HEARTBEAT_FILE": str(tmp_path / "heartbeat")}
    log = open(tmp_path / "honcho.log", "wb")
    proc = subprocess.Popen([honcho, "-f", str(ROOT / "Procfile"), "start", "-p", str(base_port)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            text = (tmp_path / "honcho.log").read_text(errors="replace")
            if text.count("ready.") >= 3 and "webhook receiver listening" in text:
                break
            assert proc.poll() is None and time.monotonic() < deadline, text[-3000:]
            time.sleep(0.3)
        push = make_source("op-procfile.mp4", 2 * MiB)
        pulled = make_source("op-procfile-pull.mp4", 1 * MiB, folder=MEDIA)
        pull_url = f"{SANDBOX_URL}/media/{pulled.name}"
        ids = {p: submit({"provider": p, "source": str(push) if p == "ingestio" else pull_url, "title": f"procfile {p}"})
               for p in ("gcore", "brightcove", "ittybit", "once", "ingestio")}
        for provider, job_id in ids.items():
            job = wait(job_id, 120)
            assert job["state"] == "ready", (provider, job["error"])
        flower = f"http://127.0.0.1:{flower_port}"
        workers = requests.get(f"{flower}/api/workers?refresh=1", auth=("ops", "procfile-test"), timeout=30)
        assert workers.status_code == 200 and len(workers.json()) == 3, workers.text[:500]
        # Flower names each task by its job, provider, account and step (never a secret).
        tasks = requests.get(f"{flower}/api/tasks", auth=("ops", "procfile-test"), timeout=10).json()
        shown = {t["args"] for t in tasks.values()}
        gcore_job = ids["gcore"]
        assert f"(provider=gcore, account=default, step=create, job={gcore_job})" in shown, sorted(shown)[:5]
        finished = _scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        for provider in ids:
            assert finished[f'ingest_jobs_finished_total{{provider="{provider}",state="ready"}}'] == 1
        assert requests.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=10).status_code == 401
    finally:
        os.killpg(proc.pid, signal.SIGTERM) if proc.poll() is None else None
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        log.close()
    text = (tmp_path / "honcho.log").read_text(errors="replace")
    assert code == 0 or "stopped (rc=-15)" in text, text[-3000:]
    leftovers = subprocess.run(["pgrep", "-f", f"--port={flower_port}"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "a Procfile process outlived honcho"


def test_the_health_probe_reads_only_the_heartbeat_file(tmp_path: Path) -> None:
    """`ingest-fleet health` (the liveness probe) passes on a fresh heartbeat and fails on a
    stale or missing one; it needs no Redis (REDIS_URL points nowhere here)."""
    beat = tmp_path / "heartbeat"
    env = {**os.environ, "INGEST_HEARTBEAT_FILE": str(beat), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    probe = [sys.executable, "-m", "workers.cli", "health"]
    assert subprocess.run(probe, env=env, timeout=30).returncode == 1  # no heartbeat yet
    code = ("import time, workers.health as h; h.start_heartbeat(); time.sleep(0.3)")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)
    assert subprocess.run(probe, env=env, timeout=30).returncode == 0
    os.utime(beat, (time.time() - 120, time.time() - 120))  # a hung process stops beating
    assert subprocess.run(probe, env=env, timeout=30).returncode == 1


def test_the_scheduler_and_exporter_serve_every_account_without_its_credential(clean, sandbox, rt, tmp_path) -> None:
    """Only workers hold provider credentials (issue 13, item 13): each publishes the accounts
    it serves, without their secrets (tasks.served). A scheduler and an exporter started with
    no provider setting and no seal key still reconcile and report a named account's jobs."""
    import re

    from tasks.config import Settings
    from tasks.runtime import Runtime
    from tests.conftest import Fleet
    from workers.metrics import MetricsServer

    bare = {k: v for k, v in os.environ.items()
            if not re.match(r"INGEST_(GCORE|BRIGHTCOVE|ITTYBIT|ONCE|INGESTIO)_|INGEST_SECRET_KEY$", k)}
    media = make_source("op-served.mp4", 256 * 1024, folder=MEDIA)
    lost = submit({"provider": "gcore", "account": "teamb", "source": f"{SANDBOX_URL}/media/{media.name}"})
    queue = rt.store.get(lost).dispatch["queue"]
    assert queue == "gcore.api.teamb" and rt.redis.brpop(priority_lists(queue), timeout=5) is not None
    rt.store.unschedule(rt.store.get(lost).dispatch["member"])  # its message is gone: only reconcile helps

    fleets = [Fleet(tmp_path / "workers", {**os.environ, "INGEST_RECONCILE_SECONDS": "0"}),
              Fleet(tmp_path / "bare", {**bare, "INGEST_RECONCILE_SECONDS": "1"})]
    server = None
    try:
        fleets[0].start_worker()
        fleets[1].start_scheduler()
        assert wait(lost, 60)["state"] == "ready"
        assert "scheduler.reconciled" in fleets[1].scheduler.tail(1_000_000)

        exporter_rt = Runtime(Settings.from_env(bare))
        assert exporter_rt.settings.accounts == {}
        server = MetricsServer(exporter_rt).serve()
        waiting = submit({"provider": "gcore", "account": "teamb", "source": f"{SANDBOX_URL}/media/{media.name}"})
        fleets[0].stop()  # nothing runs it: it stays in the backlog
        metrics = _scrape(f"http://127.0.0.1:{server.port}/metrics")
        assert metrics['ingest_backlog_jobs{account="teamb",provider="gcore"}'] >= 1, waiting
        assert 'ingest_queue_length{account="teamb",kind="api",provider="gcore",queue="gcore.api.teamb"}' in metrics
        served = rt.redis.hget("if:served", "gcore/teamb").decode()
        assert "api_key" not in served.lower() and os.environ["INGEST_GCORE_API_KEY"] not in served
    finally:
        if server is not None:
            server.stop()
        for fleet in fleets:
            fleet.stop()
