"""Process liveness and shutdown, for containers.

* Heartbeat: worker and scheduler processes touch ``INGEST_HEARTBEAT_FILE`` (default
  ``/tmp/ingest-fleet.heartbeat``) every :data:`BEAT` seconds from a thread of their own;
  ``ingest-fleet health`` exits 0 while it is younger than :data:`STALE`. It never contacts
  Redis, so a Redis outage (the worker reconnects by itself) does not get a container
  restarted; a hung or dead process does.
* Shutdown: on SIGTERM Celery stops taking tasks and waits for the running ones (a warm
  shutdown). The worker also tells its pool processes (SIGUSR2), and a running upload slice
  then ends at its next chunk: it checkpoints and hands the job on, as when its time is up,
  instead of running on for up to ``INGEST_SLICE_SECONDS``.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from tasks.shutdown import request_stop

BEAT = 10.0
STALE = 60.0


def heartbeat_file() -> str:
    return os.environ.get("INGEST_HEARTBEAT_FILE", "/tmp/ingest-fleet.heartbeat")


def start_heartbeat() -> None:
    """Touch the heartbeat file now and every :data:`BEAT` seconds (daemon thread)."""
    path = heartbeat_file()

    def beat() -> None:
        while True:
            try:
                with open(path, "a"):
                    os.utime(path)
            except OSError:
                pass  # a read-only or full /tmp shows as a failing probe, which is right
            time.sleep(BEAT)

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()


def healthy(max_age: float = STALE) -> bool:
    try:
        return time.time() - os.path.getmtime(heartbeat_file()) < max_age
    except OSError:
        return False


def install_child_handler() -> None:
    """In a pool process: SIGUSR2 means "the worker is shutting down, finish up"."""
    signal.signal(signal.SIGUSR2, lambda *_: request_stop())


def tell_children() -> None:
    """In the worker's main process: send SIGUSR2 to every pool process."""
    from billiard.process import active_children

    request_stop()
    for child in active_children():
        try:
            os.kill(child.pid, signal.SIGUSR2)
        except (OSError, TypeError):
            pass
