"""Ittybit ingest tasks: create, list and get them, and their processing in the background.

Tasks. ``POST /tasks`` ``{kind: "ingest", url, filename?, folder?, ref?}`` answers 201 with
the Task (``id`` ``task_…``, ``object``, ``kind``, ``status``, ``progress``, ``error``,
``input`` ``{url, filename, folder}``, ``options`` ``{ref}`` (as the reference's example
echoes ``ref`` there), ``output``, ``results``, ``created``, ``updated``); other
kinds are not emulated (400). Over ``processing_seconds`` (the Sandbox's, or the ittybit
fault config's; 0 = instant) the task goes ``pending`` (progress 0) -> ``processing`` (10
at 20 %, 50 once the source is fetched and checked) -> ``completed`` (100, 80 % later) with
``output`` = the File, or ends ``failed`` with ``error: {"message": ...}``: ``Could not
fetch url``, ``Unsupported file type``, or ``Processing failed`` when the
``ittybit.processing`` stage fails (a ``fail`` rule or ``processing_fail_rate``). As in the
seed, ``output.status`` is ``complete`` in the envelope shape; the bare shape says
``succeeded`` for the task (I7) and ``ready`` for its File.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..web import Request, Response, json_response
from .api import TASK_FIELDS, _new_id, _now, _optional_str
from .files import StoredFile, _default_filename, _Rejected


@dataclass
class Task:
    id: str
    url: str
    filename: str | None
    folder: str | None
    ref: str | None
    created: str
    updated: str
    status: str = "pending"  # pending, processing, completed, failed (the envelope's names)
    progress: int = 0
    error: str | None = None
    source: tuple[Path, int, str] | None = None  # fetched and checked: (path, size, type)
    file: StoredFile | None = None


class Tasks:
    """The tasks resource and task processing, mixed into the emulator (whose ``__init__`` declares ``_tasks``)."""

    def _task_json(self, t: Task, shape: str) -> dict[str, Any]:
        """The Task; caller holds the lock. The shape decides the success vocabulary (see Tasks)."""
        status = "succeeded" if shape == "bare" and t.status == "completed" else t.status
        output = None
        if t.file is not None:
            output = self._file_json(t.file, "ready" if shape == "bare" else "complete")
        return {
            "id": t.id, "object": "task", "kind": "ingest", "status": status, "progress": t.progress,
            "error": {"message": t.error} if t.error else None, "input": _task_input(t),
            "options": {"ref": t.ref} if t.ref else {}, "output": output, "results": None,
            "created": t.created, "updated": t.updated,
        }

    def _task_payload(self, shape: str, t: Task) -> Any:
        return self._envelope(shape, self._task_json(t, shape), f"{self._base}/tasks/{t.id}")

    def _create_task(self, req: Request) -> Response:
        """``POST /tasks`` ``kind: "ingest"``: 201 ``pending``; the source is fetched in the background."""
        shape = self._api(req)
        if "webhook_url" in (body := self._json_body(req, shape)):  # changelog 2025-12-01; the 400 is assumed
            raise self._error(shape, 400, "webhook_url is no longer supported: register a webhook endpoint "
                                          "(POST /webhooks/endpoints)", "request_invalid")
        self._check_fields(body, TASK_FIELDS, shape)
        kind = body.get("kind")
        if kind is None:
            raise self._error(shape, 400, "kind is required", "request_invalid")
        if kind != "ingest":
            raise self._error(shape, 400, f"kind {kind!r} is not supported: the sandbox emulates 'ingest' tasks",
                              "request_invalid")
        url, filename, folder, _ = self._ingest_fields(body, shape)
        ref = _optional_str(body, "ref", self._invalid(shape))
        now = _now()
        task = Task(id=_new_id("task_"), url=url, filename=filename, folder=folder, ref=ref, created=now, updated=now)
        with self._lock:
            self._tasks[task.id] = task
            answer = self._task_payload(shape, task)
            self._emit(task, "task.created")
        req.entity = task.id
        self._after(0.2, self._start, task)
        return json_response(answer, 201)

    def _get_task(self, req: Request) -> Response:
        shape = self._api(req)
        with self._lock:
            task = self._tasks.get(req.params["task_id"])
            if task is None:
                raise self._error(shape, 404, "Task not found", "task_not_found")
            return json_response(self._task_payload(shape, task))

    def _list_tasks(self, req: Request) -> Response:
        """``GET /tasks``: newest first, paged by ``limit`` and ``page``."""
        shape = self._api(req)
        with self._lock:
            tasks = [self._task_json(t, shape) for t in reversed(self._tasks.values())]
        return self._list_response(req, shape, tasks, "/tasks")

    def _after(self, fraction: float, step: Callable[[Task], None], task: Task) -> None:
        """Run ``step(task)`` after ``fraction`` of ``processing_seconds`` (at once if 0)."""
        seconds = self.ctx.processing_seconds()
        if seconds > 0:
            self.ctx.scheduler.call_later(fraction * seconds, step, task)
        else:
            step(task)

    def _start(self, task: Task) -> None:
        # The fetch may take minutes: off the scheduler's (or the request's) thread.
        if not self.ctx.stopping.is_set():
            self._fetches.submit(self._ingest, task)

    def _ingest(self, task: Task) -> None:
        with self._lock:
            if not self._alive(task):
                return
            task.status, task.progress, task.updated = "processing", 10, _now()
            self._emit(task, "task.updated")
        try:
            source = self._acquire(task.url, lambda: self._alive(task))
        except _Rejected as exc:
            self._end(task, error=str(exc))
            return
        with self._lock:
            if not self._alive(task):
                source[0].unlink(missing_ok=True)
                return
            task.source, task.progress, task.updated = source, 50, _now()
            self._emit(task, "task.updated")
        self._after(0.8, self._complete, task)

    def _complete(self, task: Task) -> None:
        """Processing is over: a failure here is the ``ittybit.processing`` stage's."""
        failed = self.ctx.stage_fails("ittybit.processing")
        with self._lock:
            if not self._alive(task) or task.source is None:
                return
            path, size, mime = task.source
            if failed:
                path.unlink(missing_ok=True)
                self._end(task, error="Processing failed")
                return
            f = self._add_file(path, size, mime, task.folder, task.filename or _default_filename(task.url),
                               {}, None, task.ref)
            self._end(task, file=f)

    def _end(self, task: Task, *, error: str | None = None, file: StoredFile | None = None) -> None:
        """Terminal state, then the events."""
        with self._lock:
            if not self._alive(task):
                return
            task.status = "failed" if error else "completed"
            if file is not None:
                task.progress = 100
            task.error, task.file, task.source, task.updated = error, file, None, _now()
            self._emit(task, "task.updated")
            self._emit(task, "task.failed" if error else "task.succeeded")

    def _alive(self, task: Task) -> bool:
        """False once the sandbox was reset after the task was created."""
        with self._lock:
            return self._tasks.get(task.id) is task


def _task_input(t: Task) -> dict[str, Any]:
    return {"url": t.url, "filename": t.filename, "folder": t.folder}
