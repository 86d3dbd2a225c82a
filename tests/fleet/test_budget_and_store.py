"""The Redis-side pieces against a real redis-server: GCRA budget, cooldown, lease + fencing,
the outbox of dispatches and the scheduler's claim."""

from __future__ import annotations

import threading
import time

import pytest

from tasks import keys
from tasks.budget import ProviderBudget
from tasks.errors import Throttled
from tasks.jobstore import SCHEDULE_CLAIMED_KEY, SCHEDULE_KEY, Job, JobStore, Lease, Refused, StaleLease


@pytest.fixture
def fake():
    """Pure logic of the Lua scripts (leases, fencing, the outbox, slots): fakeredis is enough."""
    import fakeredis

    return fakeredis.FakeRedis()


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
    # A 5-s interval: the 200 calls take far less, however loaded the machine.
    a = ProviderBudget(r, "t:shared", rate=0.2, burst=1)
    b = ProviderBudget(r, "t:shared", rate=0.2, burst=1)
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


def test_create_is_idempotent_per_key(fake) -> None:
    store = JobStore(fake)
    first, created = store.create(_job(id="a1"), dispatch_member="gcore.api a1.1.create", grace=30)
    second, created_again = store.create(_job(id="b2"), dispatch_member="gcore.api b2.1.create", grace=30)
    assert (first, created, second, created_again) == ("a1", True, "a1", False)
    assert store.get("b2") is None
    assert fake.zscore(SCHEDULE_KEY, "gcore.api a1.1.create") is not None  # the outbox entry


def test_lease_excludes_and_fencing_refuses_a_stale_holder(fake) -> None:
    store = JobStore(fake)
    store.create(_job(), dispatch_member="m", grace=30)
    lease = store.acquire("j1", ttl=0.3)
    assert isinstance(lease, Lease)
    busy = store.acquire("j1", ttl=5)
    assert isinstance(busy, Refused) and 0 < busy.wait <= 0.3
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


def test_forced_acquire_fences_out_the_running_holder(fake) -> None:
    store = JobStore(fake)
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


def test_a_slow_or_failing_chore_never_holds_back_publishing(r) -> None:
    """Chores (reap, reconcile) read the whole backlog: they run on a thread of their own,
    so a pass that takes long, or fails, leaves due dispatches to be published on time."""
    import workers.scheduler as module
    from workers.scheduler import Chore, Scheduler

    r.delete(SCHEDULE_KEY, SCHEDULE_CLAIMED_KEY)
    published: list[tuple[str, float]] = []
    release = threading.Event()
    runs = {"slow": 0, "failing": 0}

    def slow() -> int:
        runs["slow"] += 1
        release.wait(30)
        return 0

    def failing() -> int:
        runs["failing"] += 1
        raise RuntimeError("a chore's bug")

    sched = Scheduler(r, idle_sleep=0.02, chores=[Chore("slow", 0.01, slow), Chore("failing", 0.01, failing)])
    original = module.publish
    module.publish = lambda m: published.append((m, time.monotonic()))
    loop = threading.Thread(target=sched.run)
    try:
        loop.start()
        time.sleep(0.3)  # the slow chore is running now, and holds its thread
        assert runs["slow"] == 1
        JobStore(r).schedule("q during-a-chore", 0)
        due = time.monotonic()
        deadline = due + 5
        while not published and time.monotonic() < deadline:
            time.sleep(0.01)
        assert published and published[0][0] == "q during-a-chore"
        assert published[0][1] - due < 1.0
        release.set()  # the failing chore ran, was logged, and runs again when next due
        deadline = time.monotonic() + 5
        while runs["failing"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runs["failing"] >= 2 and loop.is_alive()
    finally:
        release.set()
        sched.stop()
        loop.join(timeout=10)
        module.publish = original
    assert not loop.is_alive()


def test_slots_wake_waiters_in_priority_then_age_order_before_newcomers(fake) -> None:
    from tasks.budget import ProviderSlots

    slots = ProviderSlots(fake, "t:slots", limit=2)
    assert slots.acquire("a", score=3e10 + 1, wake_with="q a")
    assert slots.acquire("b", score=3e10 + 2, wake_with="q b")
    assert slots.acquire("a", score=3e10 + 1, wake_with="q a")  # held already: idempotent
    assert not slots.acquire("old-normal", score=3e10 + 3, wake_with="q old-normal")
    assert not slots.acquire("new-high", score=0e10 + 9, wake_with="q new-high")
    assert slots.release("a") == ["q new-high"]  # high priority first, though it came later
    assert not slots.acquire("newcomer", score=3e10 + 0.5, wake_with="q newcomer")  # no cutting in
    assert slots.acquire("new-high", score=9, wake_with="q new-high")
    assert slots.holders() == ["b", "new-high"]
    assert slots.waiters() == ["newcomer", "old-normal"]
    assert slots.release("b") == ["q newcomer"]
    # Two slots free, the woken newcomer has not taken its one yet: both waiters are woken.
    # (A process configured without a limit still wakes them by the limit in force.)
    assert ProviderSlots(fake, "t:slots", limit=0).release("new-high") == ["q newcomer", "q old-normal"]


def test_entity_budget_limits_calls_on_one_entity(r) -> None:
    video = ProviderBudget(r, "t:acct:entity:video:1", rate=10 / 60, burst=1)
    other = ProviderBudget(r, "t:acct:entity:video:2", rate=10 / 60, burst=1)
    assert video.try_acquire() == 0.0
    assert 5.5 < video.try_acquire() <= 6.0  # the next call on this video in 6 s
    assert other.try_acquire() == 0.0  # another video is not affected


def test_headroom_keeps_the_fleet_under_the_limit(r) -> None:
    budget = ProviderBudget(r, "t:headroom", rate=10, burst=1, headroom=0.05)
    budget.try_acquire()
    started = time.monotonic()
    wait = budget.try_acquire()
    # 1 / 9.5 s between calls, less the time between the two asks (a loaded machine's too)
    assert wait + (time.monotonic() - started) > 0.104 and wait <= 0.106


def test_learned_rate_limit_headers_pause_the_account_at_zero(r) -> None:
    budget = ProviderBudget(r, "t:learned", rate=0)
    budget.observe(limit=100, remaining=40, reset=20)
    assert budget.try_acquire() == 0.0
    budget.observe(limit=100, remaining=0, reset=4)
    assert 3.5 < budget.try_acquire() <= 4.0
    assert budget.stats()["observed"]["limit"] == 100


def test_the_reaper_reclaims_slots_of_lost_and_ended_jobs(rt, r, monkeypatch) -> None:
    from tasks import lifecycle

    monkeypatch.setattr(lifecycle, "REAP_PAGE", 2)  # the sets are read in several pages
    slots = rt.slots("gcore", "default")
    store = JobStore(r)
    store.create(_job(id="ended", key="k-ended", state="failed"), dispatch_member="m1", grace=30)
    alive = [f"alive{i}" for i in range(5)]
    for job_id in alive:
        store.create(_job(id=job_id, key=f"k-{job_id}", state="processing"), dispatch_member=f"m {job_id}", grace=30)
    for job_id in ("lost", "ended", *alive):  # "lost": no record at all
        assert slots.acquire(job_id, score=1, wake_with=f"q {job_id}")
    assert lifecycle.reap(rt) == 2  # the lost job and the ended one (its slot and its backlog entry)
    assert sorted(slots.holders()) == alive
    assert sorted(r.zrange(store.active_key("gcore", "default"), 0, -1)) == [a.encode() for a in alive]
    assert lifecycle.reap(rt) == 0


def test_a_long_wait_reserves_the_token_and_the_holder_uses_it(r) -> None:
    budget = ProviderBudget(r, "t:resv", rate=0.5, burst=1)  # one call every 2 s
    budget.acquire(max_wait=0.1, holder="job-a")
    with pytest.raises(Throttled) as first:
        budget.acquire(max_wait=0.1, holder="job-a")  # reserved for ~2 s from now
    assert 1.5 < first.value.retry_after <= 2.0
    with pytest.raises(Throttled) as second:
        budget.acquire(max_wait=0.1, holder="job-b")  # queued behind job-a's reservation
    assert 3.5 < second.value.retry_after <= 4.0
    time.sleep(first.value.retry_after)
    budget.acquire(max_wait=0.1, holder="job-a")  # its reservation: no new token, no wait
    # job-a used what it had reserved and took nothing from job-b, whose time still comes first.
    with pytest.raises(Throttled) as third:
        budget.acquire(max_wait=0.1, holder="job-c")
    assert third.value.retry_after > second.value.retry_after - first.value.retry_after + 1.5
    time.sleep(second.value.retry_after - first.value.retry_after)
    budget.acquire(max_wait=0.1, holder="job-b")


def test_a_reservation_is_never_taken_early_and_a_wait_within_max_wait_sleeps(r) -> None:
    budget = ProviderBudget(r, "t:resv2", rate=1, burst=1)
    budget.acquire(max_wait=0.1, holder="j")
    with pytest.raises(Throttled):
        budget.acquire(max_wait=0.1, holder="j")
    with pytest.raises(Throttled) as again:  # came back too early: still waits, takes nothing new
        budget.acquire(max_wait=0.1, holder="j")
    assert again.value.retry_after <= 1.0
    started = time.monotonic()
    budget.acquire(max_wait=2.0, holder="j")  # due within max_wait: sleeps for it
    assert 0.5 < time.monotonic() - started <= 1.2
    assert 0.9 < budget.try_acquire() <= 1.0  # and the next free token is still one interval on


def test_charging_a_call_already_made_never_waits_and_pushes_the_next_call(r) -> None:
    video = ProviderBudget(r, "t:acct:entity:video:9", rate=10 / 60, burst=1)
    video.acquire(max_wait=0.1)
    started = time.monotonic()
    assert 5.5 < video.charge(holder="job") <= 6.0  # counted at its turn, without waiting
    assert time.monotonic() - started < 0.5
    assert 11.5 < video.try_acquire() <= 12.0


def test_a_holder_back_too_late_takes_the_next_free_slot_a_few_times_then_goes(r) -> None:
    from tasks.budget import LATE_RESLOTS

    budget = ProviderBudget(r, "t:late", rate=4, burst=1)  # ~0.26 s apart (headroom 0)
    budget.acquire(max_wait=0.0, holder="j")
    for _ in range(LATE_RESLOTS + 1):
        with pytest.raises(Throttled) as info:
            budget.acquire(max_wait=0.0, holder="j")  # reserved, ~0.25 s ahead
        assert info.value.reserved
        time.sleep(info.value.retry_after + 0.2)  # back more than half an interval late
    # After LATE_RESLOTS new slots the late reservation is used as it is: the call goes.
    budget.acquire(max_wait=0.0, holder="j")


def test_a_dispatch_takes_the_lease_only_while_the_record_names_it(fake) -> None:
    """The task-id check and the lease are one atomic step (lua/lease_acquire.lua)."""
    from tasks.jobstore import STALE

    store = JobStore(fake)
    store.create(_job(dispatch={"task_id": "j1.1.create", "step": "create"}), dispatch_member="m", grace=30)
    older = store.acquire("j1", ttl=5, dispatch="j1.0.create")  # an older dispatch
    assert isinstance(older, Refused) and older.wait == STALE and older.job.dispatch["task_id"] == "j1.1.create"
    assert store.acquire("gone", ttl=5, dispatch="gone.1.create") == Refused(STALE, None)  # no record
    lease = store.acquire("j1", ttl=5, dispatch="j1.1.create")
    assert isinstance(lease, Lease)
    assert lease.job == store.get("j1")  # the record, read in the same atomic step
    assert fake.get(keys.starts("j1.1.create")) == b"1"
    job = lease.job
    job.state = "failed"
    store.save(job, lease, release=True)
    assert fake.get(keys.starts("j1.1.create")) is None and lease.ended  # the run ended: its count goes
    terminal = store.acquire("j1", ttl=5, dispatch="j1.1.create")
    assert isinstance(terminal, Refused) and terminal.wait == STALE and terminal.job.state == "failed"
