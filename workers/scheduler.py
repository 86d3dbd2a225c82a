"""The scheduler: moves due dispatches from the Redis schedule onto their queues.

Waiting never holds a worker (ARCHITECTURE.md, principle 4): polls, backoffs and
deferrals are entries in one sorted set scored by due time (Redis clock). This loop claims
due entries atomically (``schedule_claim.lua``), publishes each as a Celery message, then
forgets it. A claim that is not published within ``CLAIM_SECONDS`` (its scheduler died)
becomes due again, so several schedulers may run side by side: a rare duplicate is dropped
by the task-id check in tasks.steps, and nothing is lost.

Beside the loop, on a thread of its own, it does the fleet's housekeeping: the reaper gives
back slots of jobs that ended without doing so (tasks.lifecycle.reap), and the reconciler
re-enqueues jobs in progress that nothing will run any more (tasks.reconcile.Reconciler): a
message lost in kombu's short window between a worker's BRPOP and its write to ``unacked``
when that worker is killed, or writes a Redis lost. Chores read the whole backlog (in pages):
on the publishing loop, a pass over 100,000 jobs held every due poll back for as long as it
took.

Run it with ``ingest-fleet scheduler``.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources

import redis

from tasks import logs as fleet_logging
from tasks.dispatch import publish
from tasks.jobstore import SCHEDULE_CLAIMED_KEY, SCHEDULE_KEY
from tasks.lifecycle import reap
from tasks.logs import get_logger
from tasks.reconcile import Reconciler
from tasks.retention import prune
from tasks.runtime import runtime
from workers.health import start_heartbeat

log = get_logger("ingest.scheduler")

CLAIM_SECONDS = 30
BATCH = 200
#: How often the ledger of provider slots and the backlog are checked for ended jobs.
REAP_SECONDS = 15.0
PRUNE_SECONDS = 3600.0  # the jobs index loses the entries of expired records (tasks.retention)


class Chore:
    """Housekeeping the scheduler runs every ``every`` seconds on its chores thread; ``run``
    returns how many things it fixed (logged when not 0)."""

    def __init__(self, name: str, every: float, run: Callable[[], int]):
        self.name, self.every, self.run = name, every, run
        self.due = time.monotonic() + every


class Scheduler:
    def __init__(self, client: redis.Redis, *, idle_sleep: float = 0.1, chores: Sequence[Chore] = ()):
        self.redis = client
        self.idle_sleep = idle_sleep
        self.chores = [c for c in chores if c.every > 0]
        self._claim = client.register_script(
            resources.files("workers").joinpath("lua", "schedule_claim.lua").read_text())
        self._stop = threading.Event()

    def tick(self) -> int:
        """Publish every due dispatch (up to one batch); returns how many."""
        members = self._claim(keys=[SCHEDULE_KEY, SCHEDULE_CLAIMED_KEY], args=[BATCH, CLAIM_SECONDS])
        for raw in members:
            m = raw.decode() if isinstance(raw, bytes) else raw
            try:
                publish(m)
            except Exception:
                log.exception("scheduler.publish_failed", member=m)
                continue  # stays claimed; due again after CLAIM_SECONDS
            self.redis.zrem(SCHEDULE_CLAIMED_KEY, m)
        return len(members)

    def run(self) -> None:
        log.info("scheduler.started")
        chores = threading.Thread(target=self._run_chores, name="scheduler-chores", daemon=True)
        chores.start()
        while not self._stop.is_set():
            try:
                published = self.tick()
            except redis.RedisError as exc:
                log.warning("scheduler.redis_unavailable", error=str(exc))
                self._stop.wait(1.0)
                continue
            if published < BATCH:
                self._stop.wait(self.idle_sleep)
        chores.join(timeout=5)
        log.info("scheduler.stopped")

    def _run_chores(self) -> None:
        """The chores, each when due, until the scheduler stops (a thread of their own: the
        Redis client's pool gives it its own connection). A chore that fails is logged and
        runs again when next due; it never stops the publishing loop."""
        while not self._stop.is_set():
            for chore in self.chores:
                if self._stop.is_set() or time.monotonic() < chore.due:
                    continue
                try:
                    fixed = chore.run()
                except redis.RedisError as exc:
                    log.warning("scheduler.redis_unavailable", chore=chore.name, error=str(exc))
                    fixed = 0
                except Exception:
                    log.exception("scheduler.chore_failed", chore=chore.name)
                    fixed = 0
                chore.due = time.monotonic() + chore.every
                if fixed:
                    log.info(f"scheduler.{chore.name}", entries=fixed)
            due = min((c.due for c in self.chores), default=time.monotonic() + 1.0)
            self._stop.wait(max(0.05, min(1.0, due - time.monotonic())))

    def stop(self, *_: object) -> None:
        self._stop.set()


def main() -> None:
    fleet_logging.configure()
    rt = runtime()
    start_heartbeat()
    scheduler = Scheduler(rt.redis, chores=[
        Chore("reaped", REAP_SECONDS, lambda: reap(rt)),
        Chore("pruned", PRUNE_SECONDS, lambda: prune(rt).dangling),
        Chore("reconciled", rt.settings.reconcile_seconds, Reconciler(rt)),
    ])
    signal.signal(signal.SIGTERM, scheduler.stop)
    signal.signal(signal.SIGINT, scheduler.stop)
    scheduler.run()


if __name__ == "__main__":
    main()
