"""Fleet-wide provider budgets: a GCRA limiter and a 429 cooldown, both in Redis.

Celery's ``rate_limit`` is per worker process, so N workers would send N times a
provider's limit. Here every outbound call takes a token from one Lua script keyed by
provider and account, with Redis ``TIME`` as the single clock, so the whole fleet shares
one budget however many hosts it runs on (ARCHITECTURE.md, principle 5).

Example::

    budget = ProviderBudget(redis, "gcore:default", rate=4, burst=1)
    budget.acquire(max_wait=2.0)   # sleeps up to 2 s, else raises Throttled
    ...
    budget.cool_down(retry_after=5)  # after a 429: every worker now waits 5 s
"""

from __future__ import annotations

import time
import uuid
from importlib import resources
from typing import Any

import redis

from tasks import keys
from tasks.errors import Throttled
from tasks.redis_text import text, texts
from tasks.stats import STATS

PREFIX = keys.BUDGET
#: Answers of gcra.lua.
REFUSED, GRANTED, RESERVED = 0, 1, 2
#: How long a reservation outlives its due time when its holder never comes back (ms).
RESERVATION_GRACE_MS = 600_000
#: A holder back more than half an interval after its reserved time takes the next free slot
#: instead (its call would crowd the ones reserved after it), at most this many times.
LATE_RESLOTS = 3


def _script(name: str) -> str:
    return resources.files("tasks").joinpath("lua", name).read_text()


class ProviderBudget:
    """The call budget of one provider account, shared by every worker of the fleet.

    ``headroom`` keeps the fleet a little under the provider's limit: grants are exact at
    Redis, but a request reaches the provider a few milliseconds after its grant, and that
    jitter must never put one more call into the provider's window than it allows.
    """

    def __init__(self, client: redis.Redis, key: str, *, rate: float, burst: int = 1,
                 headroom: float = 0.0, cooldown_base: float = 1.0, cooldown_cap: float = 60.0):
        self.key = key
        self._account_field = ":".join(key.split(":")[:2])  # provider:account, for the fleet's counters
        self.rate = rate
        self.burst = max(1, int(burst))
        self.headroom = headroom
        self.cooldown_base = cooldown_base
        self.cooldown_cap = cooldown_cap
        self._redis = client
        self._gcra = client.register_script(_script("gcra.lua"))
        self._cooldown = client.register_script(_script("cooldown.lua"))

    def _keys(self, holder: str | None = None) -> list[str]:
        minute = int(time.time() // 60)
        return [f"{PREFIX}:tat:{self.key}", f"{PREFIX}:cooldown:{self.key}",
                f"{PREFIX}:granted:{self.key}:{minute}", f"{PREFIX}:resv:{self.key}:{holder or '-'}"]

    def _interval_us(self) -> int:
        return 0 if self.rate <= 0 else int(1_000_000 / (self.rate * (1 - self.headroom)))

    def _take(self, *, max_wait: float, holder: str | None) -> tuple[int, float]:
        code, us = self._gcra(keys=self._keys(holder), args=[
            self._interval_us(), self.burst, int(max_wait * 1_000_000), 1 if holder else 0,
            RESERVATION_GRACE_MS, LATE_RESLOTS])
        return int(code), us / 1_000_000

    def try_acquire(self) -> float:
        """Take one token if one is free now: 0.0 when granted, else the seconds to wait."""
        code, wait = self._take(max_wait=0.0, holder=None)
        return 0.0 if code == GRANTED else wait

    def acquire(self, *, max_wait: float, holder: str | None = None) -> None:
        """Take a token, sleeping at most ``max_wait`` for it.

        A longer wait raises :class:`Throttled` so the caller can defer its task instead of
        holding a worker. With a ``holder`` (a job) the token is *reserved* for the time it
        falls due before raising, and the holder's next ``acquire`` on this budget uses that
        reservation instead of queueing again: a deferred step always gets its call at the
        time it deferred to, however busy the budget (issue 11: waits make progress). A
        holder back more than half an interval late takes the next free slot instead (at most
        ``LATE_RESLOTS`` times), so late calls never crowd the provider's window.
        """
        deadline = time.monotonic() + max_wait
        while True:
            code, wait = self._take(max_wait=max(0.0, deadline - time.monotonic()), holder=holder)
            if code == GRANTED:
                if wait > 0:
                    time.sleep(wait)  # the token is ours; its time comes within max_wait
                return
            if code == RESERVED or time.monotonic() + wait > deadline:
                self._redis.hincrby(STATS["throttle_waits"], self._account_field, 1)
                raise Throttled(f"budget {self.key} exhausted", retry_after=wait, reserved=code == RESERVED)
            time.sleep(wait)  # a cooldown or a reservation due within max_wait

    def charge(self, *, holder: str) -> float:
        """Take a token for a call already made (e.g. the call that created the entity it is
        about): never raises; returns how long after now the token falls due."""
        spent = f"{holder}:spent:{uuid.uuid4().hex}"
        code, wait = self._take(max_wait=0.0, holder=spent)
        if code == RESERVED:
            self._redis.delete(self._keys(spent)[3])  # the call was made: nobody is to use it
        return wait

    def cool_down(self, retry_after: float | None) -> float:
        """Record a provider 429: pause this account fleet-wide; returns the pause in seconds.

        Without ``Retry-After`` the pause grows exponentially with consecutive 429s, capped.
        """
        names = [f"{PREFIX}:cooldown:{self.key}", f"{PREFIX}:throttles:{self.key}"]
        seconds = -1 if retry_after is None else max(0.0, retry_after)
        applied = self._cooldown(keys=names, args=[seconds, self.cooldown_base, self.cooldown_cap])
        self._redis.hincrby(STATS["cooldowns"], self._account_field, 1)
        return float(applied) / 1_000_000

    def observe(self, *, limit: int | None, remaining: int | None, reset: float | None) -> None:
        """Learn from a provider's ``X-RateLimit-*`` headers: record them for ``budgets``, and
        when nothing remains, pause the account fleet-wide until the window resets."""
        given = (("limit", limit), ("remaining", remaining), ("reset", reset))
        fields: dict[Any, float] = {k: v for k, v in given if v is not None}
        if fields:
            key = f"{PREFIX}:observed:{self.key}"
            self._redis.hset(key, mapping={**fields, "at": time.time()})
            self._redis.expire(key, 3600)
        if remaining is not None and remaining <= 0:
            self.cool_down(reset if reset is not None else None)

    def _now(self) -> float:
        sec, usec = self._redis.time()  # the fleet's clock, not this host's
        return sec + usec / 1_000_000

    def cooldown_remaining(self) -> float:
        until = self._redis.get(f"{PREFIX}:cooldown:{self.key}")
        if not until:
            return 0.0
        return max(0.0, int(until) / 1_000_000 - self._now())

    def stats(self) -> dict[str, Any]:
        """Granted calls per second over the last minute (sliding estimate), cooldown, learned limits."""
        now = self._now()
        minute, into = divmod(now, 60)
        cur, prev = self._redis.mget(f"{PREFIX}:granted:{self.key}:{int(minute)}",
                                     f"{PREFIX}:granted:{self.key}:{int(minute) - 1}")
        last_minute = int(prev or 0) * (1 - into / 60) + int(cur or 0)
        observed = {text(k): float(v) for k, v in self._redis.hgetall(f"{PREFIX}:observed:{self.key}").items()}
        return {"rate_last_minute": round(last_minute / 60, 2), "cooldown_s": round(self.cooldown_remaining(), 2),
                "observed": observed or None}


class ProviderSlots:
    """Provider-side jobs of one account submitted and not yet terminal: a ledger in Redis.

    A job takes its slot before the call that starts work at the provider and keeps it until
    its terminal state, long after the worker task has returned (Brightcove: 200 concurrent
    jobs per account). Without a free slot a job joins the waiters - ordered by priority,
    then age - and holds no worker; a release wakes the next waiters.

    Example::

        slots = ProviderSlots(r, "brightcove:default", limit=200)
        if not slots.acquire(job_id, score=..., wake_with=dispatch_member):
            ...  # waiting: the dispatch is scheduled again when a slot frees
        for member in slots.release(job_id): schedule(member)
    """

    def __init__(self, client: redis.Redis, key: str, *, limit: int):
        self.key = key
        self.limit = limit
        self._redis = client
        self._acquire = client.register_script(_script("slot_acquire.lua"))
        self._release = client.register_script(_script("slot_release.lua"))

    @property
    def keys(self) -> list[str]:
        return [f"{PREFIX}:slots:{self.key}", f"{PREFIX}:slotwait:{self.key}", f"{PREFIX}:slotwake:{self.key}",
                f"{PREFIX}:slotlimit:{self.key}"]

    def acquire(self, job_id: str, *, score: float, wake_with: str) -> bool:
        return bool(self._acquire(keys=self.keys, args=[job_id, self.limit, score, wake_with]))

    def release(self, job_id: str) -> list[str]:
        woken = self._release(keys=self.keys, args=[job_id, self.limit])
        return [m.decode() if isinstance(m, bytes) else m for m in woken if m]

    def holders(self) -> list[str]:
        return texts(self._redis.zrange(self.keys[0], 0, -1))

    def waiters(self) -> list[str]:
        return texts(self._redis.zrange(self.keys[1], 0, -1))
