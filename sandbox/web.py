"""HTTP building blocks shared by every emulator: requests, responses and routing.

A handler is a plain callable ``handler(request) -> Response``; it never touches the
socket. It reads the body through :meth:`Request.iter_body` (bounded blocks, so a 2 GiB
upload never sits in memory) or :meth:`Request.json`, and raises :class:`HttpError` to
answer with an error. A client that goes away mid-body surfaces as :class:`ClientGone`
*after* every byte that did arrive has been handed to the handler: that is what lets a
TUS server keep the partial chunk, as the protocol asks ("SHOULD always attempt to store
as much of the received data as possible").

Example::

    router = Router()
    router.add(route("GET", r"/things/(?P<thing_id>\\d+)", "demo.get_thing",
                     lambda req: json_response({"id": req.params["thing_id"]}), provider="demo"))
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

_log = logging.getLogger("sandbox")

#: Largest block read from a request body at once (and the write size for files).
BLOCK_SIZE = 1 << 20
#: Largest JSON body a handler accepts; API bodies are small, uploads never go through JSON.
JSON_LIMIT = 1 << 20


class ClientGone(Exception):
    """The connection ended, or a fault cut it, before the request was answered."""


@dataclass
class Response:
    """What a handler answers. ``body`` is bytes, or an iterable of bytes plus ``length``."""

    status: int
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    length: int | None = None


class FileBody:
    """A body that is ``length`` bytes of the file at ``path`` from ``start``: sent with
    ``sendfile`` (as nginx or a CDN edge serves a file: no copy through the process), or read
    in blocks by whoever iterates it."""

    def __init__(self, path: str | os.PathLike[str], start: int, length: int):
        self.path, self.start, self.length = path, start, length

    def __iter__(self) -> Iterator[bytes]:
        left = self.length
        with open(self.path, "rb") as f:
            f.seek(self.start)
            while left > 0 and (block := f.read(min(BLOCK_SIZE, left))):
                left -= len(block)
                yield block

    def send(self, sock: socket.socket) -> None:
        with open(self.path, "rb") as f:
            sock.sendfile(f, self.start, self.length)


class HttpError(Exception):
    """Raised by a handler to answer with an error; ``body`` is sent as JSON, or as text if a str."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = {"error": HTTPStatus(status).phrase} if body is None else body
        self.headers = headers or {}

    def response(self) -> Response:
        if isinstance(self.body, str):
            return text_response(self.body, self.status, self.headers)
        return json_response(self.body, self.status, self.headers)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, {"Content-Type": "application/json", **(headers or {})})


def text_response(text: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


class Request:
    """One HTTP request as a handler sees it.

    Attributes set by the server: ``route`` and ``params`` (the route's named groups).
    Attributes a handler may set: ``entity`` (the provider entity the request concerns,
    for the request log). ``bytes_in`` counts body bytes received so far.
    """

    def __init__(self, method: str, target: str, headers: Any, rfile: BinaryIO):
        parts = urlsplit(target)
        self.method = method
        self.path = parts.path
        self.query = parse_qs(parts.query, keep_blank_values=True)
        self.headers = headers
        self.route: Route | None = None
        self.params: dict[str, str] = {}
        self.entity: str | None = None
        self.fault: str | None = None
        self.bytes_in = 0
        self._rfile = rfile
        self._cut: int | None = None
        self._damage = False
        self._on_finish: list[Callable[[Request], None]] = []
        #: Set when the body's length cannot be known; the server answers it and closes.
        self.framing_error: HttpError | None = None
        self.content_length = 0
        if headers.get("Transfer-Encoding"):
            # Every client the fleet uses sends Content-Length; chunked bodies are not emulated.
            self.framing_error = HttpError(411, {"error": "Content-Length required"})
        else:
            try:
                self.content_length = int(headers.get("Content-Length") or 0)
            except ValueError:
                self.content_length = -1
            if self.content_length < 0:
                self.content_length = 0
                self.framing_error = HttpError(400, {"error": "Invalid Content-Length"})

    @property
    def endpoint(self) -> str | None:
        return self.route.name if self.route else None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def arg(self, name: str, default: str | None = None) -> str | None:
        """The first value of query parameter ``name``."""
        values = self.query.get(name)
        return values[0] if values else default

    def cut_after(self, nbytes: int) -> None:
        """Make the body end after ``nbytes`` as if the client vanished (fault injection)."""
        self._cut = max(0, nbytes)

    def damage(self) -> None:
        """Flip the body's first byte on its way in, as a bad link would (fault injection)."""
        self._damage = True

    def iter_body(self, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
        """Yield the (rest of the) body in blocks of at most ``block_size`` bytes.

        Raises :class:`ClientGone` once the connection ends early or an injected cut is
        reached; every block received before that has been yielded.
        """
        limit = self.content_length if self._cut is None else min(self._cut, self.content_length)
        while self.bytes_in < limit:
            try:
                # read1: return what the socket has instead of waiting for a full block, so
                # nothing already received is lost if the connection dies while we wait.
                data = self._rfile.read1(min(block_size, limit - self.bytes_in))
            except OSError as exc:
                raise ClientGone(f"connection lost after {self.bytes_in} body bytes: {exc}") from exc
            if not data:
                raise ClientGone(f"connection closed after {self.bytes_in} of {self.content_length} body bytes")
            self.bytes_in += len(data)
            if self._damage:
                data, self._damage = bytes([data[0] ^ 0xFF]) + data[1:], False
            yield data
        if self._cut is not None:
            raise ClientGone(f"connection dropped by fault injection after {self.bytes_in} body bytes")

    def drain(self) -> None:
        """Read and discard the rest of the body, so the connection can serve the next request."""
        for _ in self.iter_body():
            pass

    def json(self) -> Any:
        """The body parsed as JSON; 413 above :data:`JSON_LIMIT`, 400 when malformed."""
        if self.content_length > JSON_LIMIT:
            raise HttpError(413, {"error": "Request body too large"})
        raw = b"".join(self.iter_body())
        try:
            return json.loads(raw)
        except ValueError:
            raise HttpError(400, {"error": "Invalid JSON body"}) from None

    def on_finish(self, callback: Callable[[Request], None]) -> None:
        """Call ``callback(request)`` once the request is over, whatever its outcome."""
        self._on_finish.append(callback)

    def finish(self) -> None:
        for callback in self._on_finish:
            callback(self)


@dataclass(frozen=True)
class Route:
    """``method`` + full-match ``pattern`` → ``handler``, named for the log and fault rules.

    ``entity`` optionally maps a request to the provider entity it concerns before the
    handler runs, so that even requests answered by an injected fault are attributed.
    """

    method: str
    pattern: re.Pattern[str]
    name: str
    provider: str
    handler: Callable[[Request], Response]
    entity: Callable[[Request], str | None] | None = None


def route(method: str, pattern: str, name: str, handler: Callable[[Request], Response], *,
          provider: str, entity: Callable[[Request], str | None] | None = None) -> Route:
    return Route(method, re.compile(pattern), name, provider, handler, entity)


class Router:
    """Matches a request to a :class:`Route`. HEAD falls back to GET, as HTTP allows."""

    def __init__(self) -> None:
        self._routes: list[Route] = []

    def add(self, *routes: Route) -> None:
        self._routes.extend(routes)

    def names(self, provider: str) -> set[str]:
        return {r.name for r in self._routes if r.provider == provider}

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed: set[str] = set()
        fallback = None
        for r in self._routes:
            m = r.pattern.fullmatch(path)
            if not m:
                continue
            if r.method == method:
                return r, m.groupdict()
            if method == "HEAD" and r.method == "GET" and fallback is None:
                fallback = (r, m.groupdict())
            allowed.add(r.method)
        if fallback:
            return fallback
        if allowed:
            raise HttpError(405, {"error": "Method Not Allowed"}, {"Allow": ", ".join(sorted(allowed))})
        raise HttpError(404, {"error": "Not Found"})


class TrackedHTTPServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server that knows its kept-alive connections, so that stopping
    it really ends them (a stopped emulator must answer nothing more)."""

    daemon_threads = True  # a stuck client never blocks shutdown
    request_queue_size = 256  # benchmarks and boto3 open hundreds of connections at once
    label = "sandbox"

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN: a DNS round trip nobody needs.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            for conn in self._connections:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            # Clients vanishing between requests is routine here (that is what faults are for).
            _log.debug("%s: connection from %s ended", self.label, client_address, exc_info=True)
        else:
            _log.exception("%s failed serving %s", self.label, client_address)


def abort_connection(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection abruptly (RST, not FIN), as a crashed or cut-off server would."""
    handler.close_connection = True
    with suppress(OSError):
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def write_response(h: BaseHTTPRequestHandler, req: Request, response: Response, *, relay: bool = False) -> None:
    """Write ``response`` to ``req``'s connection, then close a body that can be closed.

    204 and 304 answers carry no ``Content-Length`` (RFC 9110 §8.6), nor does a streamed body
    without a ``length``; HEAD answers carry no body. The sandbox's own answers get the
    handler's ``Server`` and ``Date`` headers and a body only with a ``Content-Length``. A
    relayed answer (``relay=True``: the S3 proxy's, from moto) goes out as upstream sent it:
    its own headers only (moto's ``Date`` and ``Server`` too) and its body as given. A client
    that goes away meanwhile only closes the connection.
    """
    body = response.body
    try:
        if relay:
            h.send_response_only(response.status)
        else:
            h.send_response(response.status)
        for name, value in response.headers.items():
            h.send_header(name, value)
        length = None if response.status in (204, 304) else (
            len(body) if isinstance(body, bytes) else response.length)
        if length is not None:
            h.send_header("Content-Length", str(length))
        h.end_headers()
        if req.method == "HEAD" or (length is None and not relay):
            return
        if isinstance(body, bytes):
            h.wfile.write(body)
        elif isinstance(body, FileBody):
            body.send(h.connection)
        else:
            for block in body:
                h.wfile.write(block)
    except OSError:  # the client went away while we answered
        h.close_connection = True
    finally:
        if hasattr(body, "close"):
            body.close()  # a streamed file or relayed upstream body closes even if never iterated
