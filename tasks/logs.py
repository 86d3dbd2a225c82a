"""structlog configuration: JSON lines with ``job_id``, ``provider``, ``step``, ``task_id``.

Configured in one place; processors are plain functions. In a worker, workers.app tells
Celery not to touch logging (``setup_logging`` is connected) and binds each task's context
through contextvars in ``task_prerun`` (cleared in ``task_postrun``).

Secrets are kept out by construction (no code logs headers, credentials or tokens) and,
as a second fence, :func:`redact` masks any known secret value that reaches a log line.

Example::

    log = get_logger()
    log.info("upload.chunk", offset=10_000_000)
    # {"event": "upload.chunk", "offset": 10000000, "job_id": "...", "step": "upload", ...}
"""

from __future__ import annotations

import logging
import os
import sys
from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.typing import Processor

from tasks.errors import ConfigError

#: The process's own secrets (credentials, keys: they live as long as the process).
_PINNED: set[str] = set()
#: Secrets of the jobs this process ran lately (upload tokens, signed URLs, OAuth tokens),
#: the newest last. Bounded: a worker runs one job's step at a time, and a long-lived one must
#: neither grow with every job it ever ran nor scan them all for every log line and record.
_RECENT: OrderedDict[str, None] = OrderedDict()
RECENT_SECRETS = 64
_SECRETS: list[str] = []  # what is masked: _PINNED and _RECENT
_configured = False


def register_secret(value: str | None, *, pinned: bool = False) -> None:
    """Mask ``value`` wherever it would appear in a log line or job record of this process:
    for the process's life when ``pinned``, else while it is among the
    :data:`RECENT_SECRETS` most recently registered (a job's secrets are registered again
    each time a step opens them)."""
    if not value or len(value) < 6:
        return
    if pinned:
        _PINNED.add(value)
        _RECENT.pop(value, None)
    elif value not in _PINNED:
        _RECENT[value] = None
        _RECENT.move_to_end(value)
        while len(_RECENT) > RECENT_SECRETS:
            _RECENT.popitem(last=False)
    _SECRETS[:] = [*_PINNED, *_RECENT]


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if len(value) >= 6:
            for secret in _SECRETS:
                if secret in value:
                    value = value.replace(secret, "***")
        return value
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    return value


def scrub(value: Any) -> Any:
    """``value`` (text, or dicts and lists of it) with every registered secret masked: for what
    leaves the process other than by a log line (a job record, a task's failure in Flower)."""
    return _scrub(value) if _SECRETS else value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _SECRETS:
        return event_dict
    return {k: _scrub(v) for k, v in event_dict.items()}


def configure(level: str | None = None) -> None:
    """Route stdlib and structlog logging to JSON lines on stderr (idempotent)."""
    global _configured
    if _configured:
        return
    _configured = True
    level = (level or os.environ.get("INGEST_LOG_LEVEL", "INFO")).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        _configured = False
        raise ConfigError(f"INGEST_LOG_LEVEL={level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,  # after the traceback is text: an exception's message may carry a secret
            structlog.processors.JSONRenderer(),
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # "celery@host ready." tells operators (and the tests) a worker consumes; keep it at any level.
    logging.getLogger("celery.apps.worker").setLevel(logging.INFO)
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "kombu", "tornado.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def get_logger(name: str = "ingest") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
