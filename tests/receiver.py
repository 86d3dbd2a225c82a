"""A local HTTP endpoint for the sandbox tests: collects the notifications an emulated
provider sends (Brightcove callbacks, Ittybit, Ingest.io and Once webhooks), and can answer
500 first. The one receiver of the suite."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Collects the JSON notifications POSTed to ``url``; answers ``fail_first`` 500s first.

    ``hooks`` holds the parsed bodies it accepted; ``received`` every request as it arrived
    (``method``, ``path``, ``headers``, raw ``body``, parsed ``json``, the ``status`` answered),
    failed ones included. POST, PUT and GET are taken (Once may notify with any of them).
    ``fail_headers`` are added to the 500 answers (e.g. a provider's "do not retry" header).
    """

    def __init__(self, path: str = "/hooks"):
        self.hooks: list[dict] = []
        self.received: list[dict] = []
        self.fail_first = 0
        self.fail_headers: dict[str, str] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else {}
                with receiver._lock:
                    failing = receiver.fail_first > 0
                    receiver.fail_first -= failing
                    if not failing:
                        receiver.hooks.append(body)
                    receiver.received.append({"method": self.command, "path": self.path,
                                              "headers": dict(self.headers), "body": raw, "json": body,
                                              "status": 500 if failing else 200})
                    extra = dict(receiver.fail_headers) if failing else {}
                self.send_response(500 if failing else 200)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_GET = do_POST

            def log_message(self, *args):
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.hooks) < n:
            assert time.monotonic() < deadline, f"{len(self.hooks)} of {n} notifications: {self.hooks}"
            time.sleep(0.02)
        return list(self.hooks)

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[dict]:
        """The first ``n`` requests as ``{"method", "path", "body": parsed}``."""
        deadline = time.monotonic() + timeout
        while len(self.received) < n:
            assert time.monotonic() < deadline, f"{len(self.received)} of {n} requests: {self.received}"
            time.sleep(0.02)
        return self.requests()

    def requests(self) -> list[dict]:
        with self._lock:
            return [{"method": r["method"], "path": r["path"], "body": r["json"]} for r in self.received]

    def clear(self):
        with self._lock:
            self.hooks.clear()
            self.received.clear()
            self.fail_first = 0
            self.fail_headers = {}

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()
