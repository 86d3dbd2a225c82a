"""The one outbound HTTP path, against a tiny local server: classification, Retry-After
and the fleet-wide cooldown, X-RateLimit learning."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tasks.budget import ProviderBudget
from tasks.errors import PermanentError, Throttled, TransientError
from tasks.http import ProviderClient
from tasks.retry import Outcome

ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/ok": (200, {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"}, b"{}"),
    "/busy": (429, {"Retry-After": "2"}, b""),
    "/gone": (404, {}, json.dumps([{"error_code": "NOT_FOUND", "message": "Video not found"}]).encode()),
    "/flaky": (503, {}, b"upstream hiccup"),
    "/odd": (418, {}, b"{}"),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, headers, body = ANSWERS[self.path.split("?")[0]]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def budget(rt):
    from tests.conftest import _wipe_fleet_keys

    _wipe_fleet_keys(rt.redis)
    return ProviderBudget(rt.redis, "t:http", rate=0)


def test_answers_are_classified(server, budget) -> None:
    client = ProviderClient("p", budget, timeouts=(2, 2), policy={418: Outcome.TRANSIENT})
    with pytest.raises(PermanentError, match="Video not found"):
        client.request("GET", f"{server}/gone")
    with pytest.raises(TransientError, match="upstream hiccup"):
        client.request("GET", f"{server}/flaky")
    with pytest.raises(TransientError):  # the provider's own table can override the default
        client.request("GET", f"{server}/odd")
    assert client.request("GET", f"{server}/gone", allow=(404,)).status_code == 404
    with pytest.raises(Throttled) as info:
        client.request("GET", f"{server}/busy")
    assert 1.9 < info.value.retry_after <= 2.0
    assert 1.5 < budget.cooldown_remaining() <= 2.0  # fleet-wide: in Redis, for every worker


def test_rate_limit_headers_are_learned_when_the_provider_sends_them(server, budget) -> None:
    ProviderClient("p", budget, timeouts=(2, 2)).request("GET", f"{server}/ok")
    assert budget.cooldown_remaining() == 0  # not learned unless the adapter says so
    ProviderClient("p", budget, timeouts=(2, 2), learn_rate_headers=True).request("GET", f"{server}/ok")
    assert 2.5 < budget.cooldown_remaining() <= 3.0  # nothing remains: pause until the reset
    assert budget.stats()["observed"]["limit"] == 100


def test_a_closed_port_is_transient(budget) -> None:
    from workers.embedded_redis import free_port

    client = ProviderClient("p", budget, timeouts=(1, 1))
    with pytest.raises(TransientError, match="connection failed"):
        client.request("GET", f"http://127.0.0.1:{free_port()}/x?token=secret-in-query")
