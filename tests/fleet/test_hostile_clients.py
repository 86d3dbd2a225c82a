"""Hostile clients cannot hold or break the webhook receiver or the metrics exporter (issue 13,
item 12): slow-loris connections are dropped after INGEST_HTTP_SERVER_TIMEOUT while /healthz
keeps answering, a body trickled in is answered 408, a deeply nested JSON body 400 (not 500)."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from workers.metrics import MetricsServer
from workers.webhooks import WebhookReceiver

pytestmark = pytest.mark.integration

TIMEOUT = 1.0


@pytest.fixture
def short_timeouts(rt):
    before = rt.settings.http_server_timeout, rt.settings.webhook_secret
    object.__setattr__(rt.settings, "http_server_timeout", TIMEOUT)
    object.__setattr__(rt.settings, "webhook_secret", "s" * 32)
    yield rt
    object.__setattr__(rt.settings, "http_server_timeout", before[0])
    object.__setattr__(rt.settings, "webhook_secret", before[1])


def _dropped(conn: socket.socket, within: float) -> bool:
    """Whether the server closes ``conn`` within ``within`` seconds (an answer counts as kept)."""
    conn.settimeout(within)
    try:
        return conn.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_clients_are_dropped_and_healthz_keeps_answering(short_timeouts) -> None:
    receiver = WebhookReceiver(short_timeouts)
    receiver.serve()
    try:
        slow = []
        for _ in range(300):  # a request line and half the headers, then nothing
            conn = socket.create_connection(("127.0.0.1", receiver.port))
            conn.sendall(b"POST /brightcove/x/y HTTP/1.1\r\nHost: hooks\r\n")
            slow.append(conn)
        started = time.monotonic()
        assert requests.get(f"http://127.0.0.1:{receiver.port}/healthz", timeout=5).json() == {"ok": True}
        assert time.monotonic() - started < 2
        assert all(_dropped(conn, TIMEOUT + 4) for conn in slow), "a slow client still holds its connection"

        trickle = socket.create_connection(("127.0.0.1", receiver.port))
        trickle.sendall(b"POST /brightcove/x/y HTTP/1.1\r\nHost: hooks\r\nContent-Length: 100\r\n\r\n{\"a\":")
        trickle.settimeout(TIMEOUT + 4)
        assert trickle.recv(4096).startswith(b"HTTP/1.1 408")
        for conn in [*slow, trickle]:
            conn.close()
    finally:
        receiver.stop()


def test_deeply_nested_json_is_refused_not_a_crash(short_timeouts) -> None:
    from tasks.callbacks import token_for

    receiver = WebhookReceiver(short_timeouts)
    receiver.serve()
    try:
        job_id = "b" * 32
        url = f"http://127.0.0.1:{receiver.port}/brightcove/{job_id}/{token_for('s' * 32, 'brightcove', job_id)}"
        for depth in (30_000, 40):  # past the parser's own limit, and past MAX_DEPTH
            resp = requests.post(url, data=b"[" * depth + b"]" * depth, timeout=5)
            assert resp.status_code == 400 and "nested deeper" in resp.json()["error"], resp.text
    finally:
        receiver.stop()


def test_the_exporter_drops_a_slow_client(short_timeouts) -> None:
    server = MetricsServer(short_timeouts, timeout=TIMEOUT).serve()
    try:
        conn = socket.create_connection(("127.0.0.1", server.port))
        conn.sendall(b"GET /metrics HTTP/1.1\r\n")
        assert _dropped(conn, TIMEOUT + 4)
        conn.close()
    finally:
        server.stop()
