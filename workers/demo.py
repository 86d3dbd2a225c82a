"""``ingest-fleet demo`` (``make demo``): the whole fleet on this machine, ingesting sample
videos into the sandbox's Gcore, Brightcove, Ittybit and Brightcove Once emulators.

With nothing else running, the demo

1. writes the sample videos once (files to upload, and files for the sandbox to serve
   under ``/media/`` so the provider pulls them from a URL): Gcore gets three pushes (TUS)
   and two pulls, Brightcove a small push (one PUT to a signed URL), a large one (S3
   multipart) and a pull, Ittybit a push (signed PUT) and a pull (an ingest task), Brightcove
   Once a pull and a local file staged in S3 first;
2. starts Redis (embedded, unless ``REDIS_URL`` is set), the sandbox, the scheduler, two
   workers (one for the API and poll queues, one for the upload queues), the webhook
   receiver (Brightcove's callbacks end the waits) and Flower behind basic auth, and waits
   until each one is ready (the sandbox answers each upload chunk or part 0.8 s late, as
   over a ~100 Mbit/s link, so that uploads take long enough to watch);
3. submits the intents and shows every job's progress live, read from the job records
   in Redis: bytes uploaded, then the provider's processing progress;
4. prints a summary table, where Flower and the logs are, and stops everything it
   started. With ``keep`` it instead prints the settings that let another shell use the
   fleet, and stops everything on Ctrl-C.

Everything lives in ``./.ingest-fleet/`` (``redis/``, ``sandbox/``, ``samples/``,
``media/``, ``logs/``); ``make clean-demo`` removes it. Exit status: 0 when all jobs are
ready; 1 when one is not, or when a process of the fleet dies (its log tail is shown);
130 on Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from ingest_fleet import redis_url
from sandbox.media import make_video_file
from tasks.producer import status, submit
from tasks.providers import ADAPTERS, REGISTRY
from tasks.queues import queues_of_kind
from tasks.sealed import new_key
from workers.embedded_redis import EmbeddedRedis, RedisNotFound, free_port
from workers.procs import (
    Proc,
    ProcessGroup,
    flower_argv,
    sandbox_argv,
    scheduler_argv,
    webhooks_argv,
    worker_argv,
)

HOME = Path(".ingest-fleet")
MB = 1_000_000
PROCESSING_SECONDS = 4.0      # the sandbox's emulated transcoding time per video
UPLOAD_CHUNK_LATENCY_MS = 800  # per 10 MB TUS PATCH: about a 100 Mbit/s link
WORKER_CONCURRENCY = 2
STARTUP_TIMEOUT = 60.0        # per process; a cold start imports Celery, moto, Flower
FOLLOW_TIMEOUT = 600.0
REFRESH_SECONDS = 0.25        # ~4 reads of the job records per second
LOG_TAIL_LINES = 20
FLOWER_USER = "demo"
TERMINAL = frozenset({"ready", "failed", "cancelled"})
STATE_STYLE = {"queued": "dim", "creating": "cyan", "uploading": "blue", "submitting": "magenta",
               "processing": "yellow", "ready": "bold green", "failed": "bold red", "cancelled": "red"}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass(frozen=True)
class Sample:
    """One sample video: ``push`` files are uploaded by the fleet, ``pull`` files are
    served by the sandbox and fetched by the (emulated) provider from their URL."""

    provider: str
    mode: str
    number: int
    size: int

    @property
    def name(self) -> str:
        return f"demo-{self.provider}-{self.mode}-{self.number}.mp4"

    @property
    def title(self) -> str:
        return f"{self.provider} {self.mode} {self.number} ({self.size // MB} MB)"

    def path(self, home: Path) -> Path:
        return home / ("samples" if self.mode == "push" else "media") / self.name


SAMPLES = (
    Sample("gcore", "push", 1, 48 * MB), Sample("gcore", "push", 2, 24 * MB), Sample("gcore", "push", 3, 12 * MB),
    Sample("gcore", "pull", 1, 32 * MB), Sample("gcore", "pull", 2, 16 * MB),
    Sample("brightcove", "push", 1, 40 * MB), Sample("brightcove", "push", 2, 6 * MB),
    Sample("brightcove", "pull", 1, 16 * MB),
    Sample("ittybit", "push", 1, 20 * MB), Sample("ittybit", "pull", 1, 8 * MB),
    Sample("once", "push", 1, 24 * MB), Sample("once", "pull", 1, 8 * MB),
    # Ingest.io has no URL ingest: two pushes, a signed multipart one and a single PUT.
    Sample("ingestio", "push", 1, 24 * MB), Sample("ingestio", "push", 2, 4 * MB),
)


def samples() -> tuple[Sample, ...]:
    """The demo's videos: the ones chosen above, and for a provider they leave out (one just
    added to the registry) a push if it takes uploads and a pull if it fetches URLs."""
    extra = []
    for name in REGISTRY:
        if not any(s.provider == name for s in SAMPLES):
            if ADAPTERS[name].supports_push:
                extra.append(Sample(name, "push", 1, 8 * MB))
            if ADAPTERS[name].pull_schemes & {"http", "https"}:
                extra.append(Sample(name, "pull", 1, 8 * MB))
    return SAMPLES + tuple(extra)


BRIGHTCOVE_SINGLE_PUT_MAX = 16 * MB  # the small push goes as one PUT, the large one as S3 multipart
BRIGHTCOVE_PART_SIZE = 8 * 1024 * 1024


@dataclass
class Fleet:
    """What one run started, so that all of it, and only it, is stopped."""

    home: Path
    settings: dict[str, str] = field(default_factory=dict)
    redis: EmbeddedRedis | None = None
    group: ProcessGroup | None = None
    sandbox_port: int = 0
    flower_port: int = 0
    webhook_port: int = 0

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.flower_port}"


@dataclass
class DemoJob:
    sample: Sample
    id: str
    record: dict[str, Any] = field(default_factory=dict)
    phase: str | None = None  # what the progress bar measures: "upload" bytes or "processing" percent

    @property
    def state(self) -> str:
        return self.record.get("state", "queued")


class DemoError(RuntimeError):
    """The demo cannot go on; the message says why."""


class ChildFailed(DemoError):
    """A process of the fleet died or never became ready."""

    def __init__(self, proc: Proc, reason: str):
        super().__init__(f"{proc.name} {reason}{_exit_status(proc.popen.poll())}")
        self.proc = proc


def _exit_status(code: int | None) -> str:
    if code is None:
        return ""
    return f" (killed by {signal.Signals(-code).name})" if code < 0 else f" (exit status {code})"


def main(keep: bool = False) -> int:
    console = Console()
    fleet = Fleet(home=HOME.resolve())
    with _stop_signals(_raise_interrupt):  # SIGTERM (e.g. from CI) cleans up like Ctrl-C
        try:
            return _run(fleet, console, keep=keep)
        except KeyboardInterrupt:
            console.print("[yellow]Interrupted.[/]")
            return 130
        except ChildFailed as exc:
            console.print(f"[bold red]error:[/] {exc}; last lines of {exc.proc.log_path}:")
            console.out("\n".join(exc.proc.tail().splitlines()[-LOG_TAIL_LINES:]), highlight=False)
            return 1
        except DemoError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            return 1
        finally:
            _shutdown(fleet, console)


def _run(fleet: Fleet, console: Console, *, keep: bool) -> int:
    console.print(f"[bold]ingest-fleet demo[/]: the fleet and the sandbox, all under {fleet.home}")
    _prepare(fleet.home)
    _make_samples(fleet.home, console)
    redis_url = _start_redis(fleet, console)
    fleet.sandbox_port = free_port()
    fleet.webhook_port = free_port()
    fleet.settings = _fleet_settings(fleet.home, redis_url, fleet.webhook_port)
    # This process (which submits the intents) builds its settings once, on first use:
    # they must be in its environment before then.
    os.environ.update(fleet.settings)
    fleet.group = ProcessGroup({**os.environ, "PYTHONUNBUFFERED": "1"}, fleet.home / "logs")
    _start_sandbox(fleet, console)
    _start_fleet(fleet, console)

    jobs = _submit_all(fleet)
    _follow(jobs, fleet, console)
    _print_summary(jobs, console)
    _print_access(fleet, console, keep=keep)
    all_ready = all(job.state == "ready" for job in jobs)
    if keep:
        _print_exports(fleet, console)
        try:
            _watch(fleet)
        except KeyboardInterrupt:
            pass  # the way to end a --keep run, not a failure
    return 0 if all_ready else 1


# -- setting up ---------------------------------------------------------------------------

def _prepare(home: Path) -> None:
    # Logs start empty so that readiness checks never match a line of an earlier run; the
    # sandbox keeps its videos in memory, so bytes it stored in an earlier run are garbage.
    for stale in ("logs", "sandbox"):
        shutil.rmtree(home / stale, ignore_errors=True)
    for sub in ("redis", "sandbox", "samples", "media", "logs"):
        (home / sub).mkdir(parents=True, exist_ok=True)


def _make_samples(home: Path, console: Console) -> None:
    made = 0
    for seed, sample in enumerate(samples()):
        path = sample.path(home)
        if path.exists() and path.stat().st_size == sample.size:
            continue
        # Written aside and renamed, so an interrupted run never leaves a short file
        # under the final name for the sandbox to serve.
        partial = path.with_name(path.name + ".partial")
        make_video_file(partial, sample.size, seed=seed)
        partial.replace(path)
        made += 1
    total = sum(s.size for s in samples()) // MB
    _ok(console, "samples", f"{total} MB in {HOME}/samples/ and media/ ({made} made, {len(samples()) - made} reused)")


def _start_redis(fleet: Fleet, console: Console) -> str:
    given = os.environ.get("REDIS_URL")
    if given:
        # Unreachable: redis.ConnectionError, which the CLI turns into exit status 3.
        redis_url.client(given, socket_connect_timeout=3).ping()
        _ok(console, "redis", f"{given} (from REDIS_URL)")
        return given
    # The sandbox forgets its videos when it stops, so jobs an earlier demo left unfinished
    # could only fail against this one: the demo's own Redis starts empty each run.
    shutil.rmtree(fleet.home / "redis", ignore_errors=True)
    fleet.redis = EmbeddedRedis(fleet.home / "redis", appendonly=True)
    try:
        with _interrupts_held(replay=True):  # never leave a server we could not record
            fleet.redis.start()
    except (RedisNotFound, RuntimeError) as exc:
        raise DemoError(f"cannot start the embedded Redis: {exc}") from None
    _ok(console, "redis", f"{fleet.redis.url} (embedded, in {HOME}/redis/)")
    return fleet.redis.url


#: The demo's own choices of provider settings (checked against the adapters' declarations by
#: tests/unit/test_config.py): uploads of both kinds, single PUT and multipart, within its sample sizes.
DEMO_PROVIDER_SETTINGS = {
    "INGEST_BRIGHTCOVE_SINGLE_PUT_MAX": str(BRIGHTCOVE_SINGLE_PUT_MAX),
    "INGEST_BRIGHTCOVE_PART_SIZE": str(BRIGHTCOVE_PART_SIZE),
    "INGEST_ONCE_PART_SIZE": str(BRIGHTCOVE_PART_SIZE),
}


def _fleet_settings(home: Path, redis_url: str, webhook_port: int) -> dict[str, str]:
    # The providers' endpoints and credentials are the ones the sandbox prints (adopted when it
    # starts), and nothing else: budgets, slices and polls run at the shipped defaults, as a
    # user's fleet would against the real providers (issue 11).
    return {
        "REDIS_URL": redis_url,
        "INGEST_SOURCE_ROOTS": str(home / "samples"),
        **DEMO_PROVIDER_SETTINGS,
        "INGEST_WEBHOOK_URL": f"http://127.0.0.1:{webhook_port}",
        "INGEST_WEBHOOK_SECRET": secrets.token_urlsafe(24),
        "INGEST_SECRET_KEY": new_key(),  # seals upload credentials and tokens at rest in Redis
        # Yours if set (e.g. to look at Flower while the demo runs), else a fresh one.
        "FLOWER_BASIC_AUTH": os.environ.get("FLOWER_BASIC_AUTH") or f"{FLOWER_USER}:{secrets.token_urlsafe(12)}",
    }


def _start_sandbox(fleet: Fleet, console: Console) -> None:
    argv = sandbox_argv(fleet.sandbox_port, fleet.home / "sandbox", fleet.home / "media",
                        processing_seconds=PROCESSING_SECONDS)
    cfg = fleet.settings
    proc = _start(fleet, "sandbox", argv)
    # Its settings are printed before this line, and it serves by then.
    _wait_until(proc, _logged(proc, "sandbox listening on"), "'sandbox listening on' in its log")
    # Every provider's endpoints and credentials (and its S3 endpoint's port) are the settings it printed.
    printed = dict(line[len("export "):].split("=", 1) for line in proc.tail(100_000).splitlines()
                   if line.startswith("export "))
    adopted = {k: v for k, v in printed.items() if k not in cfg}
    cfg.update(adopted)
    os.environ.update(adopted)
    assert fleet.group is not None
    fleet.group.env.update(adopted)
    # On loopback a 48 MB upload is over in a blink; answering each upload chunk a little
    # late, as over a real link, gives the upload bars something to show.
    for provider, endpoint in (("gcore", "gcore.tus_patch"), ("s3", "s3.upload_part"),
                               ("ingestio", "ingestio.part_put")):
        slow_link = {"provider": provider, "latency_ms": UPLOAD_CHUNK_LATENCY_MS, "latency_endpoints": [endpoint]}
        requests.put(f"{fleet.sandbox_url}/_sandbox/faults", json=slow_link, timeout=5).raise_for_status()
    _ok(console, "sandbox", f"{fleet.sandbox_url} ({', '.join(REGISTRY)}, S3; "
                            f"{PROCESSING_SECONDS:g} s processing, "
                            f"+{UPLOAD_CHUNK_LATENCY_MS / 1000:g} s per upload chunk)")


def _start_fleet(fleet: Fleet, console: Console) -> None:
    """Start the workers, the scheduler and Flower together, then wait for each."""
    workers = {"worker-api": queues_of_kind("api") + queues_of_kind("poll"),
               "worker-upload": queues_of_kind("upload")}
    started = {name: _start(fleet, name, worker_argv(queues, concurrency=WORKER_CONCURRENCY, name=name))
               for name, queues in workers.items()}
    scheduler = _start(fleet, "scheduler", scheduler_argv())
    webhooks = _start(fleet, "webhooks", webhooks_argv(fleet.webhook_port))
    fleet.flower_port = free_port()
    flower = _start(fleet, "flower", flower_argv(fleet.flower_port))

    for name, queues in workers.items():
        _wait_until(started[name], _logged(started[name], "ready."), "'ready.' in its log")
        _ok(console, name, f"queues {','.join(queues)}, concurrency {WORKER_CONCURRENCY}")
    _wait_until(scheduler, _logged(scheduler, "scheduler.started"), "'scheduler.started' in its log")
    _ok(console, "scheduler", "moving due polls and retries onto the queues")
    _wait_until(webhooks, _logged(webhooks, "webhook receiver listening"), "'webhook receiver listening' in its log")
    _ok(console, "webhooks", f"http://127.0.0.1:{fleet.webhook_port} (provider callbacks end waits early)")
    # 401 without credentials: Flower is up, and its basic auth is on.
    _wait_until(flower, _answers(fleet.flower_url, 401), f"HTTP 401 from {fleet.flower_url} without credentials")
    _ok(console, "flower", f"{fleet.flower_url} (basic auth)")


def _start(fleet: Fleet, name: str, argv: list[str]) -> Proc:
    assert fleet.group is not None
    with _interrupts_held(replay=True):  # a Ctrl-C between fork and bookkeeping would orphan it
        return fleet.group.start(name, argv)


def _wait_until(proc: Proc, ready: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not proc.alive():
            raise ChildFailed(proc, "exited while starting")
        if time.monotonic() > deadline:
            raise ChildFailed(proc, f"was not ready after {timeout:g} s (waited for {what})")
        time.sleep(0.1)


def _logged(proc: Proc, needle: str) -> Callable[[], bool]:
    return lambda: needle in proc.tail(1_000_000)


def _answers(url: str, status_code: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return requests.get(url, timeout=2).status_code == status_code
        except requests.RequestException:
            return False
    return check


def _ok(console: Console, name: str, detail: str) -> None:
    console.print(f"[green]✓[/] {name:<14}{detail}", highlight=False)


# -- running the jobs ---------------------------------------------------------------------

def _submit_all(fleet: Fleet) -> list[DemoJob]:
    jobs = []
    for sample in samples():
        source = str(sample.path(fleet.home)) if sample.mode == "push" else f"{fleet.sandbox_url}/media/{sample.name}"
        intent = {"provider": sample.provider, "source": source, "title": sample.title, "tags": ["demo"]}
        jobs.append(DemoJob(sample, submit(intent)))
    return jobs


def _follow(jobs: list[DemoJob], fleet: Fleet, console: Console) -> None:
    """Show one bar per job until all are terminal (or the timeout); Redis reads only."""
    columns = (TextColumn("{task.description}"), TextColumn("{task.fields[state]}"), BarColumn(),
               TextColumn("{task.fields[detail]}"), TextColumn("{task.fields[elapsed]}", justify="right"))
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    # On a non-TTY rich does not animate: it prints the bars once, when they stop; the
    # state-change lines printed meanwhile are what a CI log shows of the run.
    with Progress(*columns, console=console, refresh_per_second=4) as progress:
        bars = {job.id: progress.add_task(job.sample.title, total=None, state="", detail="", elapsed="")
                for job in jobs}
        while True:
            for job in jobs:
                _update(progress, bars[job.id], job, status(job.id))
            if all(job.state in TERMINAL for job in jobs):
                return
            _check_alive(fleet)
            if time.monotonic() > deadline:
                progress.console.print(f"[bold red]Gave up waiting after {FOLLOW_TIMEOUT:g} s.[/]")
                return
            time.sleep(REFRESH_SECONDS)


def _update(progress: Progress, bar: TaskID, job: DemoJob, record: dict[str, Any]) -> None:
    previous = job.state if job.record else None
    job.record = record
    if job.state != previous:
        clock = time.strftime("%H:%M:%S")
        progress.console.print(f"{clock}  {job.id[:8]}  {job.sample.title:<30} {_styled(job.state, width=10)}")
    if job.state not in ("failed", "cancelled"):  # a failed job's bar stays where it stopped
        phase, completed, total = _measure(job)
        if phase != job.phase:
            # A fresh bar for the new phase: rich keeps a bar "finished" once it reached its total.
            progress.reset(bar, total=total, completed=completed)
            job.phase = phase
        progress.update(bar, total=total, completed=completed)
    progress.update(bar, state=_styled(job.state, width=10), detail=_detail(job), elapsed=f"{_seconds(record):.0f} s")


def _measure(job: DemoJob) -> tuple[str, float, float]:
    """(phase, completed, total): bytes while a push job uploads, then processing percent."""
    r = job.record
    if job.sample.mode == "push" and job.state in ("queued", "creating", "uploading"):
        return "upload", r.get("bytes_done") or 0, r.get("bytes_total") or job.sample.size
    return "processing", r.get("progress") or 0, 100


def _detail(job: DemoJob) -> str:
    r = job.record
    if job.state in ("failed", "cancelled"):
        return _error(r)[:60]
    if job.state == "ready":
        return f"id {_entity(r)}"
    if job.phase == "upload":
        return f"{(r.get('bytes_done') or 0) / MB:.1f} / {job.sample.size / MB:.1f} MB"
    return f"{r['progress']} %" if r.get("progress") is not None else ""


def _check_alive(fleet: Fleet) -> None:
    for proc in fleet.group.procs if fleet.group else ():
        if not proc.alive():
            raise ChildFailed(proc, "exited unexpectedly")
    if fleet.redis and fleet.redis.proc and fleet.redis.proc.poll() is not None:
        raise DemoError(f"the embedded Redis exited; see {fleet.redis.data_dir / 'redis.log'}")


def _watch(fleet: Fleet) -> None:
    while True:
        _check_alive(fleet)
        time.sleep(1)


# -- reporting ----------------------------------------------------------------------------

def _print_summary(jobs: list[DemoJob], console: Console) -> None:
    table = Table(title="Demo jobs", title_justify="left")
    for name in ("job", "provider", "mode", "size", "state", "seconds", "provider id", "error"):
        table.add_column(name, justify="right" if name in ("size", "seconds", "provider id") else "left")
    for job in jobs:
        r = job.record
        table.add_row(job.id[:8], job.sample.provider, job.sample.mode, f"{job.sample.size // MB} MB",
                      _styled(job.state),
                      f"{_seconds(r):.1f}", _entity(r), _error(r) or "-")
    ready = sum(job.state == "ready" for job in jobs)
    console.print()
    console.print(table)
    console.print(f"{ready} of {len(jobs)} jobs ready.", style="bold green" if ready == len(jobs) else "bold red")


def _entity(record: Mapping[str, Any]) -> str:
    """The provider's id of what the job made: a video, a file, a media item."""
    ids = record.get("provider_ids", {})
    return str(ids.get("video_id") or ids.get("file_id") or ids.get("media_item_id") or "-")


def _print_access(fleet: Fleet, console: Console, *, keep: bool) -> None:
    user, password = fleet.settings["FLOWER_BASIC_AUTH"].split(":", 1)
    console.print(f"Flower  {fleet.flower_url}  user {user}  password {password}", highlight=False)
    if not keep:
        console.print("        (stopped with the demo; [bold]ingest-fleet demo --keep[/] leaves it running)")
    console.print(f"Logs    {HOME / 'logs'}/  (one file per process)", highlight=False)


def _print_exports(fleet: Fleet, console: Console) -> None:
    console.print("\nThe fleet keeps running. Use it from another shell (try: ingest-fleet jobs):")
    # Plain output: rich would wrap long lines, and these are meant to be pasted.
    exports = [f"export {key}={shlex.quote(value)}" for key, value in fleet.settings.items()]
    console.out("\n".join(exports) + f"\n# Flower: {fleet.flower_url}", highlight=False)
    console.print("Press Ctrl-C to stop everything.")


def _styled(state: str, width: int = 0) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state:<{width}}[/]"


def _seconds(record: Mapping[str, Any]) -> float:
    end = record.get("finished_at") or time.time()
    return end - record.get("created_at", end)


def _error(record: Mapping[str, Any]) -> str:
    error = record.get("error") or {}
    return f"{error.get('step')}: {error.get('message')}" if error else ""


# -- stopping -----------------------------------------------------------------------------

def _shutdown(fleet: Fleet, console: Console) -> None:
    if not (fleet.group and fleet.group.procs) and not (fleet.redis and fleet.redis.proc):
        return
    console.print("Stopping the fleet...")
    # Held, not ignored: a second Ctrl-C must not cut the shutdown short and orphan a child.
    with _interrupts_held(replay=False):
        if fleet.group:
            fleet.group.stop_all()
        if fleet.redis:
            fleet.redis.stop()
    console.print("Stopped.")


def _raise_interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def _stop_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _interrupts_held(*, replay: bool) -> Iterator[None]:
    """Hold SIGINT/SIGTERM during a critical section; with ``replay``, act on them after it."""
    received: list[int] = []
    with _stop_signals(lambda signum, _frame: received.append(signum)):
        yield
    if received and replay:
        raise KeyboardInterrupt
