"""OpenTelemetry traces, optional (issue 14, item 8): with the ``otel`` extra installed and
``OTEL_TRACES_EXPORTER`` set (``otlp`` or ``console``), every job is one trace across its steps
and processes, with a span per step and a span per provider call.

The trace id is the job id (both are 128 bits), so every step, on any worker, joins the same
trace without carrying a context in its message. A step's span has the attributes
``ingest.job_id``, ``ingest.provider``, ``ingest.account`` and ``ingest.step``; a provider call's
span ``http.request.method``, ``server.address``, ``url.path`` and ``http.response.status_code``.
Nothing else: no query string, no header, no body, so no credential reaches a span.

Without the extra, or with ``OTEL_TRACES_EXPORTER`` unset or ``none``, every function here
costs one attribute check.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

try:  # the `otel` extra
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
except ImportError:  # pragma: no cover - the extra is optional
    trace = None  # type: ignore[assignment]

_state: dict[str, Any] = {"pid": None, "tracer": None}


def _tracer() -> Any:
    """This process's tracer, set up on first use (after a fork, again), or None when off."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if trace is None or exporter in ("", "none"):
        return None
    if _state["pid"] != os.getpid():
        provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get(
            "OTEL_SERVICE_NAME", "ingest-fleet")}))
        if exporter == "console":  # one JSON document per span on stdout, written at once
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _state.update(pid=os.getpid(), tracer=provider.get_tracer("ingest-fleet"), provider=provider)
    return _state["tracer"]


def _job_parent(job_id: str) -> Any:
    """The remote parent every span of the job hangs from: trace id = the job id."""
    context = SpanContext(trace_id=int(job_id, 16), span_id=int(job_id[:16], 16) or 1, is_remote=True,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(context))


@contextmanager
def step_span(job_id: str, provider: str, account: str, step: str) -> Iterator[None]:
    tracer = _tracer()
    try:
        int(job_id, 16)
    except ValueError:
        tracer = None
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(f"ingest.{step}", context=_job_parent(job_id), attributes={
            "ingest.job_id": job_id, "ingest.provider": provider, "ingest.account": account, "ingest.step": step}):
        yield


@contextmanager
def call_span(provider: str, method: str, url: str) -> Iterator[Any]:
    """A provider call, inside the current step's span; yields a setter for its status."""
    tracer = _tracer()
    if tracer is None:
        yield lambda status: None
        return
    parts = urlsplit(url)
    with tracer.start_as_current_span(f"{provider} {method.upper()}", attributes={
            "http.request.method": method.upper(), "server.address": parts.hostname or "",
            "url.path": parts.path}) as span:
        yield lambda status: span.set_attribute("http.response.status_code", int(status))


def flush() -> None:
    provider = _state.get("provider")
    if provider is not None and _state["pid"] == os.getpid():
        provider.force_flush()
