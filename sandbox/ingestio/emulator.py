"""The Ingest.io emulator: options, settings, routes, state, and what every API call passes through.

An API call is checked for its version and token (:mod:`.auth`), then counted against the
provider's own rate limit, before the sandbox applies its faults and the handler runs.

Every API answer carries ``Request-Id`` (a fresh UUID; docs: request ids) and
``X-RateLimit-Limit``, ``-Remaining``, ``-Reset`` (whole seconds until the window ends).
The limit is the provider's own (docs: rate limiting): a fixed window of ``rate_window``
seconds (fault setting, default 60) starting with the first request after the previous
window ended, ``rate_limit`` requests (default 600; 0 = off, and then no X-RateLimit
headers); over it: 429 with an empty body, ``Retry-After`` and Remaining 0. Every admitted
API call counts, including those a fault then answers; 406/401 refusals do not. The
sandbox's generic knobs (``rate_429``, ``error_5xx_rate``, rules, latency) apply on top,
after the version, token and limit checks; their 429s have an empty body too, and carry
the same headers with Remaining 0 and, when they have a ``Retry-After``, a Reset equal to
it (so a client that waits for the reset waits as long as the 429 asked, not for the rest of
the emulator's own window).
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import unquote

from ..emulator import Context, Emulator
from ..faults import FaultConfigError, Setting
from ..web import Request, Response, Route, json_response, route
from .api import ACCEPT, Pages, _error, _now
from .auth import DEFAULT_NETWORK, DEFAULT_SECRET, TOKEN_LIFETIME, Tokens, _accepts, _BadToken, default_user_id, mint_token
from .hooks import WORKERS, Hook, Hooks, _hook_json
from .inputs import Input, Inputs
from .jobs import Encoding, Job, default_profile_id
from .uploads import MIN_PIECE_SIZE, PART_PUT, S3_PREFIX, Uploads, _key_input
from .videos import Video, Videos


@dataclass(frozen=True)
class _AtLeast(Setting):
    """A whole-number setting with a lower bound; a configuration below it is rejected."""

    minimum: int = 0

    def check(self, name: str, value: Any) -> None:
        super().check(name, value)
        if value < self.minimum:
            raise FaultConfigError(f"{name} must be an integer >= {self.minimum}")


class IngestioEmulator(Tokens, Videos, Inputs, Uploads, Encoding, Hooks, Pages, Emulator):
    """Ingest.io's videos, inputs and their signed uploads, encoding jobs and webhooks, for one network."""

    name = "ingestio"
    options: ClassVar[dict[str, tuple[Any, str]]] = {
        "jwt_secret": (DEFAULT_SECRET, "HS256 secret of the bearer JWTs the API accepts"),
        "network_id": (DEFAULT_NETWORK, "UUID of the emulated network (the JWTs' network_id claim)"),
    }
    stages = ("ingestio.processing",)
    settings: ClassVar[dict[str, Setting]] = {  # see the docstrings of the package's modules
        "rate_limit": Setting(600, int),  # requests per window; 0 = off
        "rate_window": _AtLeast(60, int, minimum=1),  # seconds
        "page_size": _AtLeast(10, int, minimum=1),
        "piece_size": _AtLeast(MIN_PIECE_SIZE, int, minimum=MIN_PIECE_SIZE),
        "sign_ttl": Setting(900, int),  # seconds a part signature lives
        "expire_next_signatures": Setting(0, int),
        "lose_next_complete_answers": Setting(0, int),
        "webhook_duplicates": Setting(False, bool),
    }

    def __init__(self, ctx: Context, *, jwt_secret: str = DEFAULT_SECRET, network_id: str = DEFAULT_NETWORK):
        super().__init__(ctx)
        self.jwt_secret = jwt_secret
        self.network_id = str(uuid.UUID(network_id))
        #: The user the minted token speaks for (``sub``; a video's ``author`` by default).
        self.user_id = default_user_id(self.network_id)
        #: The network's default encoding profile (``INGEST_INGESTIO_PROFILE``).
        self.profile_id = default_profile_id(self.network_id)
        #: A token valid for ten years, for the fleet (``INGEST_INGESTIO_API_KEY``).
        self.api_key = mint_token(jwt_secret, exp=int(time.time()) + TOKEN_LIFETIME, network_id=self.network_id)
        self._s3_secret = secrets.token_bytes(32)
        self._base = f"http://{ctx.address}"
        self._profile_time = _now()
        self._deliveries = self.pool("webhook", WORKERS)
        self._generation = 0  # bumped by clear, so late deliveries of a previous test are not recorded
        self.clear()

    def clear(self) -> None:
        """Forget every entity and counter; the minted token and the default profile stay valid."""
        self._generation += 1
        self._videos: dict[str, Video] = {}  # insertion order = creation order: lists are oldest first
        self._inputs: dict[str, Input] = {}
        self._jobs: dict[str, Job] = {}
        self._hooks: dict[str, Hook] = {}
        self._webhooks_sent: list[dict[str, Any]] = []
        self._requests: Counter[str] = Counter()
        self._throttled = 0
        self._window_end = 0.0  # monotonic time the current rate window ends
        self._window_used = 0
        self._expire_left = 0
        self._lose_complete_left = 0

    # -- Emulator ------------------------------------------------------------------

    def routes(self) -> list[Route]:
        p = self.name
        video = r"/videos/(?P<video_id>[^/]+)"
        inputs = r"/(?:encoding/)?inputs/?"
        upload = r"/encoding/inputs/(?P<input_id>[^/]+)/upload"
        job = r"/encoding/jobs/(?P<job_id>[^/]+)"

        def param(name: str) -> Callable[[Request], str]:
            return lambda req: req.params[name]

        return [
            route("POST", r"/videos/?", "ingestio.create_video", self._create_video, provider=p),
            route("POST", r"/videos/publish/?", "ingestio.publish_videos", self._publish_videos, provider=p),
            route("GET", r"/videos/?", "ingestio.list_videos", self._list_videos, provider=p),
            route("HEAD", r"/videos/?", "ingestio.count_videos", self._count_videos, provider=p),
            route("GET", video, "ingestio.get_video", self._get_video, provider=p, entity=param("video_id")),
            route("POST", r"/encoding/inputs/?", "ingestio.create_input", self._create_input, provider=p),
            route("GET", inputs, "ingestio.list_inputs", self._list_inputs, provider=p),
            route("HEAD", inputs, "ingestio.count_inputs", self._count_inputs, provider=p),
            route("GET", r"/(?:encoding/)?inputs/(?P<input_id>[^/]+)", "ingestio.get_input", self._get_input,
                  provider=p, entity=param("input_id")),
            route("POST", upload + "/?", "ingestio.upload_init", self._upload_init, provider=p,
                  entity=param("input_id")),
            route("POST", upload + "/sign/?", "ingestio.upload_sign", self._upload_sign, provider=p,
                  entity=param("input_id")),
            route("POST", upload + "/complete/?", "ingestio.upload_complete", self._upload_complete, provider=p,
                  entity=param("input_id")),
            route("POST", upload + "/abort/?", "ingestio.upload_abort", self._upload_abort, provider=p,
                  entity=param("input_id")),
            route("PUT", S3_PREFIX + r"(?P<key>.+)", PART_PUT, self._part_put, provider=p,
                  entity=lambda req: _key_input(unquote(req.params["key"]))),
            route("GET", r"/encoding/profiles/?", "ingestio.list_profiles", self._list_profiles, provider=p),
            route("GET", r"/encoding/profiles/(?P<profile_id>[^/]+)", "ingestio.get_profile", self._get_profile,
                  provider=p, entity=param("profile_id")),
            route("POST", r"/encoding/jobs/?", "ingestio.create_job", self._create_job, provider=p),
            route("GET", r"/encoding/jobs/?", "ingestio.list_jobs", self._list_jobs, provider=p),
            route("HEAD", r"/encoding/jobs/?", "ingestio.count_jobs", self._count_jobs, provider=p),
            route("GET", job, "ingestio.get_job", self._get_job, provider=p, entity=param("job_id")),
            route("GET", job + "/progress/?", "ingestio.job_progress", self._job_progress, provider=p,
                  entity=param("job_id")),
            route("POST", r"/hooks/?", "ingestio.create_hook", self._create_hook, provider=p),
            route("GET", r"/hooks/?", "ingestio.list_hooks", self._list_hooks, provider=p),
            route("GET", r"/hooks/(?P<hook_id>[^/]+)", "ingestio.get_hook", self._get_hook, provider=p,
                  entity=param("hook_id")),
            route("DELETE", r"/hooks/(?P<hook_id>[^/]+)", "ingestio.delete_hook", self._delete_hook, provider=p,
                  entity=param("hook_id")),
        ]

    def env(self, base_url: str) -> dict[str, str]:
        return {"INGEST_INGESTIO_BASE_URL": base_url, "INGEST_INGESTIO_API_KEY": self.api_key,
                "INGEST_INGESTIO_PROFILE": self.profile_id}

    def state(self) -> dict[str, Any]:
        """``videos``, ``jobs`` and ``hooks`` as the API shows them; ``inputs`` with their
        upload (``type``, ``uploadId``, ``size``, ``pieceSize``, ``pieceCount``, ``state``,
        ``parts`` ``{"<n>": {size, etag, puts, bytes_received}}``), ``signatures``
        ``{"<part>": count}``, ``signed_types`` ``{"<part>": contentType}``, ``status`` (the
        input's state, which the API only shows as a list filter), ``aborted``, ``completed``,
        ``assembled_size``, ``sha256``;
        ``webhooks_sent``; ``requests`` per endpoint, ``throttled`` (own-limit 429s),
        ``rate_window`` and ``expire_next_signatures_left``."""
        with self._lock:
            now = time.monotonic()
            return {
                "network_id": self.network_id,
                "profile_id": self.profile_id,
                "videos": [self._video_json(v) for v in self._videos.values()],
                "inputs": [self._input_state(i) for i in self._inputs.values()],
                "jobs": [self._job_json(j) for j in self._jobs.values()],
                "hooks": [_hook_json(h) for h in self._hooks.values()],
                "webhooks_sent": [dict(w) for w in self._webhooks_sent],
                "requests": dict(self._requests),
                "throttled": self._throttled,
                "rate_window": {"used": self._window_used if self._window_end > now else 0,
                                "resets_in": max(0.0, round(self._window_end - now, 3))},
                "expire_next_signatures_left": self._expire_left,
            }

    def configured(self) -> None:
        """A new fault configuration arms ``expire_next_signatures`` afresh."""
        with self._lock:
            self._expire_left = self.ctx.setting("expire_next_signatures")
            self._lose_complete_left = self.ctx.setting("lose_next_complete_answers")

    def error_format(self, status: int) -> Response:
        """Injected errors: ``{"errors": [<reason phrase>]}``; a 429 has an empty body (docs)."""
        if status == 429:
            return Response(429)
        return json_response({"errors": [HTTPStatus(status).phrase]}, status)

    def admit(self, req: Request) -> Response | None:
        """API calls: the version (406), the bearer JWT (401), then the own rate limit (429).
        Part PUTs are authorised by their signature instead."""
        with self._lock:
            self._requests[req.endpoint or "?"] += 1
        if req.endpoint == PART_PUT:
            return None
        if not _accepts(req.header("Accept")):
            return _error(406, f"Accept must be {ACCEPT}").response()
        try:
            self._claims(req)
        except _BadToken as exc:
            return _error(401, str(exc)).response()
        return self._throttle()

    def finish(self, req: Request, response: Response) -> None:
        """``Request-Id`` and ``X-RateLimit-*`` on every API answer (not on part PUTs)."""
        if req.endpoint == PART_PUT:
            return
        response.headers["Request-Id"] = str(uuid.uuid4())
        limit = self.ctx.setting("rate_limit")
        if not limit:
            return
        with self._lock:
            now = time.monotonic()
            active = self._window_end > now
            used = self._window_used if active else 0
            reset = math.ceil(self._window_end - now) if active else self.ctx.setting("rate_window")
        remaining = 0 if response.status == 429 else max(0, limit - used)
        if response.status == 429 and "Retry-After" in response.headers:
            # A 429 speaks of the window that refused it: an injected one ends with its Retry-After.
            reset = int(response.headers["Retry-After"])
        response.headers.update({"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                                 "X-RateLimit-Reset": str(reset)})

    # -- tokens and the rate limit -------------------------------------------------

    def _throttle(self) -> Response | None:
        """Count one request in the fixed window; a 429 (empty body) once it is full."""
        limit = self.ctx.setting("rate_limit")
        if not limit:
            return None
        with self._lock:
            now = time.monotonic()
            if self._window_end <= now:
                self._window_end, self._window_used = now + self.ctx.setting("rate_window"), 0
            if self._window_used >= limit:
                self._throttled += 1
                return Response(429, headers={"Retry-After": str(max(1, math.ceil(self._window_end - now)))})
            self._window_used += 1
        return None
