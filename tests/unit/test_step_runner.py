"""The step runner in-process (issue 12, the base of the test pyramid): fakeredis for the job
store, a fake adapter for the provider, and a recorder instead of the broker. Every branch of
one run of a step: stale dispatch, lease busy, slot wait, throttled, transient, permanent,
configuration error, fenced out, next slice, next step and terminal. The same paths run through
real Redis, workers and the sandbox in the fleet tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from tasks import runtime as runtime_module
from tasks import steps
from tasks.config import ConfigError, Settings
from tasks.dispatch import next_dispatch
from tasks.errors import PermanentError, Throttled, TransientError
from tasks.jobstore import SCHEDULE_KEY, Job
from tasks.providers.base import Adapter, Status, StepContext
from tasks.runtime import Runtime

SETTINGS = Settings.from_env({"INGEST_GCORE_API_KEY": "k", "INGEST_GCORE_SLOTS": "1", "INGEST_MAX_ATTEMPTS": "2",
                              "INGEST_SLICE_SECONDS": "5", "INGEST_VISIBILITY_TIMEOUT": "60", "INGEST_STEP_GRACE": "10"})


class FakeAdapter(Adapter):
    """Gcore's name, scripted steps: each step runs the callable given for it."""

    name = "gcore"

    def __init__(self) -> None:
        self.script: dict[str, Callable[[StepContext], Any]] = {}
        self.calls: list[str] = []

    def _run(self, step: str, ctx: StepContext) -> Any:
        self.calls.append(step)
        action = self.script.get(step)
        return action(ctx) if action else None

    def slot_step(self, job: Job) -> str:
        return "submit"

    def create_entity(self, ctx: StepContext) -> None:
        self._run("create", ctx)

    def obtain_upload_target(self, ctx: StepContext) -> None:
        self._run("target", ctx)

    def upload_slice(self, ctx: StepContext) -> bool:
        done = self._run("upload", ctx)
        return True if done is None else bool(done)

    def submit_ingest(self, ctx: StepContext) -> None:
        self._run("submit", ctx)

    def poll_status(self, ctx: StepContext) -> Status:
        return self._run("await", ctx) or Status("processing")


@pytest.fixture
def fleet(monkeypatch) -> Iterator[tuple[Runtime, FakeAdapter, list[str]]]:
    rt = Runtime(SETTINGS)
    rt.__dict__["redis"] = fakeredis.FakeRedis()  # cached_property: the store and budgets use it
    adapter = FakeAdapter()
    published: list[str] = []
    monkeypatch.setattr(runtime_module, "_runtime", (os.getpid(), rt))
    monkeypatch.setattr(steps, "ADAPTERS", {"gcore": adapter})
    monkeypatch.setattr(steps, "publish", published.append)
    monkeypatch.setattr("tasks.lifecycle.forget_credentials", lambda *_: None)
    yield rt, adapter, published


def _job(rt: Runtime, step: str = "create", **fields: Any) -> Job:
    job = Job(id="f" * 32, provider="gcore", account="default", source="/v/a.mp4", mode="push", title="t",
              idempotency_key="k", bytes_total=10, **fields)
    member = next_dispatch(job, step)
    rt.store.create(job, dispatch_member=member, grace=30)
    return job


def _run(rt: Runtime, job: Job, step: str | None = None) -> Job:
    current = rt.store.get(job.id)
    assert current is not None
    steps.run(current.dispatch["task_id"], job.id, step or current.dispatch["step"])
    after = rt.store.get(job.id)
    assert after is not None
    return after


def _scheduled(rt: Runtime) -> dict[str, float]:
    return {m.decode(): s for m, s in rt.redis.zrange(SCHEDULE_KEY, 0, -1, withscores=True)}


def test_a_step_that_succeeds_dispatches_the_next_one_now(fleet) -> None:
    rt, adapter, published = fleet
    job = _run(rt, _job(rt))
    assert adapter.calls == ["create"] and job.step == "target" and job.dispatch["step"] == "target"
    assert published == [job.dispatch["member"]] and job.dispatch["member"] not in _scheduled(rt)


def test_a_stale_or_duplicate_message_is_dropped(fleet) -> None:
    rt, adapter, published = fleet
    job = _job(rt)
    steps.run(f"{job.id}.0.create", job.id, "create")  # not the dispatch the record names
    assert adapter.calls == [] and published == []


def test_a_busy_lease_sends_the_dispatch_back_to_the_schedule(fleet) -> None:
    rt, adapter, _ = fleet
    job = _job(rt)
    held = rt.store.acquire(job.id, ttl=20)  # another worker drives the job
    assert not isinstance(held, tuple)
    _run(rt, job)
    assert adapter.calls == [] and 15 < _scheduled(rt)[job.dispatch["member"]] - rt.redis.time()[0] <= 22


def test_without_a_provider_slot_the_job_waits_in_line_holding_no_worker(fleet) -> None:
    rt, adapter, _ = fleet
    other = rt.slots("gcore", "default")
    assert other.acquire("someone-else", score=0, wake_with="x") is True  # the only slot (SLOTS=1)
    job = _run(rt, _job(rt, "submit"))
    assert adapter.calls == [] and job.waiting == "slot" and job.state != "failed"
    assert job.dispatch["member"] in _scheduled(rt)


def test_throttling_defers_the_step_without_an_attempt(fleet) -> None:
    rt, adapter, published = fleet

    def throttled(ctx: StepContext) -> None:
        raise Throttled("budget", retry_after=30, reserved=True)

    adapter.script["create"] = throttled
    job = _run(rt, _job(rt))
    assert job.waiting == "throttled" and job.attempts == {} and published == []
    assert job.history[-1]["event"] == "throttled" and job.history[-1]["reserved"] is True


def test_transient_errors_retry_with_backoff_then_fail(fleet) -> None:
    rt, adapter, _ = fleet

    def flaky(ctx: StepContext) -> None:
        raise TransientError("timed out", provider="gcore")

    adapter.script["create"] = flaky
    job = _run(rt, _job(rt))
    assert (job.state, job.waiting, job.attempts) == ("creating", "retry", {"create": 1})
    job = _run(rt, job)  # INGEST_MAX_ATTEMPTS=2: the second failure is the last
    assert job.state == "failed" and job.error["kind"] == "transient" and job.failed_step == "create"


@pytest.mark.parametrize("error", [PermanentError("no such video", status=404, provider="gcore"),
                                   ConfigError("INGEST_GCORE_CLIENT_ID is not set")])
def test_permanent_and_configuration_errors_fail_at_once(fleet, error) -> None:
    rt, adapter, _ = fleet

    def refuse(ctx: StepContext) -> None:
        raise error

    adapter.script["create"] = refuse
    job = _run(rt, _job(rt))
    assert job.state == "failed" and job.error["kind"] == "permanent" and job.attempts == {}
    assert str(error).split(":")[0] in job.error["message"]


def test_a_job_taken_over_mid_step_writes_nothing_more(fleet) -> None:
    rt, adapter, published = fleet

    def taken_over(ctx: StepContext) -> None:
        rt.store.acquire(ctx.job.id, ttl=20, force=True)  # e.g. an operator's cancel or retry
        ctx.job.provider_ids["video_id"] = 1
        ctx.checkpoint()

    adapter.script["create"] = taken_over
    job = _run(rt, _job(rt))
    assert "video_id" not in job.provider_ids and job.step == "create" and published == []


def test_an_unfinished_upload_hands_the_job_to_its_next_slice(fleet) -> None:
    rt, adapter, published = fleet
    adapter.script["upload"] = lambda ctx: False  # a slice's time ran out before the end
    job = _run(rt, _job(rt, "upload"))
    assert job.step == "upload" and job.dispatch["seq"] == 2 and published == [job.dispatch["member"]]


def test_a_ready_status_ends_the_job(fleet) -> None:
    rt, adapter, _ = fleet
    adapter.script["await"] = lambda ctx: Status("ready", 100)
    job = _run(rt, _job(rt, "await"))
    assert job.state == "ready" and job.dispatch == {} and job.progress == 100
    assert rt.redis.zcard(rt.store.active_key("gcore", "default")) == 0
