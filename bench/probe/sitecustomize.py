"""Counts Redis commands and round trips per process, and per Celery task, for the benchmarks.

A benchmark puts this folder first on ``PYTHONPATH`` of the processes it measures (workers,
the scheduler); Python imports ``sitecustomize`` at start. Nothing in the fleet knows of it.

* Every redis-py connection is counted: commands (one per command sent, a pipeline's each)
  and round trips (one per write to the socket: a pipeline is one).
* In a process that runs Celery tasks, what is sent between ``task_prerun`` and
  ``task_postrun`` is counted under the task's name (the step's own Redis work, the publish of
  the next task included); the rest (the consumer's fetch, acks, events, the scheduler) under
  ``""``.
* Each process writes its counts to ``$BENCH_PROBE_DIR/probe-<pid>.json`` twice a second
  (files, not Redis: the counting must not add commands), so a process killed at the end
  still leaves them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict

_DIR = os.environ.get("BENCH_PROBE_DIR")
_counts: dict[str, dict[str, int]] = defaultdict(lambda: {"commands": 0, "round_trips": 0, "tasks": 0})
_current = [""]


def _install() -> None:
    from redis.connection import AbstractConnection

    send_command, pack_commands = AbstractConnection.send_command, AbstractConnection.pack_commands
    send_packed = AbstractConnection.send_packed_command

    def counted_send_command(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _counts[_current[0]]["commands"] += 1
        return send_command(self, *args, **kwargs)

    def counted_pack_commands(self, commands):  # type: ignore[no-untyped-def]
        commands = list(commands)
        _counts[_current[0]]["commands"] += len(commands)
        return pack_commands(self, commands)

    def counted_send_packed(self, command, check_health=True):  # type: ignore[no-untyped-def]
        _counts[_current[0]]["round_trips"] += 1
        return send_packed(self, command, check_health)

    AbstractConnection.send_command = counted_send_command  # type: ignore[method-assign]
    AbstractConnection.pack_commands = counted_pack_commands  # type: ignore[method-assign]
    AbstractConnection.send_packed_command = counted_send_packed  # type: ignore[method-assign]


def _hook_celery() -> None:
    from celery import signals

    def prerun(task=None, **_):  # type: ignore[no-untyped-def]
        _current[0] = task.name
        _counts[task.name]["tasks"] += 1

    def postrun(**_):  # type: ignore[no-untyped-def]
        _current[0] = ""

    signals.task_prerun.connect(prerun, weak=False)
    signals.task_postrun.connect(postrun, weak=False)


def _flush() -> None:
    path = os.path.join(_DIR or ".", f"probe-{os.getpid()}.json")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "counts": dict(_counts)}, f)
    os.replace(tmp, path)


def _flusher() -> None:
    while True:
        time.sleep(0.5)
        try:
            _flush()
        except OSError:
            pass


def _start_flusher() -> None:
    _counts.clear()  # a forked child counts its own
    threading.Thread(target=_flusher, name="bench-probe", daemon=True).start()


if _DIR:
    try:
        _install()
        _hook_celery()
    except ImportError:  # a process without redis or celery: nothing to count
        pass
    else:
        if os.path.isdir(_DIR):  # else (the benchmark itself) the counts stay in memory: snapshot()
            _start_flusher()
            os.register_at_fork(after_in_child=_start_flusher)


def snapshot() -> dict[str, int]:
    """This process's counts so far, over every task name."""
    return {k: sum(c[k] for c in list(_counts.values())) for k in ("commands", "round_trips", "tasks")}


def totals(folder: str) -> dict[str, dict[str, int]]:
    """The counts of every process that wrote into ``folder``, summed by task name."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"commands": 0, "round_trips": 0, "tasks": 0})
    for name in os.listdir(folder):
        if name.startswith("probe-") and name.endswith(".json"):
            with open(os.path.join(folder, name)) as f:
                for task, c in json.load(f)["counts"].items():
                    for k, v in c.items():
                        out[task][k] += v
    return dict(out)
