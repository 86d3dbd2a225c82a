"""A local HTTP endpoint for the sandbox tests: collects the notifications an emulated
provider sends (Brightcove callbacks, Ittybit and Ingest.io webhooks), and can answer 500 first."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Collects the JSON notifications POSTed to ``url``; answers ``fail_first`` 500s first.

    ``hooks`` holds the parsed bodies it accepted; ``received`` every POST as it arrived
    (``headers``, raw ``body``, the ``status`` answered), failed ones included.
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
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                with receiver._lock:
                    failing = receiver.fail_first > 0
                    receiver.fail_first -= failing
                    if not failing:
                        receiver.hooks.append(body)
                    receiver.received.append({"headers": dict(self.headers), "body": raw,
                                              "status": 500 if failing else 200})
                    extra = dict(receiver.fail_headers) if failing else {}
                self.send_response(500 if failing else 200)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

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

    def clear(self):
        with self._lock:
            self.hooks.clear()
            self.received.clear()
            self.fail_first = 0
            self.fail_headers = {}

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()
