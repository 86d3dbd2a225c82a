"""The command's contract (issue 14, item 7), through the real command, Redis, workers and the
sandbox: --version, configuration errors as one line and exit 2, unknown variables warned,
submit --wait's progress bar and exit 4, the unserved-queue warning, config check, and Celery
options passed through to the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MEDIA, REDIS_PORT, ROOT, SANDBOX_URL, cli, cli_on_terminal, make_source

pytestmark = pytest.mark.integration


def _one_error_line(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_version_and_configuration_errors_are_one_line(redis_server) -> None:
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == "ingest-fleet 0.1.0"
    env = dict(os.environ)
    for name, value, words in [
        ("REDIS_URL", "http://127.0.0.1:1/0", ("REDIS_URL", "scheme http://")),
        ("REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/first", ("REDIS_URL", "'first' is not a number")),
        ("REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/99", ("REDIS_URL", "database does not exist")),
        ("INGEST_LOG_LEVEL", "LOUD", ("INGEST_LOG_LEVEL", "DEBUG, INFO")),
        ("INGEST_SLICE_SECONDS", "soon", ("INGEST_SLICE_SECONDS",)),
    ]:
        _one_error_line(cli("jobs", env={**env, name: value}), *words)


def test_an_unknown_variable_is_warned_with_the_closest_name(redis_server) -> None:
    done = cli("jobs", env={**os.environ, "INGEST_SLICE_SECOND": "5", "INGEST_NOTHING_LIKE_IT": "1"})
    assert done.returncode == 0, done.stderr
    assert "warning: INGEST_SLICE_SECOND is not a setting of ingest-fleet; did you mean INGEST_SLICE_SECONDS?" \
        in done.stderr
    assert "warning: INGEST_NOTHING_LIKE_IT is not a setting of ingest-fleet\n" in done.stderr


def test_submit_warns_when_no_worker_consumes_the_queue(start_fleet, sandbox) -> None:
    url = f"{SANDBOX_URL}/media/{make_source('unserved.mp4', 100_000, folder=MEDIA).name}"
    alone = cli("submit", "--provider", "gcore", "--source", url)
    assert alone.returncode == 0 and "warning: no worker consumes queue gcore.api" in alone.stderr, alone.stderr
    start_fleet(workers=1)
    served = cli("submit", "--provider", "gcore", "--source", url)
    assert served.returncode == 0 and "warning" not in served.stderr, served.stderr


def test_submit_wait_shows_progress_on_a_terminal_and_exits_4_on_its_timeout(start_fleet, sandbox) -> None:
    sandbox.processing(30)
    start_fleet(workers=1)
    url = f"{SANDBOX_URL}/media/{make_source('waited.mp4', 100_000, folder=MEDIA).name}"
    plain = cli("submit", "--provider", "gcore", "--source", url, "--wait", "--timeout", "2")
    assert plain.returncode == 4 and "not finished after 2" in plain.stderr and "it goes on" in plain.stderr

    status, seen = cli_on_terminal("submit", "--provider", "gcore", "--source", url, "--wait", "--timeout", "3",
                                   timeout=30)  # a terminal: the progress bar
    assert status == 4
    assert "━" in seen and "processing" in seen


def test_config_check_reaches_every_account_and_masks_secrets(start_fleet, sandbox) -> None:
    good = cli("config", "check", "--json")
    assert good.returncode == 0, good.stdout + good.stderr
    report = json.loads(good.stdout)
    assert report["redis"]["ok"] and report["settings"]["secret_key"] == "***"
    checked = {(r["provider"], r["account"]): r for r in report["accounts"]}
    assert all(r["ok"] for r in checked.values()), [r for r in checked.values() if not r["ok"]]
    assert {p for p, _ in checked} == {"gcore", "brightcove", "ittybit", "once", "ingestio"}
    secret = os.environ["INGEST_GCORE_API_KEY"]
    assert secret not in good.stdout

    bad = cli("config", "check", env={**os.environ, "INGEST_GCORE_API_KEY": "wrong-key-123456"})
    assert bad.returncode == 2 and "gcore/default" in bad.stdout and "FAILED" in bad.stdout, bad.stdout
    assert "wrong-key-123456" not in bad.stdout + bad.stderr


def test_worker_passes_celery_options_through(rt, tmp_path: Path) -> None:
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "worker", "--kind", "poll", "-c", "1", "--",
                             "--max-tasks-per-child", "7"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in (tmp_path / "worker.log").read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.2)
        argv = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--max-tasks-per-child" in argv and b"7" in argv and b"--" not in argv
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
