"""Batch ingest from a manifest (issue 14, item 4): one intent per line of a CSV file (with a
header row) or of a JSON-lines file; a batch groups the jobs made from it.

A CSV's columns are intent fields (``provider``, ``source``, ``title``, ``description``,
``account``, ``idempotency_key`` or ``key``, ``priority``, ``callback_url``), ``tags`` (split
at ``;``), and ``metadata.<name>`` / ``options.<name>`` for those mappings; an empty cell is
the field's default. A JSON line is an intent object.

Submitting a manifest again enqueues only what is missing: each line's idempotency key is
``<batch>:<its own key>`` or, without one, ``<batch>:line-<n>``, so a line already stored
returns its job. The batch's keys::

    if:batch:<id>          hash: name, created_at, lines, refused (counts), updated_at
    if:batch:<id>:jobs     hash: line number -> job id
    if:batch:<id>:refused  hash: line number -> the refusal
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest_fleet.errors import IntentRefused
from ingest_fleet.wire import PREFIX

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
FIELDS = {"provider", "source", "title", "description", "account", "idempotency_key", "priority", "callback_url"}


def batch_key(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}"


def jobs_key(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}:jobs"


def refused_key(batch_id: str) -> str:
    return f"{PREFIX}:batch:{batch_id}:refused"


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise IntentRefused("batch", f"name {name!r} must be 1-64 letters, digits and ._- (give --name)")
    return name


def default_name(path: str | Path) -> str:
    """A manifest's batch name: its file name without the extension, made safe."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(path).stem).strip("-.")[:64]
    return stem or "batch"


@dataclass
class Line:
    """One line of a manifest: its number (1 = the first intent), the intent or why it is not one."""

    number: int
    intent: dict[str, Any] | None
    error: str | None = None


def _csv_intent(row: dict[str, str]) -> dict[str, Any]:
    intent: dict[str, Any] = {}
    for column, raw in row.items():
        if column is None:
            raise IntentRefused("line", "has more cells than the header has columns")
        name, value = column.strip(), (raw or "").strip()
        if not value:
            continue
        if name == "key":
            name = "idempotency_key"
        if name in FIELDS:
            intent[name] = value
        elif name == "tags":
            intent["tags"] = [t.strip() for t in value.split(";") if t.strip()]
        elif name.startswith(("metadata.", "options.")):
            group, _, sub = name.partition(".")
            intent.setdefault(group, {})[sub] = value
        else:
            raise IntentRefused(name, "is not a manifest column; use intent fields, tags, metadata.<name>, "
                                      "options.<name>")
    return intent


def read_manifest(text: str, *, kind: str | None = None) -> Iterator[Line]:
    """The lines of a manifest (``kind`` "csv" or "jsonl"; guessed from the first character)."""
    if kind is None:
        kind = "jsonl" if text.lstrip().startswith("{") else "csv"
    if kind == "jsonl":
        number = 0
        for raw in text.splitlines():
            if not raw.strip():
                continue
            number += 1
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("not an object")
                yield Line(number, data)
            except ValueError as exc:
                yield Line(number, None, f"line: is not a JSON object ({exc})")
        return
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "provider" not in reader.fieldnames or "source" not in reader.fieldnames:
        raise IntentRefused("manifest", "a CSV manifest needs a header row with at least provider and source")
    for number, row in enumerate(reader, start=1):
        try:
            yield Line(number, _csv_intent(row))
        except IntentRefused as exc:
            yield Line(number, None, str(exc))


def keyed(batch_id: str, line: Line) -> dict[str, Any]:
    """The line's intent with the batch's idempotency key."""
    intent = dict(line.intent or {})
    own = intent.get("idempotency_key")
    intent["idempotency_key"] = f"{batch_id}:{own}" if own else f"{batch_id}:line-{line.number}"
    return intent


@dataclass
class BatchResult:
    """What ``submit_batch`` did: the batch's id, the job of every stored line (new or
    already there), and the refusal of every other line (by line number)."""

    batch_id: str
    jobs: dict[int, str] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    all_or_nothing_refused: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "submitted": len(self.jobs), "refused": len(self.refused),
                "refused_lines": [{"line": n, "error": e} for n, e in sorted(self.refused.items())],
                "stored": not self.all_or_nothing_refused}


def record(redis: Any, result: BatchResult, *, lines: int, now: float, ttl: float) -> None:
    """Keep the batch in Redis (its jobs and refusals), for ``ttl`` seconds from now."""
    pipe = redis.pipeline(transaction=True)
    name = batch_key(result.batch_id)
    pipe.hsetnx(name, "created_at", now)
    pipe.hset(name, mapping={"name": result.batch_id, "lines": lines, "updated_at": now})
    pipe.delete(refused_key(result.batch_id))
    if result.jobs:
        pipe.hset(jobs_key(result.batch_id), mapping={str(n): j for n, j in result.jobs.items()})
    if result.refused:
        pipe.hset(refused_key(result.batch_id), mapping={str(n): e for n, e in result.refused.items()})
    for key in (name, jobs_key(result.batch_id), refused_key(result.batch_id)):
        pipe.expire(key, int(ttl))
    pipe.execute()


def summarize(jobs: Iterable[dict[str, Any]], refused: int, created_at: float, now: float) -> dict[str, Any]:
    """Counts by state, bytes done/total and an ETA for a batch's job records."""
    counts: dict[str, int] = {}
    done_bytes = total_bytes = 0
    finished = total = 0
    for job in jobs:
        total += 1
        counts[job["state"]] = counts.get(job["state"], 0) + 1
        done_bytes += int(job.get("bytes_done") or 0)
        total_bytes += int(job.get("bytes_total") or 0)
        finished += job["state"] in ("ready", "failed", "cancelled")
    elapsed = max(0.001, now - created_at)
    eta = None
    if 0 < finished < total:
        eta = round(elapsed * (total - finished) / finished, 1)
    elif finished == total:
        eta = 0.0
    return {"jobs": total, "refused": refused, "states": dict(sorted(counts.items())), "finished": finished,
            "bytes_done": done_bytes, "bytes_total": total_bytes, "elapsed_s": round(elapsed, 1), "eta_s": eta}


def run(lines: Iterable[Line], batch_id: str, submit: Any, check: Any, *, all_or_nothing: bool = False) -> BatchResult:
    """Submit each line's intent (``submit(intent) -> job id``); a refused line is kept with its
    reason and nothing of it stored. With ``all_or_nothing`` every line is first checked
    (``check(intent)``, raising IntentRefused) and nothing is stored if any is refused."""
    result = BatchResult(batch_id)
    todo: list[Line] = []
    for line in lines:
        if line.error is not None:
            result.refused[line.number] = line.error
        else:
            todo.append(line)
    if all_or_nothing:
        for line in todo:
            try:
                check(keyed(batch_id, line))
            except IntentRefused as exc:
                result.refused[line.number] = str(exc)
        if result.refused:
            result.all_or_nothing_refused = True
            return result
    for line in todo:
        try:
            result.jobs[line.number] = submit(keyed(batch_id, line))
        except IntentRefused as exc:
            result.refused[line.number] = str(exc)
    return result


def read(redis: Any, batch_id: str) -> tuple[dict[str, str], dict[int, dict[str, Any] | None], dict[int, str]]:
    """A stored batch: its fields, each line's job record (None once expired) and its refusals.
    Raises LookupError for an unknown batch."""
    meta = {_s(k): _s(v) for k, v in redis.hgetall(batch_key(batch_id)).items()}
    if not meta:
        raise LookupError(f"no batch {batch_id!r} (never submitted, or expired with its jobs)")
    lines = {int(_s(n)): _s(j) for n, j in redis.hgetall(jobs_key(batch_id)).items()}
    refused = {int(_s(n)): _s(e) for n, e in redis.hgetall(refused_key(batch_id)).items()}
    records: dict[int, dict[str, Any] | None] = {}
    numbers = sorted(lines)
    for start in range(0, len(numbers), 500):
        chunk = numbers[start:start + 500]
        raws = redis.mget([f"{PREFIX}:job:{lines[n]}" for n in chunk])
        for n, raw in zip(chunk, raws, strict=True):
            records[n] = json.loads(raw) if raw else None
    return meta, records, refused


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def report_rows(records: dict[int, dict[str, Any] | None], refused: dict[int, str]) -> list[dict[str, Any]]:
    """One row per manifest line: its job, state, provider ids and error (refused lines too)."""
    rows = []
    for number in sorted({*records, *refused}):
        job = records.get(number)
        if number in refused:
            rows.append({"line": number, "job_id": "", "state": "refused", "provider": "", "account": "",
                         "title": "", "provider_ids": "", "error": refused[number]})
        elif job is None:
            rows.append({"line": number, "job_id": "", "state": "expired", "provider": "", "account": "",
                         "title": "", "provider_ids": "", "error": ""})
        else:
            ids = {k: v for k, v in (job.get("provider_ids") or {}).items() if k not in ("awaiting_since",)}
            rows.append({"line": number, "job_id": job["id"], "state": job["state"], "provider": job["provider"],
                         "account": job["account"], "title": job.get("title", ""),
                         "provider_ids": json.dumps(ids, sort_keys=True) if ids else "",
                         "error": (job.get("error") or {}).get("message", "")})
    return rows


def status(redis: Any, batch_id: str, now: float) -> dict[str, Any]:
    """Counts by state, bytes and ETA of a stored batch (``batch status``)."""
    meta, records, refused = read(redis, batch_id)
    summary = summarize((r for r in records.values() if r is not None), len(refused),
                        float(meta.get("created_at", now)), now)
    return {"batch_id": batch_id, "lines": int(meta.get("lines", 0)), **summary}
