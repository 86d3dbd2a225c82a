"""Retention and listing (issue 14, item 5), through real workers, Redis and the CLI: finished
jobs expire with their idempotency key, fencing counter and kept notifications; prune cleans the
index and removes old finished jobs on demand; jobs are listed in pages."""

from __future__ import annotations

import json
import re
import time

import pytest

from tasks.producer import submit, wait
from tests.conftest import MEDIA, SANDBOX_URL, cli, make_source

pytestmark = pytest.mark.integration


def test_a_finished_job_expires_with_its_key_and_prune_cleans_the_index(start_fleet, sandbox, rt) -> None:
    start_fleet(workers=1, env={"INGEST_JOB_RETENTION": "3"})
    media = make_source("retained.mp4", 200_000, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{media.name}"
    live = submit({"provider": "gcore", "source": url, "idempotency_key": "kept-1"})
    assert wait(live, 60)["state"] == "ready"
    names = [f"if:job:{live}", f"if:fence:{live}", "if:idem:gcore:default:kept-1"]
    assert all(0 < rt.redis.ttl(name) <= 3 for name in names), [rt.redis.ttl(n) for n in names]

    time.sleep(3.5)
    assert not any(rt.redis.exists(name) for name in names)
    assert rt.redis.zscore("if:jobs", live) is not None  # the index entry outlives the record...
    pruned = cli("prune", "--json")
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["dangling"] == 1
    assert rt.redis.zscore("if:jobs", live) is None  # ... until prune
    again = submit({"provider": "gcore", "source": url, "idempotency_key": "kept-1"})
    assert again != live  # the key went with its job


def test_a_retried_job_keeps_its_record(rt) -> None:
    """A job that leaves a terminal state (an operator's retry) loses the expiry again."""
    from tasks.jobstore import Job

    job = Job(id="r" * 32, provider="gcore", account="default", source="https://h/a.mp4", mode="pull", title="t",
              idempotency_key="retried", dispatch={"task_id": f"{'r' * 32}.1.create", "step": "create"})
    rt.store.create(job, dispatch_member="m", grace=30)
    lease = rt.store.acquire(job.id, ttl=30)
    job.state = "failed"
    rt.store.save(job, lease)
    assert rt.redis.ttl(f"if:job:{job.id}") > 0 and rt.redis.ttl("if:idem:gcore:default:retried") > 0
    job.state = "creating"
    rt.store.save(job, lease, release=True)
    assert rt.redis.ttl(f"if:job:{job.id}") == -1 and rt.redis.ttl("if:idem:gcore:default:retried") == -1
    assert rt.redis.ttl(f"if:fence:{job.id}") == -1


def test_jobs_are_listed_in_pages_newest_first(clean, sandbox, rt) -> None:
    url = f"{SANDBOX_URL}/media/{make_source('paged.mp4', 100_000, folder=MEDIA).name}"
    ids = [submit({"provider": "gcore", "source": url, "title": f"p{i}"}) for i in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        args = ["jobs", "--limit", "3", "--json"] + (["--cursor", cursor] if cursor else [])
        out = cli(*args)
        assert out.returncode == 0, out.stderr
        seen += [job["id"] for job in json.loads(out.stdout)]
        pages += 1
        found = re.search(r"more: --cursor (\S+)", out.stderr)
        if not found:
            break
        cursor = found.group(1)
    assert seen == ids[::-1] and pages == 3
    assert json.loads(cli("jobs", "--since", "1h", "--json").stdout)[0]["id"] == ids[-1]
    assert json.loads(cli("jobs", "--since", str(time.time() + 60), "--json").stdout) == []
    refused = cli("jobs", "--since", "yesterday")
    assert refused.returncode == 2 and "since" in refused.stderr


def test_prune_older_than_removes_finished_jobs_only(start_fleet, sandbox, rt) -> None:
    media = make_source("pruned.mp4", 100_000, folder=MEDIA)
    url = f"{SANDBOX_URL}/media/{media.name}"
    start_fleet(workers=1)
    done = submit({"provider": "gcore", "source": url, "idempotency_key": "old-1"})
    assert wait(done, 60)["state"] == "ready"
    sandbox.processing(60)
    running = submit({"provider": "gcore", "source": url})
    dry = json.loads(cli("prune", "--older-than", "0", "--dry-run", "--json").stdout)
    assert dry == {"removed": 1, "dangling": 0, "dry_run": True} and rt.redis.exists(f"if:job:{done}")
    assert json.loads(cli("prune", "--older-than", "0", "--json").stdout)["removed"] == 1
    assert not rt.redis.exists(f"if:job:{done}") and not rt.redis.exists("if:idem:gcore:default:old-1")
    assert rt.redis.exists(f"if:job:{running}") and rt.redis.zscore("if:jobs", running) is not None
