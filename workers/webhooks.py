"""The webhook receiver: providers' notifications complete a job's wait early.

Waiting is polling with backoff (the safety net); a provider that can call back (Brightcove
Dynamic Ingest ``callbacks``, later Ittybit, Ingest.io, Once) is given a per-job URL::

    {INGEST_WEBHOOK_URL}/{provider}/{job_id}/{token}

where ``token`` is an HMAC of the provider and job id under ``INGEST_WEBHOOK_SECRET``: a
notification for a job nobody gave out a URL for is refused (403), since Brightcove's
callbacks carry no signature of their own. A valid notification does not write the job: it
makes the job's pending status poll due now, and that poll, under the job's lease, reads
the provider's answer (or, for a provider without a status API such as Once, the
notifications kept for the job). So a duplicate, a late or a forged-but-valid-token notification can
at most cause one extra poll; repeated identical notifications are recognised and ignored.

Run it with ``ingest-fleet webhooks [--host 0.0.0.0] [--port 8480]``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from workers.logging import get_logger

log = get_logger("ingest.webhooks")

MAX_BODY = 1 << 20
_PATH = re.compile(r"^/(?P<provider>[a-z0-9]+)/(?P<job_id>[0-9a-f]{32})/(?P<token>[0-9a-f]{32})/?$")


EVENTS_KEPT = 20


def webhook_events(redis: Any, job_id: str) -> list[dict]:
    """The notifications received for a job, oldest first (for providers without a status API)."""
    return [json.loads(raw) for raw in redis.lrange(f"if:webhook:events:{job_id}", 0, -1)]


def token_for(secret: str, provider: str, job_id: str) -> str:
    return hmac.new(secret.encode(), f"{provider}:{job_id}".encode(), hashlib.sha256).hexdigest()[:32]


def callback_url(settings: Any, provider: str, job_id: str) -> str | None:
    """The URL to give ``provider`` for ``job_id``'s notifications, or None without a receiver."""
    if not settings.webhook_url:
        return None
    return f"{settings.webhook_url}/{provider}/{job_id}/{token_for(settings.webhook_secret, provider, job_id)}"


class WebhookReceiver:
    """Accepts provider notifications and makes the job's status poll due now."""

    def __init__(self, rt: Any, host: str = "127.0.0.1", port: int = 0):
        self.rt = rt
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._answer(200 if self.path == "/healthz" else 404, {"ok": self.path == "/healthz"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(413, {"error": "body too large"})
                    return
                raw = self.rfile.read(length)
                status, body = receiver.handle(self.path, raw)
                self._answer(status, body)

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:  # paths hold tokens: never log them raw
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def handle(self, path: str, raw: bytes) -> tuple[int, dict]:
        from tasks.providers import ADAPTERS

        match = _PATH.match(path.split("?", 1)[0])
        if not match or match["provider"] not in ADAPTERS:
            return 404, {"error": "unknown webhook"}
        provider, job_id = match["provider"], match["job_id"]
        expected = token_for(self.rt.settings.webhook_secret, provider, job_id)
        if not hmac.compare_digest(expected, match["token"]):
            log.warning("webhook.refused", provider=provider, job_id=job_id)
            return 403, {"error": "bad token"}
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            return 400, {"error": "body is not JSON"}
        digest = hashlib.sha256(b"%s:%s:" % (provider.encode(), job_id.encode()) + raw).hexdigest()
        if not self.rt.redis.set(f"if:webhook:seen:{digest}", 1, nx=True, ex=86400):
            log.info("webhook.duplicate", provider=provider, job_id=job_id)
            return 200, {"ok": True, "duplicate": True}
        job = self.rt.store.get(job_id)
        if job is None or job.provider != provider:
            return 404, {"error": "unknown job"}
        key = f"if:webhook:events:{job_id}"
        pipe = self.rt.redis.pipeline()
        pipe.rpush(key, json.dumps(payload)[:65536])
        pipe.ltrim(key, -EVENTS_KEPT, -1)
        pipe.expire(key, 7 * 86400)
        pipe.execute()
        relevant = ADAPTERS[provider].webhook_is_relevant(payload)
        log.info("webhook.received", provider=provider, job_id=job_id, relevant=relevant, step=job.step)
        if relevant and not job.terminal and job.step == "await" and job.dispatch.get("member"):
            self.rt.store.schedule(job.dispatch["member"], 0)
        return 200, {"ok": True}

    def serve(self) -> None:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def main(host: str, port: int) -> int:
    from tasks.runtime import runtime
    from workers import logging as fleet_logging

    fleet_logging.configure()
    rt = runtime()
    if not rt.settings.webhook_secret:
        from workers.config import ConfigError

        raise ConfigError("INGEST_WEBHOOK_SECRET is not set; set a long random value shared by the fleet")
    receiver = WebhookReceiver(rt, host, port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    receiver.serve()
    log.info("webhooks.started", port=receiver.port)
    print(f"webhook receiver listening on http://{host}:{receiver.port}", flush=True)
    done.wait()
    receiver.stop()
    return 0
