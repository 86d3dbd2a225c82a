"""Configuration mistakes are never transient (issue 11): what can be known at submit is
refused there, naming the variable; what only a worker can know fails the job at once."""

from __future__ import annotations

import pytest

from tasks.producer import status, submit, wait
from tests.conftest import make_source

pytestmark = pytest.mark.integration


def test_an_account_the_worker_lacks_fails_the_job_at_once_naming_the_variable(start_fleet, sandbox) -> None:
    # Submitted where the account is configured, run by a worker where it is not.
    start_fleet(workers=1, concurrency=2, env={"INGEST_GCORE__TEAMB__API_KEY": ""})
    src = make_source("cfg-missing.mp4", 64 * 1024)
    job = wait(submit({"provider": "gcore", "account": "teamb", "source": str(src)}), 60)
    assert job["state"] == "failed", job
    assert job["error"]["kind"] == "permanent"
    assert "INGEST_GCORE__TEAMB__API_KEY" in job["error"]["message"]
    assert not [e for e in status(job["id"])["history"] if e.get("event") == "retry"]
