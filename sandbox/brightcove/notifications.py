"""Brightcove's Dynamic Ingest notifications: the callbacks of an ingest job, delivered in order.

Notifications (B5). For each URL in ``callbacks`` the emulator POSTs, from a background
thread, one JSON notification per rendition (``entityType: "DYNAMIC_RENDITION"``) when
the job is published, then a final ``entityType: "TITLE"`` one (``status`` ``SUCCESS``,
or ``FAILED`` with ``errorMessage``); TITLE is documented for legacy ingest only, so
``title_notifications: false`` sends the documented Dynamic Delivery renditions alone. A
job's notifications go out in order; a POST that fails (network error or non-2xx, 5 s
timeout) is tried up to 3 times, 1 s then 2 s apart (Brightcove's own DI retry policy is
not documented). Each delivery is recorded in the state's ``callbacks_sent``.
``callback_duplicates: true`` sends every final TITLE notification twice.
"""

from __future__ import annotations

import time
from typing import Any

from ..notify import post_json
from .cms import Video
from .ingest import Job

CALLBACK_TIMEOUT = 5.0
CALLBACK_BACKOFF = (1.0, 2.0)  # waits before the 2nd and 3rd attempt


class Notifications:
    """Callback delivery, mixed into the emulator (whose ``__init__`` declares ``_callbacks_sent``
    and the ``_deliveries`` pool)."""

    def _notify_title(self, video: Video, job: Job, note: dict[str, Any]) -> None:
        if self.ctx.setting("title_notifications"):
            self._notify(video, job, [note] * (2 if self.ctx.setting("callback_duplicates") else 1))

    def _rendition_notification(self, job: Job, rendition: str) -> dict[str, Any]:
        note = {"entity": rendition, "entityType": "DYNAMIC_RENDITION", "version": "1", "action": "CREATE",
                "jobId": job.id, "videoId": job.video_id, "dynamicRenditionId": rendition}
        if "/audio" in rendition:
            note.update(language="en", variant="main")
        return {**note, "accountId": self.account_id, "status": "SUCCESS"}

    def _title_notification(self, job: Job, status: str, error: str | None = None) -> dict[str, Any]:
        note = {"entity": job.video_id, "entityType": "TITLE", "version": "1", "action": "CREATE", "jobId": job.id,
                "videoId": job.video_id, "accountId": self.account_id, "status": status}
        if error is not None:
            note["errorMessage"] = error
        return note

    def _notify(self, video: Video, job: Job, notes: list[dict[str, Any]]) -> None:
        """Queue notifications for the job's callbacks; one delivery thread per job keeps their order."""
        if not job.callbacks or self.ctx.stopping.is_set():
            return
        with self._lock:
            job.outbox.extend(notes)
            if job.delivering:
                return
            job.delivering = True
        self._deliveries.submit(self._deliver, video, job)

    def _deliver(self, video: Video, job: Job) -> None:
        while True:
            with self._lock:
                if not job.outbox or not self._alive(video):
                    job.outbox.clear()
                    job.delivering = False
                    return
                note = job.outbox.popleft()
            for url in job.callbacks:
                self._post(url, note)

    def _post(self, url: str, note: dict[str, Any]) -> None:
        """POST one notification: up to 3 attempts, 1 s then 2 s apart; the outcome goes to ``callbacks_sent``."""
        sent = post_json(url, note, timeout=CALLBACK_TIMEOUT, backoff=CALLBACK_BACKOFF, stopping=self.ctx.stopping)
        if sent is None:
            return
        with self._lock:
            self._callbacks_sent.append({"t": time.time(), "url": url, "payload": note, "status": sent.status,
                                         "attempts": sent.attempts, "error": sent.error})
