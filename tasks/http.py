"""The one outbound HTTP path to a provider (ARCHITECTURE.md, principle 5).

Every provider call goes through :meth:`ProviderClient.request`, which

1. takes a token from the fleet-wide budget of the provider account (and honours its
   cooldown) - a short wait sleeps, a long one raises :class:`Throttled`;
2. always sets connect and read timeouts;
3. classifies the answer: 2xx -> the response; 429 -> fleet-wide cooldown from
   ``Retry-After`` and :class:`Throttled`; 408/425/5xx/connection errors ->
   :class:`TransientError`; any other 4xx -> :class:`PermanentError` carrying the
   provider's own message;
4. logs method, host, path (never the query string, headers or body), status, time and the
   provider's request id (``Request-Id``) when it sends one.

Example::

    client = ProviderClient("gcore", budget, timeouts=(5, 60), headers={"Authorization": ...})
    video = client.request("GET", f"{base}/streaming/videos/{vid}").json()
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from tasks import tracing
from tasks.budget import ProviderBudget
from tasks.errors import PermanentError, Throttled, TransientError
from tasks.logs import get_logger
from tasks.retry import DEFAULT_POLICY, Outcome, outcome_of_status

log = get_logger("ingest.http")

def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def default_error_text(resp: requests.Response) -> str:
    """The provider's own message from a JSON error body, else the start of the text."""
    try:
        body = resp.json()
    except ValueError:
        text = (resp.text or "").strip()
        return text[:300] or resp.reason or f"HTTP {resp.status_code}"
    if isinstance(body, list) and body and isinstance(body[0], dict):
        body = body[0]
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "errors", "error_message"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value
            if value:
                return str(value)[:300]
    return str(body)[:300]


def _int_header(resp: requests.Response, name: str) -> int | None:
    try:
        return int(float(resp.headers[name]))
    except (KeyError, ValueError):
        return None


class ProviderClient:
    """HTTP to one provider account: budgeted, time-limited, classified, quietly logged."""

    def __init__(self, provider: str, budget: ProviderBudget, *, timeouts: tuple[float, float],
                 headers: dict[str, str] | None = None, max_wait: float = 2.0,
                 error_text: Callable[[requests.Response], str] = default_error_text,
                 policy: Mapping[int, Outcome] | None = None,
                 classify: Callable[[requests.Response], Outcome | None] | None = None,
                 entity_budget: Callable[[str], ProviderBudget] | None = None,
                 learn_rate_headers: bool = False):
        self.provider = provider
        self.budget = budget
        self.timeouts = timeouts
        self.max_wait = max_wait
        self.error_text = error_text
        self.policy = {**DEFAULT_POLICY, **{status: Outcome(kind) for status, kind in (policy or {}).items()}}
        self.classify = classify
        self.entity_budget = entity_budget
        self.learn_rate_headers = learn_rate_headers
        self.session = requests.Session()
        self.session.headers.update(headers or {})

    def charge_entity(self, entity: str, *, holder: str = "") -> None:
        """Count a call already made on ``entity`` before its id was known (e.g. its creation).
        The call was made: the token is taken, at a later time if need be, and nothing waits."""
        if self.entity_budget:
            self.entity_budget(entity).charge(holder=holder or entity)

    def bound(self, holder: str, fence: Callable[[], None] | None = None) -> BoundClient:
        """This client on behalf of ``holder`` (a job): long budget waits reserve its token, and
        ``fence`` (which raises if the job was taken over) runs right before every POST."""
        return BoundClient(self, holder, fence)

    def request(self, method: str, url: str, *, allow: Iterable[int] = (), entity: str | None = None,
                holder: str | None = None, on_send: Callable[[], None] | None = None,
                **kwargs: Any) -> requests.Response:
        """Send one request; statuses in ``allow`` are returned to the caller, not raised.

        ``entity`` names what the call is about (e.g. ``video:123``) where the provider also
        limits calls per entity. ``holder`` (a job id) makes a long wait reserve the tokens
        for the time the caller defers to (see :meth:`ProviderBudget.acquire`). ``on_send``
        runs once every token is granted, just before the request leaves: the place to
        record "this non-idempotent call may have been made".
        """
        # The scarcer budget first: a token of the entity's that must be waited for is
        # reserved before any token of the account's is spent.
        if entity and self.entity_budget:
            self.entity_budget(entity).acquire(max_wait=self.max_wait, holder=holder)
        self.budget.acquire(max_wait=self.max_wait, holder=holder)
        if on_send is not None:
            on_send()
        kwargs.setdefault("timeout", self.timeouts)
        parts = urlsplit(url)
        where = {"method": method, "host": parts.netloc, "path": parts.path}
        started = time.monotonic()
        try:
            with tracing.call_span(self.provider, method, url) as traced:
                resp = self.session.request(method, url, **kwargs)
                traced(resp.status_code)
        except requests.Timeout as exc:
            log.warning("http.timeout", **where, provider=self.provider)
            raise TransientError(f"{method} {parts.path}: timed out ({type(exc).__name__})",
                                 provider=self.provider) from None
        except requests.RequestException as exc:
            log.warning("http.connection_error", **where, provider=self.provider, error=type(exc).__name__)
            raise TransientError(f"{method} {parts.path}: connection failed ({type(exc).__name__})",
                                 provider=self.provider) from None
        status = resp.status_code
        # The provider's id of this request (Ingest.io ``Request-Id``), for its support.
        request_id = resp.headers.get("Request-Id") or resp.headers.get("X-Request-Id")
        if request_id:
            where["request_id"] = request_id
        log.debug("http.call", **where, status=status, ms=round((time.monotonic() - started) * 1000, 1))
        if self.learn_rate_headers and "X-RateLimit-Remaining" in resp.headers:
            self.budget.observe(limit=_int_header(resp, "X-RateLimit-Limit"),
                                remaining=_int_header(resp, "X-RateLimit-Remaining"),
                                reset=parse_retry_after(resp.headers.get("X-RateLimit-Reset")))
        if 200 <= status < 300 or status in allow:
            return resp
        refined = self.classify(resp) if self.classify else None
        kind = Outcome(refined) if refined else outcome_of_status(status, self.policy)
        if kind is Outcome.THROTTLED:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            pause = self.budget.cool_down(retry_after)
            log.warning("http.throttled", **where, status=status, provider=self.provider,
                        retry_after=retry_after, cooldown=pause)
            raise Throttled(f"{method} {parts.path}: rate limited", retry_after=pause,
                            status=status, provider=self.provider)
        message = self.error_text(resp)
        log.warning("http.error", **where, status=status, provider=self.provider, message=message, kind=kind.value)
        if kind is Outcome.TRANSIENT:
            raise TransientError(message, status=status, provider=self.provider)
        raise PermanentError(message, status=status, provider=self.provider)


class BoundClient:
    """A :class:`ProviderClient` acting for one job (see :meth:`ProviderClient.bound`)."""

    def __init__(self, client: ProviderClient, holder: str, fence: Callable[[], None] | None = None):
        self.client, self.holder, self.fence = client, holder, fence

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("holder", self.holder)
        if self.fence is not None and method.upper() == "POST":
            # A POST may create something at the provider: it leaves only while this worker
            # still holds the job (a worker that paused in a budget wait, a GC or a frozen VM
            # and was taken over meanwhile sends nothing), checked once every token is
            # granted. A marker's checkpoint (StepContext.sending) is that check already: a
            # fenced write, refused to a holder taken over; else the fence is read.
            on_send = kwargs.get("on_send")
            kwargs["on_send"] = on_send if getattr(on_send, "fenced", False) else _then(on_send, self.fence)
        return self.client.request(method, url, **kwargs)

    def charge_entity(self, entity: str) -> None:
        self.client.charge_entity(entity, holder=self.holder)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _then(first: Callable[[], None] | None, second: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        if first is not None:
            first()
        second()

    return both


#: What a step's ``ctx.http(kind)`` gives: a client, or a client acting for one job.
Http = ProviderClient | BoundClient
