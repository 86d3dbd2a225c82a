"""Exactly once at the provider under races (issue 13): each test provokes one race through
real Redis and the sandbox over sockets, with the step runner's real code; where the race
needs an exact interleaving, the test holds one run at the point where it would stall."""

from __future__ import annotations

import threading

import pytest

from tasks import steps
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
    after = rt.store.get(job_id)
    assert after.dispatch["step"] == "await" and [e["event"] for e in after.history].count("task.created") == 1
