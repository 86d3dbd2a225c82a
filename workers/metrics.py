"""The fleet's Prometheus exporter: ``ingest-fleet metrics [--host] [--port 9480]``.

Everything it shows is read from Redis at scrape time, so one exporter serves the whole fleet
however many workers run, and it holds no state of its own:

* ``/metrics`` - Prometheus text format: queue length per queue (the messages waiting, all
  priority lists), backlog and oldest-job age per provider account, unfinished jobs by state,
  finished jobs by state, bytes uploaded, throttle waits, cooldowns and the pause left;
* ``/scaling`` - the same queue figures per worker class as JSON, for KEDA's ``metrics-api``
  scaler (``upload.queued``): Flower's ``/metrics`` has no queue length, and KEDA's Redis list
  scaler cannot see Celery's priority sub-lists;
* ``/healthz`` - 200 while the process serves (it does not need Redis: a Redis outage shows as
  ``ingest_redis_up 0``, not as a dead exporter).

The counters (bytes, finished jobs, throttle waits, cooldowns) live in Redis hashes that the
workers increment (see :mod:`tasks.stats`); they survive worker restarts and count fleet-wide.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from tasks.admin import report
from tasks.logs import get_logger
from tasks.queues import queue_length, queues_of_accounts
from tasks.runtime import runtime
from tasks.stats import STATS

log = get_logger("ingest.metrics")

UNFINISHED = ("queued", "creating", "uploading", "submitting", "processing")
KINDS = ("api", "upload", "poll")


def _pairs(raw: dict[bytes, bytes]) -> Iterator[tuple[str, str, float]]:
    for field, value in raw.items():
        first, _, second = field.decode().partition(":")
        yield first, second, float(value)


class FleetCollector(Collector):
    """Reads the fleet's state from Redis on each scrape."""

    def __init__(self, rt: Any):
        self.rt = rt

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("ingest_redis_up", "1 when the exporter could read Redis")
        try:
            families = list(self._families())
        except redis.RedisError as exc:
            log.warning("metrics.redis_error", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self) -> Iterator[Metric]:
        rt = self.rt
        queued = GaugeMetricFamily("ingest_queue_length", "Messages waiting in a queue (all priorities)",
                                   labels=["queue", "provider", "kind", "account"])
        for kind in KINDS:
            for queue in queues_of_accounts(kind, rt.served()):
                provider, _, rest = queue.partition(".")
                account = rest.partition(".")[2] or "default"
                queued.add_metric([queue, provider, kind, account], queue_length(rt.redis, queue))
        yield queued

        backlog = GaugeMetricFamily("ingest_backlog_jobs", "Jobs not finished", labels=["provider", "account"])
        oldest = GaugeMetricFamily("ingest_oldest_job_age_seconds", "Age of the oldest unfinished job",
                                   labels=["provider", "account"])
        cooling = GaugeMetricFamily("ingest_cooldown_seconds", "Seconds left of the account's provider pause",
                                    labels=["provider", "account"])
        for row in report(rt=rt):
            labels = [row["provider"], row["account"]]
            backlog.add_metric(labels, row["backlog"])
            oldest.add_metric(labels, row["oldest_age_s"] or 0)
            cooling.add_metric(labels, row["cooldown_s"] or 0)
        yield from (backlog, oldest, cooling)

        pipe = rt.redis.pipeline(transaction=False)
        for key in STATS.values():
            pipe.hgetall(key)
        raw = dict(zip(STATS, pipe.execute(), strict=True))
        states = GaugeMetricFamily("ingest_jobs", "Unfinished jobs by state", labels=["provider", "state"])
        for provider, state, n in _pairs(raw["states"]):
            if state in UNFINISHED:
                states.add_metric([provider, state], max(0.0, n))
        yield states
        finished = CounterMetricFamily("ingest_jobs_finished", "Jobs that reached a terminal state",
                                       labels=["provider", "state"])
        for provider, state, n in _pairs(raw["finished"]):
            finished.add_metric([provider, state], n)
        yield finished
        for name, key, help_text in (
                ("ingest_bytes_uploaded", "bytes", "Bytes the fleet uploaded to the provider"),
                ("ingest_throttle_waits", "throttle_waits", "Calls deferred because the account's budget was spent"),
                ("ingest_cooldowns", "cooldowns", "Provider 429s that paused the account fleet-wide")):
            family = CounterMetricFamily(name, help_text, labels=["provider", "account"])
            for provider, account, n in _pairs(raw[key]):
                family.add_metric([provider, account], n)
            yield family


def scaling(rt: Any) -> dict[str, dict[str, int]]:
    """Per worker class: messages waiting in its queues, and unfinished jobs (KEDA's signal)."""
    out = {}
    backlog = sum(rt.redis.zcard(rt.store.active_key(p, a)) for p, a in rt.served())
    for kind in KINDS:
        out[kind] = {"queued": sum(queue_length(rt.redis, q) for q in queues_of_accounts(kind, rt.served())),
                     "backlog": backlog}
    return out


class MetricsServer:
    """``/metrics``, ``/scaling`` and ``/healthz`` on a small threaded HTTP server."""

    def __init__(self, rt: Any, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0):
        self.rt = rt
        self.registry = CollectorRegistry()
        self.registry.register(FleetCollector(rt))
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(server.registry), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/scaling":
                    try:
                        body, status = json.dumps(scaling(server.rt)).encode(), 200
                    except redis.RedisError as exc:
                        body, status = json.dumps({"error": f"redis: {exc}"}).encode(), 503
                    self._send(status, body, "application/json")
                elif path == "/healthz":
                    self._send(200, b'{"ok": true}', "application/json")
                else:
                    self._send(404, b'{"error": "not found"}', "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                """Scrapes are not worth a log line each."""

        Handler.timeout = timeout  # a client slower than this is dropped (no slow-loris hold)
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def serve(self) -> MetricsServer:
        threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main(host: str, port: int) -> int:
    rt = runtime()
    server = MetricsServer(rt, host, port, timeout=rt.settings.http_server_timeout)
    log.info("metrics.started", port=server.port)
    print(f"metrics on http://{host}:{server.port}/metrics", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.serve()
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    server.stop()
    return 0
