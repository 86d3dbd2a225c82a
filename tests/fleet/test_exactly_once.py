"""Exactly once at the provider under races (issue 13): each test provokes one race through
real Redis and the sandbox over sockets, with the step runner's real code; where the race
needs an exact interleaving, the test holds one run at the point where it would stall."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from tasks import keys, steps
from tasks.jobstore import Job
from tasks.producer import submit
from tests.conftest import MEDIA, SANDBOX_URL, make_source

pytestmark = pytest.mark.integration


def _drive_to(rt, job_id: str, step: str) -> Job:
    """Run the job's dispatches in this process until the next one is ``step``."""
    for _ in range(10):
        job = rt.store.get(job_id)
        if job.dispatch["step"] == step:
            return job
        steps.run(job.dispatch["task_id"], job_id, job.dispatch["step"])
    raise AssertionError(f"never reached {step}: {rt.store.get(job_id).history}")


def test_a_duplicate_that_stalls_before_the_lease_never_runs_the_step_again(rt, sandbox, clean, monkeypatch):
    """Two deliveries of one submit dispatch: the duplicate reads the record and checks its task
    id, then stalls; the first runs the step (POST /tasks), writes the next dispatch and lets
    the lease go; the duplicate wakes and takes the free lease. It must not POST again."""
    source = make_source("race.mp4", 300_000, folder=MEDIA)
    job_id = submit({"provider": "ittybit", "source": f"{SANDBOX_URL}/media/{source.name}", "title": "race"})
    job = _drive_to(rt, job_id, "submit")
    tid = job.dispatch["task_id"]

    reached, go = threading.Event(), threading.Event()
    acquire = rt.store.acquire

    def stalling_acquire(*args, **kwargs):
        if threading.current_thread().name == "duplicate":
            reached.set()
            assert go.wait(30)
        return acquire(*args, **kwargs)

    monkeypatch.setattr(rt.store, "acquire", stalling_acquire)
    duplicate = threading.Thread(target=steps.run, args=(tid, job_id, "submit"), name="duplicate")
    duplicate.start()
    assert reached.wait(10), "the duplicate never got to the lease"
    steps.run(tid, job_id, "submit")  # the first delivery runs the step to its end
    assert rt.store.get(job_id).dispatch["step"] == "await"
    go.set()
    duplicate.join(30)

    assert len(sandbox.log(endpoint="ittybit.create_task")) == 1
    assert rt.redis.keys("if:starts:*") == []  # runs that ended are not counted as killed ones
    after = rt.store.get(job_id)
    assert after.dispatch["step"] == "await" and [e["event"] for e in after.history].count("task.created") == 1


def test_a_worker_paused_before_its_post_sends_nothing_once_taken_over(rt, sandbox, clean, monkeypatch):
    """A worker stalls after its step began (here: in the budget wait before Once's ingest POST,
    as a GC pause or a frozen VM would); meanwhile the job is taken over (its lease expired and
    another run, or an operator's retry, took it). When the paused worker wakes, its POST must
    not leave: the lease is checked right before every POST a step sends."""
    from tasks.budget import ProviderBudget

    source = make_source("paused.mp4", 300_000, folder=MEDIA)
    job_id = submit({"provider": "once", "source": f"{SANDBOX_URL}/media/{source.name}", "title": "paused"})
    job = _drive_to(rt, job_id, "submit")

    reached, go = threading.Event(), threading.Event()
    acquire = ProviderBudget.acquire

    def pausing_acquire(self, *args, **kwargs):
        if threading.current_thread().name == "paused":
            reached.set()
            assert go.wait(30)
        return acquire(self, *args, **kwargs)

    monkeypatch.setattr(ProviderBudget, "acquire", pausing_acquire)
    paused = threading.Thread(target=steps.run, args=(job.dispatch["task_id"], job_id, "submit"), name="paused")
    paused.start()
    assert reached.wait(10), "the step never got to its POST"
    rt.store.acquire(job_id, ttl=30, force=True)  # taken over: a newer lease and fencing token
    go.set()
    paused.join(30)

    assert sandbox.log(endpoint="once.ingest") == []


def test_a_worker_whose_clock_runs_hours_ahead_does_not_end_a_wait_early(rt, sandbox, clean, monkeypatch):
    """Times one host writes and another compares come from Redis's clock: a worker whose clock
    is 7 hours ahead (past INGEST_AWAIT_DEADLINE, 6 h) polls a job another began waiting for a
    moment ago, and the job goes on waiting instead of failing for a deadline it never reached."""
    import os
    import time

    from tasks import runtime as runtime_module
    from tasks.runtime import Runtime

    sandbox.processing(120)  # the provider stays busy: the job waits
    source = make_source("skew.mp4", 300_000, folder=MEDIA)
    job_id = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{source.name}", "title": "skew"})
    job = _drive_to(rt, job_id, "await")
    steps.run(job.dispatch["task_id"], job_id, "await")  # the first poll, on a host with a true clock
    assert rt.store.get(job_id).provider_ids.get("awaiting_since")

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 7 * 3600)
    monkeypatch.setattr(runtime_module, "_runtime", (os.getpid(), Runtime(rt.settings)))  # that host's process
    job = rt.store.get(job_id)
    steps.run(job.dispatch["task_id"], job_id, "await")

    after = rt.store.get(job_id)
    assert after.state != "failed", after.error
    assert after.polls == 2 and after.dispatch["step"] == "await"


def test_a_dispatch_whose_runs_are_all_killed_fails_instead_of_looping(rt, sandbox, clean):
    """A task killed by the hard time limit goes back to its queue (task_acks_on_timeout off),
    so a step that is killed every time would run for ever: after MAX_STARTS runs of one
    dispatch, each of which took the lease and died without a word, the job fails, saying so."""
    source = make_source("doomed.mp4", 300_000, folder=MEDIA)
    job_id = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{source.name}", "title": "doomed"})
    tid = rt.store.get(job_id).dispatch["task_id"]
    for _ in range(steps.MAX_STARTS):  # each run takes the lease, then its process is killed
        lease = rt.store.acquire(job_id, ttl=0.05, dispatch=tid)
        assert lease.starts >= 1
        time.sleep(0.06)  # the dead run's lease expires
    steps.run(tid, job_id, "create")
    job = rt.store.get(job_id)
    assert job.state == "failed" and "started 5 times and never finished" in job.error["message"]
    assert sandbox.log(endpoint="gcore.create_video") == []


def _pool_children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_a_step_killed_by_the_hard_time_limit_goes_on_without_reconcile(rt, sandbox, start_fleet):
    """A pool process stuck where no signal reaches it (stopped here with SIGSTOP, as a read
    from a hung mount would be) ignores the soft time limit; the hard one kills it. The job must
    go on through its queue and the schedule, with reconcile off, and make one video."""
    sandbox.faults("gcore", latency_ms=3000, latency_endpoints=["gcore.create_video"])
    env = {"INGEST_STEP_GRACE": "2", "INGEST_RECONCILE_SECONDS": "0"}  # soft limit 7 s, hard 9 s
    fleet = start_fleet(workers=1, concurrency=1, env=env)
    source = make_source("hard-limit.mp4", 300_000, folder=MEDIA)
    job_id = submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{source.name}", "title": "hard limit"})

    deadline = time.monotonic() + 20
    while not rt.redis.exists(keys.lease(job_id)):  # the create step runs: its POST is on its way
        assert time.monotonic() < deadline, "the create step never started"
        time.sleep(0.01)
    [child] = _pool_children(fleet.workers[0].pid)
    os.kill(child, signal.SIGSTOP)

    deadline = time.monotonic() + 60
    while (job := rt.store.get(job_id)).state != "ready":
        assert time.monotonic() < deadline, f"the job never went on: {job.state} {job.history[-3:]}"
        time.sleep(0.2)
    logs = fleet.logs()
    assert "Hard time limit (9.0s) exceeded" in logs and "job.reconciled" not in logs
    assert child not in _pool_children(fleet.workers[0].pid)  # the stuck process was replaced
    assert len(sandbox.state("gcore")["videos"]) == 1  # the killed run's POST made the only one
