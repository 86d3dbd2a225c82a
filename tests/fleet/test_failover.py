"""A Redis failover (issue 13, item 2), with a primary and a replica of real redis-servers on
loopback: fencing tokens stay monotonic when the replica that takes over missed the last ones,
and with INGEST_REDIS_MIN_REPLICAS a write is acknowledged only once a replica has it."""

from __future__ import annotations

import time

import pytest
import redis

from tasks.errors import NotReplicated
from tasks.jobstore import Job, JobStore, Lease, StaleLease
from workers.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def pair(tmp_path):
    primary = EmbeddedRedis(tmp_path / "primary", appendonly=False).start()
    replica = EmbeddedRedis(tmp_path / "replica", appendonly=False).start()
    p, r = redis.Redis(port=primary.port), redis.Redis(port=replica.port)
    r.replicaof("127.0.0.1", primary.port)
    deadline = time.monotonic() + 10
    while p.info("replication").get("connected_slaves", 0) < 1 or r.info("replication")["master_link_status"] != "up":
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.05)
    yield primary, replica, p, r
    for server in (primary, replica):
        server.stop()


def _job() -> Job:
    return Job(id="f" * 32, provider="gcore", account="default", source="https://h/a.mp4", mode="pull",
               title="t", idempotency_key="failover", dispatch={"task_id": f"{'f' * 32}.1.create", "step": "create"})


def test_fencing_tokens_stay_monotonic_when_a_replica_that_missed_some_takes_over(pair) -> None:
    _primary, _replica, p, r = pair
    old = JobStore(p)
    old.create(_job(), dispatch_member="m", grace=30)
    first = old.acquire("f" * 32, ttl=0.05)
    assert isinstance(first, Lease) and p.wait(1, 2000) == 1  # the replica has the first token
    r.replicaof("NO", "ONE")  # cut off: what the primary does now, the replica misses
    time.sleep(0.06)
    stale = old.acquire("f" * 32, ttl=30)  # a worker takes the job on the primary, then it fails
    assert isinstance(stale, Lease) and stale.token > first.token

    new = JobStore(r)  # the promoted replica serves the fleet
    taker = new.acquire("f" * 32, ttl=30, force=True)  # another worker takes the job there
    assert isinstance(taker, Lease) and taker.token > stale.token
    job = new.get("f" * 32)
    job.bytes_done = 1
    with pytest.raises(StaleLease):  # the worker that took it on the old primary writes nothing
        new.save(job, stale)
    new.save(job, taker)


def test_with_min_replicas_a_write_no_replica_confirms_is_not_acknowledged(pair) -> None:
    _primary, replica, p, _r = pair
    store = JobStore(p, min_replicas=1)
    assert store.create(_job(), dispatch_member="m", grace=30)[1]  # confirmed by the replica
    lease = store.acquire("f" * 32, ttl=30)
    assert isinstance(lease, Lease)
    replica.stop()
    job = store.get("f" * 32)
    job.bytes_done = 2
    started = time.monotonic()
    with pytest.raises(NotReplicated, match="0 of INGEST_REDIS_MIN_REPLICAS=1"):
        store.save(job, lease)
    assert time.monotonic() - started < 5
