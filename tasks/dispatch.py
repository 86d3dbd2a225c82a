"""Dispatching a job's next step: record it, then publish it (an outbox in Redis).

The job record names the one dispatch (Celery task id ``<job>.<seq>.<step>``) that may
drive it next. A dispatch is first written to the schedule zset in the same atomic write
as the record (due after a grace period), then published, then removed from the schedule.
A process that dies between the write and the publish leaves it in the schedule, where
the scheduler publishes it: nothing is lost, and a duplicate is dropped by the task-id check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.queues import PRIORITY, STEP_TASK, member, parse_member, parse_task_id, queue_for, task_id
from tasks.runtime import Runtime, runtime

if TYPE_CHECKING:
    from tasks.jobstore import Job

#: How long a written-but-unpublished dispatch waits before the scheduler publishes it.
OUTBOX_GRACE = 30.0


def next_dispatch(job: Job, step: str) -> str:
    """Point the job at a new dispatch of ``step``; returns its schedule member."""
    seq = int(job.dispatch.get("seq", 0)) + 1
    tid = task_id(job.id, seq, step)
    queue = queue_for(job.provider, step, job.account)
    job.dispatch = {"task_id": tid, "step": step, "seq": seq, "queue": queue,
                    "member": member(queue, tid, PRIORITY[job.priority])}
    job.step = step
    return str(job.dispatch["member"])


def publish(schedule_member: str, rt: Runtime | None = None) -> None:
    """Send the Celery message of one dispatch (through ``rt``'s broker, else this process's)."""
    queue, tid, priority = parse_member(schedule_member)
    job_id, _seq, step = parse_task_id(tid)
    provider, _kind, account = (queue.split(".") + ["default"])[:3]
    # What Flower shows as the task's arguments: which job, where, which step (never a secret).
    shown = f"(provider={provider}, account={account}, step={step}, job={job_id})"
    (rt or runtime()).celery.send_task(STEP_TASK[step], args=[job_id], task_id=tid, queue=queue, routing_key=queue,
                                       priority=priority, argsrepr=shown)
