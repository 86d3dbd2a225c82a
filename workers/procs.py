"""Starting and stopping the fleet's processes (demo, tests, benchmarks).

Each process runs in its own session (process group) with its output in a log file, and is
stopped with SIGTERM, then SIGKILL of the whole group after a grace period, so no pool
child is ever left behind.

Example::

    with ProcessGroup(env, log_dir) as group:
        group.start("scheduler", scheduler_argv())
        group.start("worker", worker_argv(["gcore.api"], concurrency=2))
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tasks.queues import all_queues


def worker_argv(queues: Sequence[str] | None = None, *, concurrency: int = 2, name: str = "worker",
                loglevel: str = "INFO") -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.app", "worker",
            "-Q", ",".join(queues or all_queues()), "-c", str(concurrency), "-n", f"{name}@%h",
            "--loglevel", loglevel, "--without-mingle", "--without-gossip"]


def scheduler_argv() -> list[str]:
    return [sys.executable, "-m", "workers.scheduler"]


def flower_argv(port: int, address: str = "127.0.0.1") -> list[str]:
    # Basic auth comes from FLOWER_BASIC_AUTH in the environment, never from argv (ps shows argv).
    return [sys.executable, "-m", "celery", "-A", "workers.app", "flower", f"--port={port}",
            f"--address={address}", "--purge_offline_workers=60", "--max_tasks=10000",
            # The arguments column reads (provider=…, account=…, step=…, job=…): which job a task is.
            "--tasks_columns=name,uuid,state,args,received,runtime,worker"]


def webhooks_argv(port: int, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "workers.cli", "webhooks", "--host", host, "--port", str(port)]


def sandbox_argv(port: int, data_dir: str | Path, media_dir: str | Path | None = None,
                 processing_seconds: float = 3.0) -> list[str]:
    argv = [sys.executable, "-m", "sandbox", "--port", str(port), "--data-dir", str(data_dir),
            "--processing-seconds", str(processing_seconds)]
    if media_dir:
        argv += ["--media-dir", str(media_dir)]
    return argv


class Proc:
    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(self.argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL the whole process group."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # leftovers, e.g. pool children
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.close()
        return self.popen.returncode

    def close(self) -> None:
        """Close this side of the log file (the process keeps writing to its own copy)."""
        self._log.close()

    def kill9(self) -> None:
        """What an OOM killer or a lost host does: the parent and every child, at once."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(10)

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class ProcessGroup:
    """The processes one run started; stopped in reverse order."""

    def __init__(self, env: Mapping[str, str], log_dir: str | Path):
        self.env = dict(env)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, {**self.env, **(env or {})}, self.log_dir / f"{name}.log")
        self.procs.append(proc)
        return proc

    def wait_for_line(self, proc: Proc, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in proc.tail(200_000):
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{proc.name} did not print {needle!r} in {timeout:g} s:\n{proc.tail()}")
            time.sleep(0.1)

    def stop_all(self, grace: float = 15.0) -> None:
        for proc in reversed(self.procs):
            proc.stop(grace)
        self.procs.clear()

    def kill_all(self) -> None:
        """SIGKILL every process group (a test's teardown: the next test starts from
        a wiped Redis and a reset sandbox, so a graceful stop would only cost seconds)."""
        for proc in self.procs:
            proc.kill9()
            proc.close()
        self.procs.clear()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop_all()
