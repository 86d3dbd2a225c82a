"""Shared fixtures: a real redis-server and the sandbox on free ports, real worker processes.

The environment that points the fleet at them is set when this module is imported, before
anything reads settings (each process builds them once, on first use), and every process the
tests start inherits it. Everything runs on loopback and is torn down after.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from sandbox.ingestio import DEFAULT_NETWORK, default_profile_id
from sandbox.ingestio import mint_token as ingestio_token
from workers.embedded_redis import EmbeddedRedis, free_port
from workers.procs import Proc, ProcessGroup, sandbox_argv, scheduler_argv, webhooks_argv, worker_argv

ROOT = Path(__file__).resolve().parents[1]
TMP = Path(tempfile.mkdtemp(prefix="ingest-fleet-tests-"))
SOURCES = TMP / "sources"
MEDIA = TMP / "media"
for d in (SOURCES, MEDIA):
    d.mkdir(parents=True)

REDIS_PORT = free_port()
SANDBOX_PORT = free_port()
SANDBOX_URL = f"http://127.0.0.1:{SANDBOX_PORT}"
GCORE_KEY = "test-gcore-key-7Hq2xZ91"
BC_CLIENT_ID, BC_SECRET, BC_ACCOUNT = "test-bc-client", "test-bc-secret-Kp3vX8", "6200000000042"
WEBHOOK_PORT = free_port()
ITTYBIT_KEY = "test-ittybit-key-Qm4t7Rz2"
ONCE_KEY = "test-once-key-Lw8s2Vn6"
ONCE_DOMAIN, ONCE_CATALOG = "b207b479-c841-4095-8918-978be9e18dee", "bc6cb7d4-be99-471b-adf3-7c501172b317"
INGESTIO_JWT_SECRET = "test-ingestio-jwt-secret-Zr5"
INGESTIO_TOKEN = ingestio_token(INGESTIO_JWT_SECRET, exp=int(time.time()) + 86400)

#: Tests run the shipped budgets with time scaled down (issue 11): every rate and per-entity
#: rate is divided by TIME_SCALE and INGEST_SHORT_WAIT multiplied by it, so each budget's
#: interval keeps its ratio to the short wait (Brightcove: a call on one video every 6.3 s
#: against a 2 s short wait, here 0.63 s against 0.2 s) and every step makes the same calls.
TIME_SCALE = 0.1


def shipped_budgets(scale: float) -> dict[str, str]:
    from tasks.config import Settings, declared
    from tasks.providers import REGISTRY

    env = {"INGEST_SHORT_WAIT": f"{Settings.from_env({}).short_wait * scale:g}"}
    for provider in REGISTRY:
        for name in ("RATE", "ENTITY_RATE"):
            env[f"INGEST_{provider.upper()}_{name}"] = f"{float(declared(provider)[name].default) / scale:g}"
    return env


ENV = {
    "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
    "INGEST_SOURCE_ROOTS": f"{SOURCES}{os.pathsep}{MEDIA}",
    "INGEST_GCORE_BASE_URL": SANDBOX_URL,
    "INGEST_GCORE_API_KEY": GCORE_KEY,
    "INGEST_GCORE__TEAMB__API_KEY": GCORE_KEY,  # a second account, for fairness tests
    "INGEST_BRIGHTCOVE_CLIENT_ID": BC_CLIENT_ID,
    "INGEST_BRIGHTCOVE_CLIENT_SECRET": BC_SECRET,
    "INGEST_BRIGHTCOVE_ACCOUNT_ID": BC_ACCOUNT,
    "INGEST_BRIGHTCOVE_OAUTH_URL": SANDBOX_URL,
    "INGEST_BRIGHTCOVE_BASE_URL": SANDBOX_URL,
    "INGEST_BRIGHTCOVE_INGEST_URL": SANDBOX_URL,
    "INGEST_BRIGHTCOVE_SINGLE_PUT_MAX": "8000000",
    "INGEST_BRIGHTCOVE_PART_SIZE": str(5 * 1024 * 1024),
    "INGEST_ITTYBIT_API_KEY": ITTYBIT_KEY,
    "INGEST_ITTYBIT_BASE_URL": SANDBOX_URL,
    "INGEST_ITTYBIT_CHUNK_SIZE": str(16 * 1024 * 1024),
    "INGEST_ONCE_API_KEY": ONCE_KEY,
    "INGEST_ONCE_DOMAIN_ID": ONCE_DOMAIN,
    "INGEST_ONCE_CATALOG_ID": ONCE_CATALOG,
    "INGEST_ONCE_BASE_URL": SANDBOX_URL,
    "INGEST_ONCE_STAGING_BUCKET": "once-staging",
    "INGEST_ONCE_STAGING_ACCESS_KEY_ID": "test-staging-key",
    "INGEST_ONCE_STAGING_SECRET_ACCESS_KEY": "test-staging-secret-Hy5",
    "INGEST_ONCE_PART_SIZE": str(5 * 1024 * 1024),
    "INGEST_INGESTIO_API_KEY": INGESTIO_TOKEN,
    "INGEST_INGESTIO_BASE_URL": SANDBOX_URL,
    "INGEST_INGESTIO_PROFILE": default_profile_id(DEFAULT_NETWORK),
    "INGEST_WEBHOOK_URL": f"http://127.0.0.1:{WEBHOOK_PORT}",
    "INGEST_WEBHOOK_SECRET": "test-webhook-secret-9f8e7d6c5b4a",
    "INGEST_SECRET_KEY": "Q2Nhbm5vdC1ndWVzcy10aGlzLXRlc3Qta2V5LTAwMDE=",  # a Fernet key: 32 bytes, base64
    **shipped_budgets(TIME_SCALE),
    "INGEST_SLICE_SECONDS": "5",
    "INGEST_VISIBILITY_TIMEOUT": "40",
    "INGEST_STEP_GRACE": "10",  # time limits: soft 15 s, hard 25 s (under the visibility timeout)
    "INGEST_POLL_INITIAL": "0.2",
    "INGEST_POLL_MAX": "1.0",
    "INGEST_RECONCILE_SECONDS": "5",
    "INGEST_BACKOFF_BASE": "0.2",
    "INGEST_BACKOFF_CAP": "2",
    "INGEST_HTTP_READ_TIMEOUT": "10",
    "INGEST_RELAY_ALLOW_NETS": "127.0.0.0/8",  # the sandbox serves relayed sources on loopback
    "INGEST_LOG_LEVEL": "INFO",
    "PYTHONUNBUFFERED": "1",
}
os.environ.update(ENV)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(TMP / "redis", port=REDIS_PORT, appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rt(redis_server: EmbeddedRedis):
    from tasks.runtime import runtime

    return runtime()


@pytest.fixture(scope="session")
def sandbox(redis_server: EmbeddedRedis) -> Iterator[SandboxHandle]:
    group = ProcessGroup(os.environ, TMP / "logs")
    proc = group.start("sandbox", sandbox_argv(SANDBOX_PORT, TMP / "sandbox-data", MEDIA, processing_seconds=0.5)
                       + ["--gcore-api-key", GCORE_KEY, "--brightcove-client-id", BC_CLIENT_ID,
                          "--brightcove-client-secret", BC_SECRET, "--brightcove-account-id", BC_ACCOUNT,
                          "--ittybit-api-key", ITTYBIT_KEY, "--once-api-key", ONCE_KEY,
                          "--once-domain-id", ONCE_DOMAIN, "--once-catalog-id", ONCE_CATALOG,
                          "--ingestio-jwt-secret", INGESTIO_JWT_SECRET])
    handle = SandboxHandle(SANDBOX_URL, proc)
    handle.wait_healthy()
    # From the settings the sandbox printed (as a new user's fleet takes them): its S3
    # endpoint's port, and all settings of a provider ENV does not name (one just added).
    # Its output may reach the log a moment after it answers /health.
    deadline = time.monotonic() + 20
    while "sandbox listening on" not in proc.tail(100_000) and time.monotonic() < deadline:
        time.sleep(0.1)
    configured = {name.split("_")[1] for name in ENV if name.startswith("INGEST_")}  # GCORE, BRIGHTCOVE, ...
    for line in proc.tail(100_000).splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export "):].partition("=")
            if name.endswith("_S3_ENDPOINT") or name.split("_")[1] not in configured:
                os.environ[name] = shlex.split(value)[0] if value else ""
    yield handle
    group.stop_all()


class SandboxHandle:
    """Test-side view of the running sandbox (its admin API)."""

    def __init__(self, url: str, proc: Proc):
        self.url, self.proc = url, proc

    def wait_healthy(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/_sandbox/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            if not self.proc.alive():
                raise RuntimeError(self.proc.tail())
            time.sleep(0.1)
        raise TimeoutError(self.proc.tail())

    def reset(self) -> None:
        requests.post(f"{self.url}/_sandbox/reset", timeout=5).raise_for_status()

    def faults(self, provider: str = "gcore", **config) -> None:
        resp = requests.put(f"{self.url}/_sandbox/faults", json={"provider": provider, **config}, timeout=5)
        assert resp.ok, resp.text

    def log(self, endpoint: str | None = None) -> list[dict]:
        params = {"endpoint": endpoint} if endpoint else {}
        return requests.get(f"{self.url}/_sandbox/log", params=params, timeout=10).json()["entries"]

    def state(self, provider: str = "gcore") -> dict:
        return requests.get(f"{self.url}/_sandbox/state/{provider}", timeout=60).json()

    def processing(self, seconds: float) -> None:
        self.faults(processing_seconds=seconds)


@pytest.fixture
def clean(rt, sandbox: SandboxHandle) -> Iterator[None]:
    """A clean slate for one test: no job keys in Redis, a reset sandbox."""
    _wipe_fleet_keys(rt.redis)
    sandbox.reset()
    yield
    sandbox.reset()


def _wipe_fleet_keys(client) -> None:
    # Only the fleet's own keys: kombu's bindings must survive for running workers.
    from tasks.queues import PROVIDERS

    for pattern in ("if:*", "ingest.default", "unacked*", *(f"{p}.*" for p in PROVIDERS)):
        keys = list(client.scan_iter(pattern, count=1000))
        if keys:
            client.delete(*keys)


def kill9_pool(worker: Proc) -> None:
    """kill -9 the pool processes of a running worker (what the OOM killer does to the process
    running a step): the parent survives, starts new ones, and the lost task is delivered again
    at once (task_retry_on_worker_lost). ``Proc.kill9`` kills the whole worker instead; then
    only the visibility timeout brings its message back."""
    import psutil

    children = psutil.Process(worker.pid).children()
    assert children, "the worker has no pool process"
    for child in children:
        child.kill()
    psutil.wait_procs(children, timeout=10)


class Fleet:
    """Workers and a scheduler started for one test or module."""

    def __init__(self, log_dir: Path, env: dict[str, str]):
        self.group = ProcessGroup(env, log_dir)
        self.workers: list[Proc] = []
        self.scheduler: Proc | None = None
        self._n = 0

    def start_worker(self, *, concurrency: int = 2, queues: list[str] | None = None, wait: bool = True) -> Proc:
        self._n += 1
        proc = self.group.start(f"worker{self._n}", worker_argv(queues, concurrency=concurrency, name=f"w{self._n}"))
        if wait:
            self.group.wait_for_line(proc, "ready.", timeout=60)
        self.workers.append(proc)
        return proc

    def start_webhooks(self) -> Proc:
        proc = self.group.start("webhooks", webhooks_argv(WEBHOOK_PORT))
        self.group.wait_for_line(proc, "webhook receiver listening", timeout=30)
        return proc

    def start_scheduler(self, *, wait: bool = True) -> Proc:
        self.scheduler = self.group.start("scheduler", scheduler_argv())
        if wait:
            self.group.wait_for_line(self.scheduler, "scheduler.started", timeout=30)
        return self.scheduler

    def logs(self) -> str:
        return "\n".join(p.tail(50_000_000) for p in self.group.procs)

    def stop(self) -> None:
        # Graceful shutdown has tests of its own (tests/fleet/test_operations.py); here it would
        # only cost ~3 s a worker, and the next test wipes Redis and resets the sandbox.
        self.group.kill_all()


@pytest.fixture
def start_fleet(tmp_path: Path, clean) -> Iterator[Callable[..., Fleet]]:
    """Factory: ``fleet = start_fleet(workers=1, concurrency=2, env={...})``."""
    fleets: list[Fleet] = []

    def _start(*, workers: int = 1, concurrency: int = 2, env: dict[str, str] | None = None,
               queues: list[str] | None = None, webhooks: bool = False) -> Fleet:
        fleet = Fleet(tmp_path / f"fleet{len(fleets)}", {**os.environ, **(env or {})})
        fleets.append(fleet)
        fleet.start_scheduler(wait=False)
        if webhooks:
            fleet.start_webhooks()
        for _ in range(workers):
            fleet.start_worker(concurrency=concurrency, queues=queues, wait=False)
        fleet.group.wait_for_line(fleet.scheduler, "scheduler.started", timeout=30)
        for proc in fleet.workers:
            fleet.group.wait_for_line(proc, "ready.", timeout=90)
        return fleet

    yield _start
    for fleet in fleets:
        fleet.stop()


def make_source(name: str, size: int, *, folder: Path = SOURCES, valid: bool = True) -> Path:
    from sandbox.media import make_invalid_file, make_video_file

    path = folder / name
    if not path.exists() or path.stat().st_size != size:
        (make_video_file if valid else make_invalid_file)(path, size)
    return path


def sha256_of(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    import subprocess

    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          env=env if env is not None else dict(os.environ), timeout=timeout, cwd=ROOT)


def cli_on_terminal(*args: str, timeout: float = 60) -> tuple[int, str]:
    """The command run on a pseudo-terminal (progress bars show there): its exit status and output."""
    import os
    import pty
    import subprocess

    main, other = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", *args], stdin=other, stdout=other, stderr=other,
                            cwd=ROOT)
    os.close(other)
    seen = b""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen += os.read(main, 65536)
        except OSError:
            break
    status = proc.wait(30)
    os.close(main)
    return status, seen.decode(errors="replace")
