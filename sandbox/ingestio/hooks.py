"""Ingest.io webhooks: the hooks a network registers, and the delivery of events to them.

Webhooks (docs: webhooks/*, events/*). ``POST /hooks {event_names, url, enabled?
(default true), secret?}`` -> 201 ``{id, event_names, url, enabled, secret, created_at}``
(a 16-hex-digit secret is generated if none is given); event names must be among the
documented ones. The emulator emits ``videos.create``, ``videos.update`` (status changes),
``inputs.complete``, ``inputs.cancelled``, ``jobs.create``, ``jobs.complete`` and
``jobs.error``. For each enabled hook subscribed to the event it POSTs, from a background
thread, ``{"event", "URL": <API URL of the resource>, "event_object": {"event_id",
"network_id", "event_name", "created_at", "data": <the resource as GET answers it>}}``
with ``X-Ingest-Signature`` (hex HMAC-SHA1 of the raw body keyed with the hook's secret),
``X-Ingest-Request-Attempt`` (1..3) and, on attempts 2 and 3, ``X-Ingest-Retry-Reason``
(why the previous one failed: ``HTTP 500``, or the network error). Up to 3 attempts
(non-2xx or network error, 5 s timeout), 0.5 s then 1 s apart; an answer carrying
``X-Ingest-No-Retry`` ends them. Each delivery goes to the state's ``webhooks_sent``;
``webhook_duplicates: true`` sends each twice (same ``event_id``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..notify import post_json
from ..web import Request, Response, json_response
from .api import _body, _error, _now, _string

#: The documented event names (events/supported.md); hooks may subscribe to any of them.
EVENTS = (
    "users.delete", "videos.create", "videos.update", "videos.delete", "videos.thumbnails.create",
    "videos.thumbnails.delete", "inputs.create", "inputs.complete", "inputs.update", "inputs.delete",
    "inputs.cancelled", "jobs.create", "jobs.error", "jobs.complete", "networks.update", "networks.update_status",
    "networks.users.create", "networks.users.delete", "networks.keys.create", "networks.keys.update",
    "networks.keys.delete", "profiles.create", "profiles.update", "profiles.delete", "roles.create",
    "roles.update", "roles.delete",
)
WORKERS = 8  # concurrent webhook deliveries
WEBHOOK_TIMEOUT = 5.0
WEBHOOK_BACKOFF = (0.5, 1.0)  # waits before the 2nd and 3rd attempt
NO_RETRY_HEADER = "X-Ingest-No-Retry"


@dataclass
class Hook:
    id: str
    event_names: list[str]
    url: str
    enabled: bool
    secret: str
    created_at: str


class Hooks:
    """The hooks resource and event delivery, mixed into the emulator (whose :meth:`clear`
    declares ``_hooks`` and ``_webhooks_sent``)."""

    def _create_hook(self, req: Request) -> Response:
        body = _body(req)
        names = body.get("event_names")
        if names is None:
            raise _error(400, "event_names is required")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise _error(400, "event_names must be a non-empty array of event names")
        unknown = [n for n in names if n not in EVENTS]
        if unknown:
            raise _error(400, f"event_names: unknown events {', '.join(unknown)}")
        url = _string(body, "url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _error(400, "url must be an http(s) URL")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _error(400, "enabled must be true or false")
        secret = _string(body, "secret", required=False) or secrets.token_hex(8)
        hook = Hook(str(uuid.uuid4()), list(dict.fromkeys(names)), url, enabled, secret, _now())
        with self._lock:
            self._hooks[hook.id] = hook
        req.entity = hook.id
        return json_response(_hook_json(hook), 201)

    def _list_hooks(self, req: Request) -> Response:
        with self._lock:
            items = [_hook_json(h) for h in self._hooks.values()]
        return self._page(req, items)

    def _get_hook(self, req: Request) -> Response:
        """A hook by id, or (as the docs' ``GET /hooks/<event>``) the hooks of an event."""
        name = req.params["hook_id"]
        with self._lock:
            hook = self._hooks.get(name)
            if hook is not None:
                return json_response(_hook_json(hook))
            if name not in EVENTS:
                raise _error(404, f"hook {name} not found")
            items = [_hook_json(h) for h in self._hooks.values() if name in h.event_names]
        return self._page(req, items)

    def _delete_hook(self, req: Request) -> Response:
        with self._lock:
            if self._hooks.pop(req.params["hook_id"], None) is None:
                raise _error(404, f"hook {req.params['hook_id']} not found")
        return Response(204)

    def _emit(self, event: str, url: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for every enabled hook subscribed to it; caller holds the lock."""
        hooks = [h for h in self._hooks.values() if h.enabled and event in h.event_names]
        if not hooks or self.ctx.stopping.is_set():
            return
        event_object = {"event_id": str(uuid.uuid4()), "network_id": self.network_id, "event_name": event,
                        "created_at": _now(), "data": data}
        body = json.dumps({"event": event, "URL": url, "event_object": event_object}, separators=(",", ":")).encode()
        copies = 2 if self.ctx.setting("webhook_duplicates") else 1
        for hook in hooks:
            signature = hmac.new(hook.secret.encode(), body, hashlib.sha1).hexdigest()
            self._deliveries.submit(self._deliver, self._generation, hook, event, event_object["event_id"], body,
                                    signature, copies)

    def _deliver(self, generation: int, hook: Hook, event: str, event_id: str, body: bytes, signature: str,
                 copies: int) -> None:
        """POST one event to one hook ``copies`` times: up to 3 attempts each, recorded in ``webhooks_sent``."""

        def headers(attempt: int, previous_error: str | None) -> dict[str, str]:
            out = {"X-Ingest-Signature": signature, "X-Ingest-Request-Attempt": str(attempt)}
            if previous_error is not None:
                out["X-Ingest-Retry-Reason"] = " ".join(previous_error.split())  # one header line
            return out

        for _ in range(copies):
            sent = post_json(hook.url, body, timeout=WEBHOOK_TIMEOUT, backoff=WEBHOOK_BACKOFF,
                             stopping=self.ctx.stopping, headers=headers, no_retry_header=NO_RETRY_HEADER)
            if sent is None:
                return
            with self._lock:
                if generation != self._generation:
                    return  # sent before a reset: not this test's
                self._webhooks_sent.append({
                    "t": time.time(), "event": event, "event_id": event_id, "hook_id": hook.id, "url": hook.url,
                    "status": sent.status, "attempts": sent.attempts, "error": sent.error, "no_retry": sent.no_retry,
                    "payload": json.loads(body),
                })


def _hook_json(h: Hook) -> dict[str, Any]:
    return {"id": h.id, "event_names": list(h.event_names), "url": h.url, "enabled": h.enabled, "secret": h.secret,
            "created_at": h.created_at}
