"""Ittybit webhooks: the Webhook Endpoints a project registers, and the delivery of task events to them.

Webhooks (ittybit.com/docs/webhooks, changelog 2025-12-01). ``POST /webhooks/endpoints
{url, topics}`` answers 201 ``{id we_…, object: "webhook_endpoint", url, topics, status:
"active", created_at, updated_at}`` (unix seconds); ``url`` must be https ("HTTP endpoints
will be rejected"; the sandbox lets a loopback http URL through), ``topics`` a non-empty
list of task.created|updated|succeeded|failed, run.* (runs are not emulated). A task's
creation, status/progress changes and end send ``{id evt_…, object: "event", kind, data:
<the task, bare vocabulary>, created_at}`` to every active endpoint subscribed to the kind,
from a background thread: up to 3 attempts (network error or non-2xx, 5 s timeout), 1 s then
2 s apart. No signature header (none is documented). Each delivery is recorded in the state's
``webhooks_sent`` (and the endpoints in ``webhook_endpoints``); ``webhook_duplicates: true``
sends each twice; a reset forgets the endpoints, as a provider that lost them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..notify import post_json
from ..web import Request, Response, json_response
from .api import _new_id
from .tasks import Task

#: Webhook Endpoint topics (ittybit.com/docs/webhooks, changelog 2025-12-01).
TOPICS = ("task.created", "task.updated", "task.succeeded", "task.failed",
          "run.created", "run.updated", "run.succeeded", "run.failed")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WEBHOOK_TIMEOUT = 5.0  # Ittybit expects an answer within 5 s (I5)
WEBHOOK_BACKOFF = (1.0, 2.0)  # waits before the 2nd and 3rd attempt


@dataclass
class WebhookEndpoint:
    """A Webhook Endpoint (``POST /webhooks/endpoints``): every event of its topics goes to ``url``."""

    id: str
    url: str
    topics: list[str]
    created_at: int
    status: str = "active"

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "object": "webhook_endpoint", "url": self.url, "topics": list(self.topics),
                "status": self.status, "created_at": self.created_at, "updated_at": self.created_at}


class Webhooks:
    """Webhook Endpoints and event delivery, mixed into the emulator (whose ``__init__`` declares
    ``_endpoints`` and ``_webhooks_sent``)."""

    def _emit(self, task: Task, kind: str) -> None:
        """Send the task's ``kind`` event to every active endpoint subscribed to it; caller holds the lock.
        The event is ``{id evt_…, object: "event", kind, data: <task>, created_at}`` with the task
        in the later (bare) vocabulary, as ittybit.com/docs/webhooks shows it."""
        urls = [e.url for e in self._endpoints.values() if e.status == "active" and kind in e.topics]
        if not urls or self.ctx.stopping.is_set():
            return
        event = {"id": _new_id("evt_", 16), "object": "event", "kind": kind, "data": self._task_json(task, "bare"),
                 "created_at": int(time.time())}
        copies = 2 if self.ctx.setting("webhook_duplicates") else 1
        for url in urls:
            self._deliveries.submit(self._deliver, task.id, url, event, copies)

    def _create_endpoint(self, req: Request) -> Response:
        """``POST /webhooks/endpoints {url, topics}`` -> 201 Webhook Endpoint (ittybit.com/docs/webhooks)."""
        shape = self._api(req)
        body = self._json_body(req, shape, frozenset({"url", "topics"}))
        invalid = self._invalid(shape)
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise invalid("url is required")
        parts = urlsplit(url)
        # "HTTP endpoints will be rejected"; the sandbox lets a loopback receiver use http.
        if not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)):
            raise invalid("url must be an https URL")
        topics = body.get("topics")
        if not isinstance(topics, list) or not topics or any(t not in TOPICS for t in topics):
            raise invalid(f"topics must be a non-empty list of: {', '.join(TOPICS)}")
        endpoint = WebhookEndpoint(_new_id("we_", 16), url, list(dict.fromkeys(topics)), int(time.time()))
        with self._lock:
            self._endpoints[endpoint.id] = endpoint
        return json_response(self._envelope(shape, endpoint.json(), f"{self._base}/webhooks/endpoints/{endpoint.id}"),
                             201)

    def _list_endpoints(self, req: Request) -> Response:
        shape = self._api(req)
        with self._lock:
            endpoints = [e.json() for e in reversed(self._endpoints.values())]
        return self._list_response(req, shape, endpoints, "/webhooks/endpoints")

    def _delete_endpoint(self, req: Request) -> Response:
        shape = self._api(req)
        with self._lock:
            if self._endpoints.pop(req.params["endpoint_id"], None) is None:
                raise self._error(shape, 404, "Webhook endpoint not found", "webhook_endpoint_not_found")
        return Response(204)

    def _deliver(self, task_id: str, url: str, payload: Any, copies: int) -> None:
        for _ in range(copies):
            self._post(task_id, url, payload)

    def _post(self, task_id: str, url: str, payload: Any) -> None:
        """POST one webhook: up to 3 attempts, 1 s then 2 s apart; the outcome goes to ``webhooks_sent``."""
        sent = post_json(url, payload, timeout=WEBHOOK_TIMEOUT, backoff=WEBHOOK_BACKOFF, stopping=self.ctx.stopping)
        if sent is None:
            return
        with self._lock:
            self._webhooks_sent.append({"t": time.time(), "task_id": task_id, "url": url, "payload": payload,
                                        "status": sent.status, "attempts": sent.attempts, "error": sent.error})
