"""A Redis primary failover mid-batch (issue 13, item 6): a primary, two replicas and a Redis
Sentinel, all real servers on loopback; the fleet (workers, scheduler) and the producer reach
Redis only through ``REDIS_URL=sentinel://…``. The primary is killed with SIGKILL while jobs
of three providers are in every step; the Sentinel promotes a replica; every job the producer
was told was accepted ends ready, with exactly one entity (and one ingest) at its provider."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import redis

from ingest_fleet import redis_url as redisconn
from tasks.config import Settings
from tasks.errors import ConfigError
from tasks.producer import submit
from tasks.runtime import Runtime
from tests.conftest import MEDIA, SANDBOX_URL, make_source
from workers.embedded_redis import EmbeddedRedis, find_redis_server, free_port

pytestmark = pytest.mark.integration

MASTER = "fleetmaster"


class SentinelGroup:
    """A primary, ``replicas`` replicas and one Sentinel (quorum 1) watching them."""

    def __init__(self, base: Path, replicas: int = 2):
        self.base = base
        self.servers = [EmbeddedRedis(base / f"redis{i}", appendonly=False) for i in range(replicas + 1)]
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"sentinel://127.0.0.1:{self.port}/0?master_name={MASTER}"

    def start(self) -> SentinelGroup:
        primary, *replicas = [s.start() for s in self.servers]
        for server in self.servers:  # whichever is primary, a full sync starts at once
            redis.Redis(port=server.port).config_set("repl-diskless-sync-delay", 0)
        for replica in replicas:
            redis.Redis(port=replica.port).replicaof("127.0.0.1", primary.port)
        folder = self.base / "sentinel"
        folder.mkdir(parents=True)
        conf = folder / "sentinel.conf"
        conf.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {folder}\nlogfile {folder / 'sentinel.log'}\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 1\n"
                        f"sentinel down-after-milliseconds {MASTER} 2000\n"
                        f"sentinel failover-timeout {MASTER} 10000\n"
                        f"sentinel parallel-syncs {MASTER} 2\n")
        self.proc = subprocess.Popen([find_redis_server(), str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        sentinel = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:  # the Sentinel answers and knows both replicas, which are in sync
            try:
                known = len(sentinel.sentinel_slaves(MASTER))
            except redis.RedisError:
                known = 0
            info = redis.Redis(port=primary.port).info("replication")
            synced = sum(info.get(f"slave{i}", {}).get("state") == "online" for i in range(len(replicas)))
            if known == len(replicas) and synced == len(replicas):
                return self
            assert time.monotonic() < deadline, f"the Sentinel group never came up ({known} known, {synced} synced)"
            time.sleep(0.1)

    def primary_port(self) -> int:
        _host, port = redis.Redis(port=self.port).sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def server(self, port: int) -> EmbeddedRedis:
        return next(s for s in self.servers if s.port == port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for server in self.servers:
            server.stop()


@pytest.fixture
def group(tmp_path: Path):
    started = SentinelGroup(tmp_path / "redis").start()
    yield started
    started.stop()


def test_sentinel_urls_are_parsed_and_refused_with_the_fix() -> None:
    target = redisconn.sentinel_target("sentinel://:p%40ss@s1:26379,s2:26380/3?master_name=m&sentinel_password=sp")
    assert target is not None
    assert (target.sentinels, target.master_name, target.db) == ((("s1", 26379), ("s2", 26380)), "m", 3)
    assert (target.password, target.sentinel_password) == ("p@ss", "sp")
    kombu = redisconn.sentinel_target("sentinel://s1:26379;sentinel://s2:26380?master_name=m")
    assert kombu is not None and kombu.sentinels == (("s1", 26379), ("s2", 26380))
    url, options = redisconn.broker("sentinel://:pw@s1:26379,s2:26380/3?master_name=m")
    assert url == "sentinel://:pw@s1:26379/3;sentinel://:pw@s2:26380/3" and options == {"master_name": "m"}
    for bad, named in [("sentinel://s1:26379/0", "master_name"), ("sentinel://s1/0?master_name=m", "HOST:PORT"),
                       ("sentinel://s1:1?master_name=m&master=x", "unknown Sentinel option"),
                       ("http://r:6379", "scheme http://")]:
        with pytest.raises(ConfigError, match="REDIS_URL") as refused:
            Settings.from_env({"REDIS_URL": bad})
        assert named in str(refused.value)


def _jobs(n: int) -> list[dict]:
    gcore = make_source("sentinel-push.mp4", 3_000_000)
    pulled = make_source("sentinel-pull.mp4", 400_000, folder=MEDIA)
    intents = []
    for i in range(n):
        provider = ("gcore", "ittybit", "brightcove")[i % 3]
        source = str(gcore) if provider == "gcore" else f"{SANDBOX_URL}/media/{pulled.name}"
        intents.append({"provider": provider, "source": source, "title": f"failover {i}",
                        "idempotency_key": f"sentinel-{i}"})
    return intents


def test_a_primary_killed_mid_batch_loses_no_job_and_makes_no_duplicate(group, sandbox, start_fleet) -> None:
    env = {"REDIS_URL": group.url, "INGEST_REDIS_MIN_REPLICAS": "1", "INGEST_RECONCILE_SECONDS": "3"}
    sandbox.processing(4.0)  # jobs wait at the provider while the primary goes
    fleet = start_fleet(workers=2, concurrency=2, env=env)
    rt = Runtime(Settings.from_env({**os.environ, **env}))
    first = group.primary_port()

    job_ids = [submit(intent, rt=rt) for intent in _jobs(12)]  # each acknowledged: on a replica too
    deadline = time.monotonic() + 30
    while sum(rt.store.get(j).step != "create" for j in job_ids) < 6:  # half the batch under way
        assert time.monotonic() < deadline, "the batch never got going"
        time.sleep(0.1)
    group.server(first).proc.kill()  # SIGKILL: no shutdown, nothing flushed

    deadline = time.monotonic() + 30
    while True:  # the Sentinel promotes a replica
        try:
            if group.primary_port() != first:
                break
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, "the Sentinel never promoted a replica"
        time.sleep(0.2)

    deadline = time.monotonic() + 150
    while True:
        try:
            jobs = [rt.store.get(j) for j in job_ids]
        except redis.RedisError:
            jobs = []
        if jobs and all(j.terminal for j in jobs):
            break
        assert time.monotonic() < deadline, (
            "not every job finished after the failover: "
            f"{[(j.id[:8], j.state, j.step) for j in jobs if not j.terminal]}\n{fleet.logs()[-4000:]}")
        time.sleep(0.5)
    assert [j.state for j in jobs] == ["ready"] * len(jobs), [(j.state, j.error) for j in jobs]

    gcore = sandbox.state("gcore")["videos"]
    assert sorted(v["id"] for v in gcore) == sorted(j.provider_ids["video_id"] for j in jobs if j.provider == "gcore")
    itty = sandbox.state("ittybit")["tasks"]
    assert len(itty) == sum(j.provider == "ittybit" for j in jobs)
    bc = sandbox.state("brightcove")
    assert sorted(bc["ingest_requests"]) == sorted(j.provider_ids["video_id"] for j in jobs
                                                   if j.provider == "brightcove")
    assert all(count == 1 for count in bc["ingest_requests"].values()), bc["ingest_requests"]
    assert "scheduler.started" in fleet.logs()

