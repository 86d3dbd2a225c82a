"""OpenTelemetry (issue 14, item 8), through a real worker with the console exporter: one trace
per job across its steps, a span per provider call, and no secret in any attribute."""

from __future__ import annotations

import json

import pytest

from tasks.producer import submit, wait
from tests.conftest import GCORE_KEY, ITTYBIT_KEY, MEDIA, SANDBOX_URL, make_source

pytestmark = pytest.mark.integration


def _spans(text: str) -> list[dict]:
    """The JSON documents the console exporter wrote (one per span, indented) among log lines."""
    spans, block = [], None
    for line in text.splitlines():
        if line == "{":
            block = [line]
        elif block is not None:
            block.append(line)
            if line == "}":
                spans.append(json.loads("\n".join(block)))
                block = None
    return spans


def test_one_trace_per_job_with_a_span_per_step_and_per_provider_call(start_fleet, sandbox) -> None:
    fleet = start_fleet(workers=1, env={"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "fleet-test"})
    pushed = make_source("traced.mp4", 300_000)
    pulled = make_source("traced-pull.mp4", 200_000, folder=MEDIA)
    push = submit({"provider": "gcore", "source": str(pushed)})
    pull = submit({"provider": "ittybit", "source": f"{SANDBOX_URL}/media/{pulled.name}"})
    assert wait(push, 60)["state"] == "ready" and wait(pull, 60)["state"] == "ready"

    logs = fleet.logs()
    spans = _spans(logs)
    for job_id, provider in ((push, "gcore"), (pull, "ittybit")):
        mine = [s for s in spans if s["context"]["trace_id"] == f"0x{job_id}"]
        steps = [s for s in mine if s["name"].startswith("ingest.")]
        calls = [s for s in mine if s["name"].startswith(f"{provider} ")]
        assert {"ingest.create", "ingest.await"} <= {s["name"] for s in steps}, steps
        assert all(s["attributes"]["ingest.job_id"] == job_id for s in steps)
        assert calls and all(s["parent_id"] in {t["context"]["span_id"] for t in steps} for s in calls)
        assert all(set(s["attributes"]) <= {"http.request.method", "server.address", "url.path",
                                            "http.response.status_code"} for s in calls)
        assert all(s["resource"]["attributes"]["service.name"] == "fleet-test" for s in mine)
    assert "ingest.upload" in {s["name"] for s in spans if s["context"]["trace_id"] == f"0x{push}"}
    assert "ingest.submit" in {s["name"] for s in spans if s["context"]["trace_id"] == f"0x{pull}"}
    rendered = json.dumps(spans)
    assert GCORE_KEY not in rendered and ITTYBIT_KEY not in rendered and "token" not in rendered.lower()
