"""Batch ingest from a manifest (issue 14, item 4), through the CLI, the client, real workers
and the sandbox: a 1,000-line manifest of mixed providers with bad lines in it."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest

from ingest_fleet import BatchNotFound, Client
from tests.conftest import MEDIA, SANDBOX_URL, cli, make_source

pytestmark = pytest.mark.integration

PROVIDERS = ("gcore", "ittybit", "brightcove")
BAD = {  # line number -> (the line's cells, what its refusal names)
    7: ("vimeo,{url},bad provider,,", "unknown provider"),
    150: ("gcore,,no source,,", "source"),
    333: ("gcore,{url},bad priority,,urgent", "priority"),
    500: ("gcore,/nowhere/missing.mp4,missing file,,", "INGEST_SOURCE_ROOTS"),
    777: ("ittybit,ftp://h/a.mp4,ftp,,", "scheme 'ftp'"),
    901: ("gcore,{url},too many cells,,,extra", "more cells"),
}


def _manifest(path: Path, url: str, lines: int = 1000) -> Path:
    rows = ["provider,source,title,key,priority"]
    for n in range(1, lines + 1):
        if n in BAD:
            rows.append(BAD[n][0].format(url=url))
        else:
            rows.append(f"{PROVIDERS[n % 3]},{url},video {n},,{'low' if n % 10 == 0 else ''}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_1000_line_manifest_of_mixed_providers(start_fleet, sandbox, rt, tmp_path: Path) -> None:
    media = make_source("batch.mp4", 100_000, folder=MEDIA)
    manifest = _manifest(tmp_path / "library-2026.csv", f"{SANDBOX_URL}/media/{media.name}")

    first = cli("batch", "submit", str(manifest), "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert (result["batch_id"], result["submitted"], result["refused"]) == ("library-2026", 994, 6)
    refusals = {r["line"]: r["error"] for r in result["refused_lines"]}
    assert set(refusals) == set(BAD) and all(BAD[n][1] in refusals[n] for n in BAD), refusals
    assert rt.redis.zcard("if:jobs") == 994

    again = json.loads(cli("batch", "submit", str(manifest), "--json").stdout)  # only what is missing
    assert again["submitted"] == 994 and rt.redis.zcard("if:jobs") == 994

    queued = json.loads(cli("batch", "status", "library-2026", "--json").stdout)
    assert queued["states"] == {"queued": 994} and queued["refused"] == 6 and queued["eta_s"] is None
    assert "994 jobs (994 queued); 6 refused" in cli("batch", "status", "library-2026").stdout

    # The fleet works through it (every job running to ready is what the other tests show; the
    # rate of 1,000 is the benchmarks' business): the status follows, with an ETA.
    start_fleet(workers=2, concurrency=4)
    deadline = time.monotonic() + 120
    while (status := json.loads(cli("batch", "status", "library-2026", "--json").stdout))["states"].get("ready", 0) < 60:
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert 0 < status["finished"] < 994 and status["eta_s"] > 0 and "failed" not in status["states"], status

    report = list(csv.DictReader(io.StringIO(cli("batch", "report", "library-2026", "--csv").stdout)))
    assert len(report) == 1000 and [int(r["line"]) for r in report] == list(range(1, 1001))
    assert {r["state"] for r in report if int(r["line"]) in BAD} == {"refused"}
    ready = [r for r in report if r["state"] == "ready"]
    assert len(ready) >= 60 and all(r["job_id"] and json.loads(r["provider_ids"]) for r in ready)
    assert "unknown provider" in report[6]["error"]


def test_all_or_nothing_and_the_client(start_fleet, sandbox, rt, tmp_path: Path) -> None:
    start_fleet(workers=1)
    url = f"{SANDBOX_URL}/media/{make_source('batch-client.mp4', 100_000, folder=MEDIA).name}"
    strict = _manifest(tmp_path / "strict.csv", url, lines=10)  # line 7 is bad
    refused = cli("batch", "submit", str(strict), "--all-or-nothing")
    assert refused.returncode == 2 and "line 7: refused" in refused.stderr and "nothing stored" in refused.stdout
    assert rt.redis.zcard("if:jobs") == 0 and not rt.redis.exists("if:batch:strict")

    lines = tmp_path / "clips.jsonl"
    lines.write_text("\n".join([json.dumps({"provider": "gcore", "source": url, "key": "x"}),
                                json.dumps({"provider": "gcore", "source": url, "idempotency_key": "a"}),
                                "not json",
                                json.dumps({"provider": "ittybit", "source": url})]) + "\n")
    client = Client()
    result = client.submit_batch(lines)
    assert result.batch_id == "clips" and sorted(result.jobs) == [2, 4] and sorted(result.refused) == [1, 3]
    assert "not an intent field" in result.refused[1] and "JSON" in result.refused[3]
    assert client.submit_batch(lines).jobs == result.jobs  # again: the same jobs
    for job_id in result.jobs.values():
        assert client.wait(job_id, timeout=60)["state"] == "ready"
    assert client.batch_status("clips")["states"] == {"ready": 2}
    assert [r["state"] for r in client.batch_report("clips")] == ["refused", "ready", "refused", "ready"]
    with pytest.raises(BatchNotFound):
        client.batch_status("nope")
    assert cli("batch", "status", "nope").returncode == 2


def test_batch_status_watch_draws_a_live_bar_until_the_batch_ends(start_fleet, sandbox, tmp_path: Path) -> None:
    from tests.conftest import cli_on_terminal

    start_fleet(workers=1)
    url = f"{SANDBOX_URL}/media/{make_source('batch-watch.mp4', 100_000, folder=MEDIA).name}"
    manifest = tmp_path / "watched.csv"
    manifest.write_text("provider,source\n" + "".join(f"gcore,{url}\n" for _ in range(5)))
    assert cli("batch", "submit", str(manifest)).returncode == 0
    status, text = cli_on_terminal("batch", "status", "watched", "--watch", timeout=90)
    assert status == 0  # it returns once every job ended
    assert "batch watched" in text and "5/5" in text and "ready:5" in text, text[-2000:]
