"""The Redis-side pieces against a real redis-server: GCRA budget, cooldown, lease + fencing,
the outbox of dispatches and the scheduler's claim."""

from __future__ import annotations

import time

import pytest

from tasks.errors import Throttled
from tasks.jobstore import SCHEDULE_CLAIMED_KEY, SCHEDULE_KEY, Job, JobStore, Lease, StaleLease
from workers.budget import ProviderBudget


@pytest.fixture
def r(rt):
    from tests.conftest import _wipe_fleet_keys

    _wipe_fleet_keys(rt.redis)
    return rt.redis


def test_gcra_spaces_grants_at_the_rate(r) -> None:
    budget = ProviderBudget(r, "t:spacing", rate=20, burst=1)
    grants = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if budget.try_acquire() == 0.0:
            grants.append(time.monotonic())
    assert 19 <= len(grants) <= 21
    gaps = [b - a for a, b in zip(grants, grants[1:], strict=False)]
    assert min(gaps) > 0.045  # 50 ms apart, give or take the loop


def test_two_budgets_share_one_limit(r) -> None:
    a = ProviderBudget(r, "t:shared", rate=10, burst=1)
    b = ProviderBudget(r, "t:shared", rate=10, burst=1)
    granted = sum(1 for i in range(200) if (a if i % 2 else b).try_acquire() == 0.0)
    assert granted == 1  # back to back: the second must wait for the first's interval


def test_long_wait_raises_throttled(r) -> None:
    budget = ProviderBudget(r, "t:long", rate=0.5, burst=1)
    budget.acquire(max_wait=0.1)
    with pytest.raises(Throttled) as info:
        budget.acquire(max_wait=0.1)
    assert 1.5 < info.value.retry_after <= 2.0


def test_cooldown_is_fleet_wide_and_never_shortened(r) -> None:
    one = ProviderBudget(r, "t:cool", rate=0)
    other = ProviderBudget(r, "t:cool", rate=0)
    assert one.cool_down(3) == 3
    one.cool_down(1)  # a shorter Retry-After from another worker does not shorten it
    wait = other.try_acquire()
    assert 2.5 < wait <= 3.0
    assert 2.5 < other.cooldown_remaining() <= 3.0


def test_cooldown_without_retry_after_grows_exponentially(r) -> None:
    budget = ProviderBudget(r, "t:exp", rate=0, cooldown_base=1, cooldown_cap=5)
    assert [budget.cool_down(None) for _ in range(5)] == [1, 2, 4, 5, 5]


def _job(**kw) -> Job:
    return Job(id=kw.pop("id", "j1"), provider="gcore", account="default", source="https://h/a.mp4",
               mode="pull", title="t", idempotency_key=kw.pop("key", "k1"), **kw)


def test_create_is_idempotent_per_key(r) -> None:
    store = JobStore(r)
    first, created = store.create(_job(id="a1"), dispatch_member="gcore.api a1.1.create", grace=30)
    second, created_again = store.create(_job(id="b2"), dispatch_member="gcore.api b2.1.create", grace=30)
    assert (first, created, second, created_again) == ("a1", True, "a1", False)
    assert store.get("b2") is None
    assert r.zscore(SCHEDULE_KEY, "gcore.api a1.1.create") is not None  # the outbox entry


def test_lease_excludes_and_fencing_refuses_a_stale_holder(r) -> None:
    store = JobStore(r)
    store.create(_job(), dispatch_member="m", grace=30)
    lease = store.acquire("j1", ttl=0.3)
    assert isinstance(lease, Lease)
    busy, wait = store.acquire("j1", ttl=5)
    assert busy is None and 0 < wait <= 0.3
    time.sleep(0.35)  # the holder stalls past its lease; another worker takes over
    newer = store.acquire("j1", ttl=5)
    assert isinstance(newer, Lease) and newer.token > lease.token
    job = store.get("j1")
    job.bytes_done = 10
    with pytest.raises(StaleLease):
        store.save(job, lease)
    job.bytes_done = 20
    store.save(job, newer, release=True)
    assert store.get("j1").bytes_done == 20
    assert isinstance(store.acquire("j1", ttl=5), Lease)  # released


def test_forced_acquire_fences_out_the_running_holder(r) -> None:
    store = JobStore(r)
    store.create(_job(), dispatch_member="m", grace=30)
    worker = store.acquire("j1", ttl=60)
    operator = store.acquire("j1", ttl=5, force=True)
    with pytest.raises(StaleLease):
        store.save(store.get("j1"), worker)
    store.save(store.get("j1"), operator)


def test_scheduler_claims_due_entries_once_and_recovers_dead_claims(r) -> None:
    from workers.scheduler import Scheduler

    published: list[str] = []
    sched = Scheduler(r)
    store = JobStore(r)
    store.schedule("q due-now", 0)
    store.schedule("q later", 60)
    import workers.scheduler as module

    original = module.publish
    module.publish = published.append
    try:
        assert sched.tick() == 1
        assert sched.tick() == 0
        assert published == ["q due-now"]
        # a scheduler that died after claiming: its claim expires and is published again
        r.zadd(SCHEDULE_CLAIMED_KEY, {"q orphan": 0})
        assert sched.tick() == 1 and published[-1] == "q orphan"
    finally:
        module.publish = original
    assert r.zcard(SCHEDULE_CLAIMED_KEY) == 0
    assert r.zrange(SCHEDULE_KEY, 0, -1) == [b"q later"]
