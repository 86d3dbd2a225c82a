"""The client for applications (issue 14, items 1, 2, 6 and the events of 3), through real
workers, the scheduler, Redis and the sandbox. The client process holds no provider setting
and no seal key, imports neither Celery nor the fleet's packages, and runs from a folder that
has its own tasks.py and workers.py, as an application's would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest_fleet import AsyncClient, Client, IdempotencyConflict, IntentRefused, JobNotFound, WaitTimeout
from tests.conftest import MEDIA, ROOT, SANDBOX_URL, SOURCES, make_source

pytestmark = pytest.mark.integration

#: What an application's process has: Redis, and nothing of the fleet's configuration.
APP_ENV = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}


def test_the_client_imports_nothing_of_the_fleet_from_an_apps_folder(redis_server, tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text("raise SystemExit('the application tasks.py was imported by the client')\n")
    (tmp_path / "workers.py").write_text("raise SystemExit('the application workers.py was imported')\n")
    code = textwrap.dedent("""
        import sys
        import ingest_fleet
        from ingest_fleet import Client, AsyncClient, IngestError, verify_signature
        heavy = sorted(m for m in ("celery", "kombu", "flower", "uvicorn", "boto3", "tasks", "workers")
                       if m in sys.modules)
        assert not heavy, heavy
        client = Client()
        print(client.status.__doc__ is None, sorted(client.served()[0]))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**APP_ENV, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (ROOT / "ingest_fleet" / "py.typed").exists()


def test_submit_wait_events_and_idempotency_through_the_fleet(start_fleet, sandbox) -> None:
    start_fleet(workers=1)
    client = Client()
    pulled = make_source("client-pull.mp4", 300_000, folder=MEDIA)
    pushed = make_source("client-push.mp4", 400_000)
    intent = {"provider": "gcore", "source": f"{SANDBOX_URL}/media/{pulled.name}", "title": "from the client",
              "idempotency_key": "client-1", "metadata": {"team": "a"}}
    job_id = client.submit(intent)
    assert client.submit(dict(intent)) == job_id  # the same key, the same intent: the same job
    with pytest.raises(IdempotencyConflict) as conflict:
        client.submit({**intent, "title": "another title"})
    assert conflict.value.job_id == job_id and "client-1" in str(conflict.value)
    push_id = client.submit({"provider": "gcore", "source": str(pushed)})

    job, push = client.wait(job_id, timeout=60), client.wait(push_id, timeout=60)
    assert (job["state"], push["state"]) == ("ready", "ready"), (job["error"], push["error"])
    assert push["bytes_done"] == pushed.stat().st_size and "admitted" in [h["event"] for h in push["history"]]
    assert not {"source_sealed", "intent_digest", "admitted"} & set(job)
    assert len(sandbox.state("gcore")["videos"]) == 2
    seen: list[tuple[str, str]] = []
    for event in client.events("app-test", start="0"):  # a new group, from the stream's start
        seen.append((event["job_id"], event["state"]))
        if {(job_id, "ready"), (push_id, "ready")} <= set(seen):
            break
    assert seen.index((job_id, "queued")) < seen.index((job_id, "creating")) < seen.index((job_id, "ready"))
    assert tuple(s for j, s in seen if j == push_id)[-2:] == ("processing", "ready")
    # Acknowledged as read: a consumer of the same group starting again gets nothing old.
    assert client.redis.xpending("if:events", "app-test")["pending"] <= 1
    with pytest.raises(JobNotFound):
        client.status("0" * 32)


def test_the_door_refuses_without_any_provider_credential(start_fleet, sandbox, tmp_path: Path) -> None:
    start_fleet(workers=1)  # its worker publishes the providers and accounts it serves
    client = Client()
    cases = [
        ({"provider": "vimeo", "source": "https://h/a.mp4"}, "provider", "unknown provider"),
        ({"provider": "gcore", "account": "nobody", "source": "https://h/a.mp4"}, "account", "no account 'nobody'"),
        ({"provider": "gcore", "source": "https://h/a.mp4", "priority": "urgent"}, "priority", "must be one of"),
        ({"provider": "gcore", "source": str(tmp_path / "missing.mp4")}, "source", "file not found"),
        ({"provider": "ittybit", "source": "ftp://h/a.mp4"}, "source", "scheme 'ftp'"),
        ({"provider": "gcore", "source": "https://u:pw@h/a.mp4"}, "source", "credentials"),
        ({"provider": "gcore", "source": "https://h/a.mp4", "colour": "red"}, "colour", "not an intent field"),
        ({"provider": "gcore", "source": "https://h/a.mp4", "callback_url": "mailto:x"}, "callback_url", "http(s)"),
    ]
    for intent, field, words in cases:
        with pytest.raises(IntentRefused) as refused:
            client.submit(intent)
        assert refused.value.field == field and words in str(refused.value), (intent, refused.value)
    assert client.redis.zcard("if:jobs") == 0  # nothing stored


def test_what_only_the_fleet_can_check_fails_the_job_with_the_reason(start_fleet, sandbox, tmp_path: Path) -> None:
    """A file the client sees but outside the workers' INGEST_SOURCE_ROOTS: the worker of the
    first step refuses it, and the job fails saying why, before any provider call."""
    start_fleet(workers=1)
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(make_source("client-outside.mp4", 200_000).read_bytes())
    job = Client().wait(Client().submit({"provider": "gcore", "source": str(outside)}), timeout=60)
    assert job["state"] == "failed" and "outside INGEST_SOURCE_ROOTS" in job["error"]["message"], job["error"]
    assert "refused at the fleet's door" in job["error"]["message"]
    assert sandbox.log(endpoint="gcore.create_video") == []


def test_cancel_ends_a_job_waiting_at_the_provider(start_fleet, sandbox) -> None:
    sandbox.processing(60)
    start_fleet(workers=1)
    client = Client()
    media = make_source("client-cancel.mp4", 200_000, folder=MEDIA)
    job_id = client.submit({"provider": "gcore", "source": f"{SANDBOX_URL}/media/{media.name}"})
    with pytest.raises(WaitTimeout):
        client.wait(job_id, timeout=3)  # it reaches the provider and waits there
    assert client.status(job_id)["state"] == "processing"
    client.cancel(job_id)
    job = client.wait(job_id, timeout=30)
    assert job["state"] == "cancelled", job
    assert not client.redis.exists(f"if:cancel:{job_id}")


def test_the_async_client(start_fleet, sandbox) -> None:
    start_fleet(workers=1)
    media = make_source("client-async.mp4", 200_000, folder=MEDIA)

    async def main() -> dict:
        client = AsyncClient()
        try:
            job_id = await client.submit({"provider": "ittybit", "source": f"{SANDBOX_URL}/media/{media.name}"})
            return await client.wait(job_id, timeout=60)
        finally:
            await client.aclose()

    assert asyncio.run(main())["state"] == "ready"


def test_the_cli_refuses_a_reused_key_naming_the_job(start_fleet, sandbox) -> None:
    from tests.conftest import cli

    media = make_source("client-cli.mp4", 200_000, folder=MEDIA)
    first = cli("submit", "--provider", "gcore", "--source", f"{SANDBOX_URL}/media/{media.name}", "--key", "k-1")
    assert first.returncode == 0, first.stderr
    job_id = re.search(r"[0-9a-f]{32}", first.stdout).group(0)
    again = cli("submit", "--provider", "gcore", "--source", f"{SANDBOX_URL}/media/{media.name}", "--key", "k-1",
                "--title", "changed")
    assert again.returncode == 2 and "k-1" in again.stderr and job_id in again.stderr, again.stderr
    assert json.loads(cli("status", job_id, "--json").stdout)["id"] == job_id
    assert SOURCES.exists()
