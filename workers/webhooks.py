"""The webhook receiver: providers' notifications complete a job's wait early.

Waiting is polling with backoff (the safety net); a provider that can call back (Brightcove
Dynamic Ingest ``callbacks``, later Ittybit, Ingest.io, Once) is given a per-job URL::

    {INGEST_WEBHOOK_URL}/{provider}/{job_id}/{token}

where ``token`` is an HMAC of the provider and job id under ``INGEST_WEBHOOK_SECRET``: a
notification for a job nobody gave out a URL for is refused (403), since Brightcove's
callbacks carry no signature of their own. A valid notification does not write the job: it
makes the job's pending status poll due now, and that poll, under the job's lease, reads
the provider's answer (Once: its Media Management API; the notifications kept for the job
are only quoted when its deadline passes, and one the adapter's ``webhook_refusal`` refuses -
for Once, no JSON object - is answered 4xx and not kept; a body over ``MAX_BODY`` is refused
413 for every provider, so nothing is ever stored cut). So a duplicate, a late or a forged-but-valid-token notification can
at most cause one extra poll; repeated identical notifications are recognised and ignored.

Providers whose hooks are registered per account, not per request (Ingest.io), are given
one URL per account instead::

    {INGEST_WEBHOOK_URL}/{provider}/accounts/{account}/{token}

and sign each notification themselves with a secret the fleet derives from
``INGEST_WEBHOOK_SECRET`` when it registers the hook: the receiver checks the token, then the
provider's signature (the adapter's ``webhook_verified``), and finds the job from the ids in
the payload (``webhook_refs``), which the adapter recorded when it created them
(:func:`remember_ref`). Rotating ``INGEST_WEBHOOK_SECRET`` changes the URL, so the next job
registers a new hook.

Run it with ``ingest-fleet webhooks [--host 0.0.0.0] [--port 8480]``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import resource
import socket
import threading
import time
from typing import Any

from tasks import keys
from tasks import logs as fleet_logging
from tasks.callbacks import EVENTS_KEPT, MAX_BODY, derived_secret, job_for_ref, token_for
from tasks.config import ConfigError
from tasks.logs import get_logger
from tasks.providers import ADAPTERS
from tasks.runtime import runtime

log = get_logger("ingest.webhooks")

#: No provider's notification nests deeper; a deeper body is refused (400), never parsed at length.
MAX_DEPTH = 32
#: Connections served at once; more are answered 503 (uvicorn's limit_concurrency).
MAX_CONNECTIONS = 512

_PATH = re.compile(r"^/(?P<provider>[a-z0-9]+)/(?P<job_id>[0-9a-f]{32})/(?P<token>[0-9a-f]{32})/?$")
_ACCOUNT_PATH = re.compile(r"^/(?P<provider>[a-z0-9]+)/accounts/(?P<account>[a-z0-9][a-z0-9_-]{0,31})/"
                           r"(?P<token>[0-9a-f]{32})/?$")


class WebhookReceiver:
    """Accepts provider notifications and makes the job's status poll due now.

    An ASGI application (served by uvicorn): it answers fast - a notification is written
    to Redis, and only then acknowledged with a 2xx, so none that was acknowledged is lost.
    """

    def __init__(self, rt: Any):
        self.rt = rt
        self._server: Any = None
        self._socket: socket.socket | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            ok = scope["path"] == "/healthz"
            await _answer(send, 200 if ok else 404, {"ok": ok})
            return
        if scope["method"] != "POST":
            await _answer(send, 405, {"error": "POST only"})
            return
        chunks, size = [], 0
        deadline = time.monotonic() + self.rt.settings.http_server_timeout
        while True:
            try:  # a body trickled in a byte at a time must not hold the connection
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                await _answer(send, 408, {"error": "body not received in time"})
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY:
                await _answer(send, 413, {"error": "body too large"})
                return
            if not message.get("more_body"):
                break
        # Redis calls are short and blocking: off the event loop.
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        status, body = await asyncio.to_thread(self.handle, scope["path"], b"".join(chunks), headers)
        await _answer(send, status, body)

    def handle(self, path: str, raw: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        """Answer one notification: ``(status, body)``. ``headers`` have lower-case names."""
        path = path.split("?", 1)[0]
        by_account = _ACCOUNT_PATH.match(path)
        if by_account:
            return self._handle_account(by_account, raw, headers or {})
        match = _PATH.match(path)
        if not match or match["provider"] not in ADAPTERS:
            log.info("webhook.ignored", reason="unknown path or provider")
            return 404, {"error": "unknown webhook"}
        provider, job_id = match["provider"], match["job_id"]
        try:
            self._check_token(provider, job_id, match["token"], job_id=job_id)
            payload = _json(raw, provider=provider, job_id=job_id)
            refusal = ADAPTERS[provider].webhook_refusal(raw, payload)
            if refusal is not None:
                log.info("webhook.refused", provider=provider, job_id=job_id, reason=refusal[1])
                raise _Refused(*refusal)
        except _Refused as refused:
            return refused.status, refused.body
        return self._accept(provider, job_id, raw, payload)

    def _check_token(self, provider: str, subject: str, token: str, **where: str) -> None:
        if not hmac.compare_digest(token_for(self.rt.settings.webhook_secret, provider, subject), token):
            log.warning("webhook.refused", provider=provider, **where, reason="bad token")
            raise _Refused(403, "bad token")

    def _handle_account(self, match: re.Match, raw: bytes, headers: dict[str, str]) -> tuple[int, dict]:
        """A notification to an account-wide hook: token, then the provider's signature."""
        provider, account = match["provider"], match["account"]
        adapter = ADAPTERS.get(provider)
        if adapter is None or not adapter.account_webhooks:
            log.info("webhook.ignored", provider=provider, reason="provider has no account-wide hooks")
            return 404, {"error": "unknown webhook"}
        try:
            self._check_token(provider, "account:" + account, match["token"], account=account)
            if not adapter.webhook_verified(derived_secret(self.rt.settings, provider, account), headers, raw):
                log.warning("webhook.refused", provider=provider, account=account, reason="bad signature")
                raise _Refused(403, "bad signature")
            payload = _json(raw, provider=provider, account=account)
        except _Refused as refused:
            return refused.status, refused.body
        job_id = job_for_ref(self.rt.redis, provider, account, adapter.webhook_refs(payload))
        if job_id is None:
            # Another application's resource on the same account: acknowledged, so not re-sent.
            log.info("webhook.ignored", provider=provider, account=account, reason="no job of this fleet")
            return 200, {"ok": True, "ignored": "no job of this fleet"}
        return self._accept(provider, job_id, raw, payload)

    def _accept(self, provider: str, job_id: str, raw: bytes, payload: Any) -> tuple[int, dict]:
        """Keep a notification for its job (once) and make the job's pending poll due now."""
        digest = hashlib.sha256(b"%s:%s:" % (provider.encode(), job_id.encode()) + raw).hexdigest()
        if not self.rt.redis.set(keys.webhook_seen(digest), 1, nx=True, ex=86400):
            log.info("webhook.ignored", provider=provider, job_id=job_id, reason="duplicate")
            return 200, {"ok": True, "duplicate": True}
        job = self.rt.store.get(job_id)
        if job is None or job.provider != provider:
            log.info("webhook.ignored", provider=provider, job_id=job_id, reason="unknown job")
            return 404, {"error": "unknown job"}
        key = keys.webhook_events(job_id)
        pipe = self.rt.redis.pipeline()
        pipe.rpush(key, json.dumps(payload))
        pipe.ltrim(key, -EVENTS_KEPT, -1)
        pipe.expire(key, 7 * 86400)
        pipe.execute()
        relevant = ADAPTERS[provider].webhook_is_relevant(payload)
        log.info("webhook.received", provider=provider, job_id=job_id, relevant=relevant, step=job.step)
        if relevant and not job.terminal and job.step == "await" and job.dispatch.get("member"):
            self.rt.store.schedule(job.dispatch["member"], 0)
        return 200, {"ok": True}

    # -- serving ---------------------------------------------------------------------
    def bind(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind the listening socket now (port 0 = a free one); returns the port."""
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        return self._socket.getsockname()[1]

    @property
    def port(self) -> int:
        assert self._socket is not None, "bind() first"
        return self._socket.getsockname()[1]

    def run(self) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT when run in the main thread)."""
        import uvicorn  # heavy, and only the serving process needs it

        if self._socket is None:
            self.bind()
        _raise_open_files_limit()
        _quiet_accept_errors()
        # No access log: the paths carry per-job tokens. Idle keep-alive connections close after
        # the server timeout; a request's line and headers must arrive within it too.
        timeout = self.rt.settings.http_server_timeout
        config = uvicorn.Config(self, log_level="warning", access_log=False, lifespan="on",
                                http=_guarded_protocol(timeout), limit_concurrency=MAX_CONNECTIONS,
                                timeout_keep_alive=int(max(1, timeout)))
        self._server = uvicorn.Server(config)
        self._server.run(sockets=[self._socket])

    def serve(self) -> None:
        """Serve from a background thread (tests)."""
        if self._socket is None:
            self.bind()
        threading.Thread(target=self.run, daemon=True).start()
        deadline = time.monotonic() + 10
        while not (self._server and self._server.started):
            if time.monotonic() > deadline:
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.02)

    def stop(self, *_: object) -> None:
        if self._server:
            self._server.should_exit = True


def _guarded_protocol(timeout: float) -> type:
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's line and headers, which
    uvicorn lacks: without it a client sending a byte a minute (slow-loris) holds a connection,
    and a few hundred of them hold the receiver and its /healthz."""
    from uvicorn.protocols.http.h11_impl import H11Protocol  # with uvicorn: heavy, serving only

    class GuardedH11Protocol(H11Protocol):  # type: ignore[misc]
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not None and not self.cycle.response_complete:
                self._disarm()  # the request's headers are in: the body has its own deadline

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this connection gets the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


def _raise_open_files_limit() -> None:
    """Use all the file descriptors the hard limit allows (a busy receiver holds many sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536),
                                                    hard))


class _OncePer(logging.Filter):
    """Lets one record of a repeating kind through per ``seconds`` (the rest are counted)."""

    def __init__(self, prefix: str, seconds: float = 10.0):
        super().__init__()
        self.prefix, self.seconds, self._last, self.dropped = prefix, seconds, 0.0, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = time.monotonic()
        if now - self._last < self.seconds:
            self.dropped += 1
            return False
        self._last = now
        return True


def _quiet_accept_errors() -> None:
    """Out of file descriptors, asyncio logs every failed accept (a flood of hundreds of MB a
    minute under attack): one line per 10 s is enough to tell."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _OncePer) for f in logger.filters):
        logger.addFilter(_OncePer("socket.accept() out of system resource"))


class _Refused(Exception):
    """A notification answered with an error (the reason is already logged)."""

    def __init__(self, status: int, error: str):
        super().__init__(error)
        self.status, self.body = status, {"error": error}


def _json(raw: bytes, **where: str) -> Any:
    try:
        payload = json.loads(raw or b"{}")
    except ValueError:
        log.info("webhook.ignored", **where, reason="body is not JSON")
        raise _Refused(400, "body is not JSON") from None
    except RecursionError:  # e.g. 200,000 nested arrays: the parser gives up before MAX_DEPTH is checked
        payload = None
    if (payload is None and raw.strip() != b"null") or _depth(payload) > MAX_DEPTH:
        log.info("webhook.ignored", **where, reason="JSON nested too deep")
        raise _Refused(400, f"JSON nested deeper than {MAX_DEPTH} levels")
    return payload


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in ``value`` (without recursion)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= MAX_DEPTH:
                todo.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


async def _answer(send: Any, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def main(host: str, port: int) -> int:
    fleet_logging.configure()
    rt = runtime()
    if not rt.settings.webhook_secret:
        raise ConfigError("INGEST_WEBHOOK_SECRET is not set; set a long random value shared by the fleet")
    receiver = WebhookReceiver(rt)
    bound = receiver.bind(host, port)
    log.info("webhooks.started", port=bound)
    print(f"webhook receiver listening on http://{host}:{bound}", flush=True)
    receiver.run()  # uvicorn handles SIGTERM/SIGINT: it stops accepting, finishes, exits
    return 0
