"""How a step can fail, as the fleet classifies it (ARCHITECTURE.md, principle 5).

* :class:`PermanentError` - the provider refused for good (bad input, auth, not found):
  the job fails at once with the provider's own message, nothing retries.
* :class:`TransientError` - a timeout, a dropped connection, a 5xx: retried with
  exponential backoff and full jitter, a bounded number of times per step.
* :class:`Throttled` - the provider or the fleet-wide budget says "not now": the step is
  deferred without holding a worker, and a deferral never counts as an attempt.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable (and the fix)."""


class StepError(Exception):
    """Base of every classified failure; ``str()`` is safe to log and to store."""

    def __init__(self, message: str, *, status: int | None = None, provider: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.provider = provider

    def __str__(self) -> str:
        where = f"{self.provider} " if self.provider else ""
        code = f"HTTP {self.status}: " if self.status else ""
        return f"{where}{code}{self.message}".strip()


class PermanentError(StepError):
    """Retrying cannot help; the job fails with this message."""


class TransientError(StepError):
    """Worth retrying after a backoff."""


class NotReplicated(TransientError):
    """A write reached the primary but not ``INGEST_REDIS_MIN_REPLICAS`` replicas in time: a
    failover could still lose it, so it is not acknowledged as done."""


class UploadSessionLost(TransientError):
    """The provider no longer knows the upload session (404/410): obtain a new target."""


class Throttled(StepError):
    """Not now: come back after ``retry_after`` seconds. Not a failure.

    ``reserved``: the token for the call is already taken for that time (a budget
    reservation), so the step comes back exactly then, with no jitter added.
    """

    def __init__(self, message: str, *, retry_after: float, status: int | None = None,
                 provider: str | None = None, reserved: bool = False):
        super().__init__(message, status=status, provider=provider)
        self.retry_after = max(0.0, float(retry_after))
        self.reserved = reserved
