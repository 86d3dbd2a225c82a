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
from importlib import resources

import redis

from tasks.errors import Throttled

PREFIX = "if:budget"


def _script(name: str) -> str:
    return resources.files("workers").joinpath("lua", name).read_text()


class ProviderBudget:
    """The call budget of one provider account, shared by every worker of the fleet."""

    def __init__(self, client: redis.Redis, key: str, *, rate: float, burst: int = 1,
                 cooldown_base: float = 1.0, cooldown_cap: float = 60.0):
        self.key = key
        self.rate = rate
        self.burst = max(1, int(burst))
        self.cooldown_base = cooldown_base
        self.cooldown_cap = cooldown_cap
        self._redis = client
        self._gcra = client.register_script(_script("gcra.lua"))
        self._cooldown = client.register_script(_script("cooldown.lua"))

    @property
    def _keys(self) -> list[str]:
        minute = int(time.time() // 60)
        return [f"{PREFIX}:tat:{self.key}", f"{PREFIX}:cooldown:{self.key}",
                f"{PREFIX}:granted:{self.key}:{minute}"]

    def try_acquire(self) -> float:
        """Take one token if one is free: 0.0 when granted, else the seconds to wait."""
        if self.rate <= 0:  # unlimited; a cooldown still applies
            granted, wait_us = self._gcra(keys=self._keys, args=[0, 1_000_000])
        else:
            granted, wait_us = self._gcra(keys=self._keys, args=[int(1_000_000 / self.rate), self.burst])
        return 0.0 if granted else wait_us / 1_000_000

    def acquire(self, *, max_wait: float) -> None:
        """Block until a token is granted, sleeping at most ``max_wait`` in all.

        A wait longer than that raises :class:`Throttled` so the caller can defer its
        task instead of holding a worker.
        """
        deadline = time.monotonic() + max_wait
        while True:
            wait = self.try_acquire()
            if wait == 0.0:
                return
            if time.monotonic() + wait > deadline:
                raise Throttled(f"budget {self.key} exhausted", retry_after=wait)
            time.sleep(wait)

    def cool_down(self, retry_after: float | None) -> float:
        """Record a provider 429: pause this account fleet-wide; returns the pause in seconds.

        Without ``Retry-After`` the pause grows exponentially with consecutive 429s, capped.
        """
        keys = [f"{PREFIX}:cooldown:{self.key}", f"{PREFIX}:throttles:{self.key}"]
        seconds = -1 if retry_after is None else max(0.0, retry_after)
        applied = self._cooldown(keys=keys, args=[seconds, self.cooldown_base, self.cooldown_cap])
        return applied / 1_000_000

    def cooldown_remaining(self) -> float:
        until = self._redis.get(f"{PREFIX}:cooldown:{self.key}")
        if not until:
            return 0.0
        sec, usec = self._redis.time()  # the fleet's clock, not this host's
        return max(0.0, (int(until) - (sec * 1_000_000 + usec)) / 1_000_000)
