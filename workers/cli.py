"""The ``ingest-fleet`` command. Scripts and operators rely on its contract:

* exit 0 success; 1 the job failed (``submit --wait``); 2 refused input or configuration
  (one line on stderr naming the field and the fix; nothing stored, nothing enqueued);
  3 Redis unreachable; 4 ``submit --wait`` timed out (the job goes on).
* ``--json`` prints the job record(s) as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

EXIT_FAILED, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_TIMEOUT = 1, 2, 3, 4


def _meta(pairs: Sequence[str], field: str = "metadata") -> dict[str, str]:
    from tasks.intent import IntentError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            flag = "--meta" if field == "metadata" else "--opt"
            raise IntentError(field, f"{flag} {pair!r} is not KEY=VALUE")
        out[key] = value
    return out


def _print_job(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return
    done, total = record.get("bytes_done") or 0, record.get("bytes_total")
    size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total else "-"
    print(f"{record['id']}  {record['provider']:<8} {record['state']:<11} {size:<18} {record['title']}")
    if record.get("error"):
        print(f"    error ({record['error'].get('step')}): {record['error'].get('message')}")


def cmd_submit(args: argparse.Namespace) -> int:
    from tasks.producer import submit, wait

    intent = {
        "provider": args.provider, "source": args.source, "title": args.title,
        "description": args.description or "", "account": args.account,
        "idempotency_key": args.key, "metadata": _meta(args.meta or []), "tags": args.tag or [],
        "priority": args.priority, "options": {**_meta(args.opt or [], "options"), **({"sync": True} if args.sync else {})},
        "callback_url": args.callback, "relay": args.relay,
    }
    job_id = submit(intent)
    _warn_if_unserved(job_id)
    if not args.wait:
        if args.json:
            from tasks.producer import status

            _print_job(status(job_id), True)
        else:
            print(job_id)
        return 0
    if not args.json:
        print(job_id, file=sys.stderr)
    on_terminal = sys.stderr.isatty() and not args.json
    record = _wait_with_bar(job_id, args.timeout) if on_terminal else wait(job_id, timeout=args.timeout)
    _print_job(record, args.json)
    if record["state"] == "ready":
        return 0
    if record["state"] in ("failed", "cancelled"):
        return EXIT_FAILED
    print(f"error: job {job_id} not finished after {args.timeout} s (still {record['state']}; it goes on: "
          f"ingest-fleet status {job_id})", file=sys.stderr)
    return EXIT_TIMEOUT


def _wait_with_bar(job_id: str, timeout: float | None) -> dict[str, Any]:
    """``submit --wait`` on a terminal: a progress bar of the job's bytes and state."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.producer import status

    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[state]}"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(job_id[:8], total=None, state="queued")
        while True:
            record = status(job_id)
            bar.update(task, total=record.get("bytes_total") or None, completed=record.get("bytes_done") or 0,
                       state=record["state"])
            if record["state"] in ("ready", "failed", "cancelled"):
                return record
            if deadline is not None and time.monotonic() >= deadline:
                return record
            time.sleep(0.5)


def _warn_if_unserved(job_id: str) -> None:
    """A warning when no live worker consumes the queue the job's next step waits in."""
    from tasks.runtime import runtime
    from tasks.served import consumers

    rt = runtime()
    job = rt.store.get(job_id)
    queue = (job.dispatch or {}).get("queue") if job else None
    if queue and not consumers(rt, queue):
        kind = queue.split(".")[1]
        print(f"warning: no worker consumes queue {queue}; the job waits until one does "
              f"(ingest-fleet worker --kind {kind})", file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from tasks.producer import status

    record = status(args.job_id)
    _print_job(record, args.json)
    if not args.json:
        for entry in record["history"][-8:]:
            when = time.strftime("%H:%M:%S", time.localtime(entry["at"]))
            detail = " ".join(f"{k}={v}" for k, v in entry.items() if k not in ("at", "event"))
            print(f"    {when} {entry['event']} {detail}")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from tasks.retention import page
    from tasks.runtime import runtime

    records, cursor = page(runtime(), limit=args.limit, cursor=args.cursor, since=_since(args.since),
                           keep=lambda job: (not args.state or job.state == args.state)
                           and (not args.provider or job.provider == args.provider))
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        for record in records:
            _print_job(record, False)
    if cursor:  # on stderr, so stdout stays the list (or the JSON array) alone
        print(f"more: --cursor {cursor}", file=sys.stderr)
    return 0


def _since(value: str | None) -> float | None:
    """``--since``: unix seconds, an ISO 8601 time, or an age such as 90s, 30m, 12h, 7d."""
    from datetime import datetime

    from tasks.intent import IntentError

    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
            return time.time() - float(value[:-1]) * units[value[-1]]
        if value.replace(".", "", 1).isdigit():
            return float(value)
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise IntentError("since", f"{value!r} is not unix seconds, an ISO 8601 time or an age like 12h") from None


def cmd_batch_submit(args: argparse.Namespace) -> int:
    """A manifest's lines as one batch, with the fleet's own door (tasks.producer)."""
    from pathlib import Path

    from ingest_fleet import batch
    from tasks.intent import Intent
    from tasks.producer import submit
    from tasks.runtime import runtime

    rt = runtime()
    path = Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        from tasks.intent import IntentError

        raise IntentError("file", f"cannot read {args.file}: {exc.strerror}") from None
    lines = list(batch.read_manifest(text, kind="jsonl" if path.suffix in (".jsonl", ".ndjson") else None))
    batch_id = batch.check_name(args.name or batch.default_name(path))
    served = rt.served()
    result = batch.run(lines, batch_id, lambda intent: submit(intent, rt=rt),
                       lambda intent: Intent.from_dict(intent).validate(rt.settings, served=served),
                       all_or_nothing=args.all_or_nothing)
    if not result.all_or_nothing_refused:
        batch.record(rt.redis, result, lines=len(lines), now=rt.clock.now(), ttl=rt.settings.job_retention)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        for number, error in sorted(result.refused.items()):
            print(f"line {number}: refused: {error}", file=sys.stderr)
        what = "nothing stored (--all-or-nothing)" if result.all_or_nothing_refused else f"{len(result.jobs)} submitted"
        print(f"batch {batch_id}: {what}, {len(result.refused)} refused of {len(lines)} lines")
    return EXIT_REFUSED if result.all_or_nothing_refused else 0


def cmd_batch_status(args: argparse.Namespace) -> int:
    from ingest_fleet import batch
    from tasks.runtime import runtime

    rt = runtime()

    def current() -> dict[str, Any]:
        try:
            return batch.status(rt.redis, args.batch_id, rt.clock.now())
        except LookupError:
            from ingest_fleet.errors import BatchNotFound

            raise BatchNotFound(args.batch_id) from None

    if args.watch and sys.stdout.isatty() and not args.json:
        _watch_batch(current)
        return 0
    summary = current()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    states = ", ".join(f"{n} {s}" for s, n in summary["states"].items()) or "no jobs"
    eta = "-" if summary["eta_s"] is None else f"{summary['eta_s']:.0f} s"
    print(f"batch {summary['batch_id']}: {summary['jobs']} jobs ({states}); {summary['refused']} refused; "
          f"{summary['bytes_done'] / 1e6:.1f}/{summary['bytes_total'] / 1e6:.1f} MB; ETA {eta}")
    return 0


def _watch_batch(current: Any) -> None:
    """A live progress bar of a batch until every job ended (Ctrl-C stops watching)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[states]}"), TimeRemainingColumn()) as bar:
        summary = current()
        task = bar.add_task(f"batch {summary['batch_id']}", total=summary["jobs"], states="")
        while True:
            states = " ".join(f"{s}:{n}" for s, n in summary["states"].items())
            bar.update(task, completed=summary["finished"], states=states)
            if summary["finished"] >= summary["jobs"]:
                return
            time.sleep(1.0)
            summary = current()


def cmd_batch_report(args: argparse.Namespace) -> int:
    import csv

    from ingest_fleet import batch
    from tasks.runtime import runtime

    try:
        _meta, records, refused = batch.read(runtime().redis, args.batch_id)
    except LookupError:
        from ingest_fleet.errors import BatchNotFound

        raise BatchNotFound(args.batch_id) from None
    rows = batch.report_rows(records, refused)
    if args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["line"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from tasks.retention import prune
    from tasks.runtime import runtime

    rt = runtime()
    older = args.older_than if args.older_than is not None else rt.settings.job_retention
    done = prune(rt, older_than=older, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    if args.json:
        print(json.dumps({"removed": done.removed, "dangling": done.dangling, "dry_run": args.dry_run}))
    else:
        print(f"{verb} {done.removed} finished job(s) older than {older:g} s and "
              f"{done.dangling} index entr{'y' if done.dangling == 1 else 'ies'} of expired records")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from tasks.admin import retry

    record = retry(args.job_id)
    _print_job(record, args.json)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from tasks.admin import cancel

    record = cancel(args.job_id)
    _print_job(record, args.json)
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    from tasks.config import settings_listing
    from tasks.intent import IntentError
    from tasks.providers import REGISTRY

    for provider in args.provider:
        if provider not in REGISTRY:
            raise IntentError("provider", f"unknown provider {provider!r}; choose from {', '.join(REGISTRY)}")
    print(settings_listing(args.provider), end="")
    return 0


def cmd_budgets(args: argparse.Namespace) -> int:
    from tasks.admin import report

    rows = report()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'provider':<11}{'account':<10}{'limit/s':>8}{'last min/s':>11}{'cooldown':>9}"
          f"{'slots':>11}{'waiting':>8}{'backlog':>8}{'oldest':>9}")
    for r in rows:
        slots = f"{r['slots']['used']}/{r['slots']['total'] or '-'}"
        oldest = f"{r['oldest_age_s']:.0f}s" if r["oldest_age_s"] is not None else "-"
        cooldown = f"{r['cooldown_s']:.1f}s" if r["cooldown_s"] else "-"
        rate = f"{r['limit']['rate']:g}" if r["limit"]["rate"] else "-"
        print(f"{r['provider']:<11}{r['account']:<10}{rate:>8}{r['rate_last_minute']:>11.2f}{cooldown:>9}"
              f"{slots:>11}{r['slots']['waiting']:>8}{r['backlog']:>8}{oldest:>9}")
    return 0


def cmd_secret_key(_: argparse.Namespace) -> int:
    from tasks.sealed import new_key

    print(new_key())
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from tasks.admin import config_check

    report = config_check()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        for name, value in report["settings"].items():
            print(f"{name:<24} {value}")
        redis_row = report["redis"]
        print(f"redis                    {'ok' if redis_row.get('ok') else 'FAILED'} "
              f"{redis_row.get('version') or redis_row.get('error', '')} {redis_row.get('warning', '')}".rstrip())
        for row in report["accounts"]:
            verdict = {True: "ok", False: "FAILED", None: "not checked"}[row["ok"]]
            print(f"{row['provider']}/{row['account']:<16} {verdict}: {row.get('checked') or row.get('error')}")
    failed = not report["redis"].get("ok") or any(row["ok"] is False for row in report["accounts"])
    return EXIT_REFUSED if failed else 0


def cmd_worker(args: argparse.Namespace) -> int:
    from tasks.config import Settings
    from tasks.queues import queues_of_kind
    from tasks.sealed import Sealer
    from workers.procs import worker_argv

    # Refused at the door: a worker keeps upload credentials and tokens only sealed.
    Sealer(Settings.from_env().secret_key)

    if args.queues:
        queues = args.queues.split(",")
    elif args.kind:
        queues = queues_of_kind(args.kind)
    else:
        queues = None
    argv = worker_argv(queues, concurrency=args.concurrency, name=args.name or args.kind or "worker",
                       loglevel=args.loglevel) + list(args.celery_options)
    os.execv(argv[0], argv)  # the worker becomes this process: signals reach Celery directly


def cmd_scheduler(_: argparse.Namespace) -> int:
    from workers.scheduler import main

    main()
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from workers.metrics import main

    return main(args.host, args.port)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from tasks.reconcile import reconcile

    done = reconcile(dry_run=args.dry_run)
    if args.json:
        print(json.dumps(done, indent=2))
        return 0
    verb = "would re-enqueue" if args.dry_run else "re-enqueued"
    for entry in done:
        print(f"{verb} {entry['job_id']}  {entry['provider']}/{entry['account']}  {entry['state']} at {entry['step']}")
    print(f"{len(done)} job(s) {verb}; every other job in progress has a live message, schedule entry or lease")
    return 0


def cmd_flower(args: argparse.Namespace) -> int:
    from workers.procs import flower_argv

    if not os.environ.get("FLOWER_BASIC_AUTH") and not args.no_auth:
        print("error: FLOWER_BASIC_AUTH: not set; set it to user:password (Flower's API can send tasks, "
              "so it never runs open; --no-auth only for a loopback-only debug session)", file=sys.stderr)
        return EXIT_REFUSED
    argv = flower_argv(args.port, args.address)
    os.execv(argv[0], argv)


def cmd_sandbox(args: argparse.Namespace, extra: Sequence[str]) -> int:
    import sandbox
    from tasks.sealed import VAR, new_key

    # Every setting a fleet pointed at the sandbox needs, the fleet's own seal key included
    # (a fresh one unless the environment has one).
    if not os.environ.get(VAR):
        print(f"export {VAR}={new_key()}", flush=True)
    argv = ["--host", args.host, "--port", str(args.port), *extra]
    return sandbox.main(argv) or 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    from workers.webhooks import main

    return main(args.host, args.port)


def cmd_demo(args: argparse.Namespace) -> int:
    from workers.demo import main

    return main(keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    p = argparse.ArgumentParser(prog="ingest-fleet", description="Carry video ingest intents into video platforms.")
    try:
        p.add_argument("--version", action="version", version=f"ingest-fleet {version('ingest-fleet')}")
    except PackageNotFoundError:  # run from a checkout without installing it
        p.add_argument("--version", action="version", version="ingest-fleet (not installed)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("config", help="configuration")
    config_sub = s.add_subparsers(dest="config_command", required=True)
    c = config_sub.add_parser("check", help="the resolved settings (secrets masked), Redis, and each account's "
                                            "credentials with one cheap call (exit 2 if any fails)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_config_check)

    s = sub.add_parser("submit", help="validate an intent and enqueue its job; prints the job id")
    s.add_argument("--provider", required=True)
    s.add_argument("--source", required=True, help="a file under INGEST_SOURCE_ROOTS, or a URL the provider pulls")
    s.add_argument("--title")
    s.add_argument("--description")
    s.add_argument("--account", default="default")
    s.add_argument("--key", help="idempotency key: the same key gives the same job")
    s.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata (Brightcove: custom fields)")
    s.add_argument("--tag", action="append", help="a tag (repeat for more)")
    s.add_argument("--callback", metavar="URL", help="POST the signed job record here on each terminal state")
    s.add_argument("--relay", action="store_true", help="the fleet reads the URL and pushes it, even where the "
                                                        "provider could fetch it itself")
    s.add_argument("--opt", action="append", metavar="NAME=VALUE",
                   help="a provider option, e.g. Ittybit folder=... / filename=...")
    s.add_argument("--sync", action="store_true", help="Ittybit: ingest with POST /files (small files)")
    s.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    s.add_argument("--wait", action="store_true", help="wait for ready (exit 0) or failed (exit 1)")
    s.add_argument("--timeout", type=float, default=None, help="with --wait: give up after this many seconds")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("status", help="one job's record")
    s.add_argument("job_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("jobs", help="list jobs")
    s.add_argument("--state", choices=["queued", "creating", "uploading", "submitting", "processing", "ready",
                                       "failed", "cancelled"])
    s.add_argument("--provider")
    s.add_argument("--limit", type=int, default=100, help="jobs per page, newest first (default 100)")
    s.add_argument("--cursor", help="the next page: what the last page printed after 'more:'")
    s.add_argument("--since", help="only jobs created since: unix seconds, ISO 8601, or an age (12h, 7d)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_jobs)

    s = sub.add_parser("batch", help="submit a manifest as one batch; its status and report")
    batch_sub = s.add_subparsers(dest="batch_command", required=True)
    b = batch_sub.add_parser("submit", help="one intent per line: CSV with a header row, or JSON lines")
    b.add_argument("file")
    b.add_argument("--name", help="the batch's id (default: the file's name); the same name again "
                                  "stores only the lines not stored yet")
    b.add_argument("--all-or-nothing", action="store_true", help="store nothing if any line is refused")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_batch_submit)
    b = batch_sub.add_parser("status", help="counts by state, bytes and an ETA")
    b.add_argument("batch_id")
    b.add_argument("--watch", action="store_true", help="a live progress bar until every job ended")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_batch_status)
    b = batch_sub.add_parser("report", help="one line per intent: job id, state, provider ids, error")
    b.add_argument("batch_id")
    b.add_argument("--csv", action="store_true", help="CSV instead of JSON")
    b.set_defaults(func=cmd_batch_report)

    s = sub.add_parser("prune", help="remove finished jobs older than INGEST_JOB_RETENTION now "
                                     "(records expire by themselves; this also cleans the jobs index)")
    s.add_argument("--older-than", type=float, metavar="SECONDS", help="default: INGEST_JOB_RETENTION")
    s.add_argument("--dry-run", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_prune)

    s = sub.add_parser("retry", help="restart a failed job from the step that failed")
    s.add_argument("job_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_retry)

    s = sub.add_parser("cancel", help="stop a job and release what it holds")
    s.add_argument("job_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_cancel)

    s = sub.add_parser("budgets", help="per provider and account: limit, rate, cooldown, slots, backlog")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_budgets)

    s = sub.add_parser("settings", help="every provider setting with its default, as deploy/.env.example lists "
                                        "them (INGEST_<PROVIDER>__<ACCOUNT>__<SETTING> for a named account)")
    s.add_argument("provider", nargs="*", help="only these providers")
    s.set_defaults(func=cmd_settings)

    s = sub.add_parser("secret-key", help="print a new INGEST_SECRET_KEY (a Fernet key: it seals upload "
                                          "credentials and tokens at rest in Redis)")
    s.set_defaults(func=cmd_secret_key)

    s = sub.add_parser("worker", help="run a Celery worker (celery -A workers.app worker)")
    s.add_argument("-Q", "--queues", help="comma-separated queues (default: all)")
    s.add_argument("--kind", choices=["api", "upload", "poll"],
                   help="consume this kind of work for every provider (e.g. gcore.upload, ...)")
    s.add_argument("-c", "--concurrency", type=int, default=2)
    s.add_argument("-n", "--name", help="node name (default: the kind, or 'worker')")
    s.add_argument("--loglevel", default="INFO")
    s.set_defaults(func=cmd_worker, celery_options=[])
    s.epilog = "Any further option goes to `celery worker` as it is (e.g. -- --max-tasks-per-child 100)."

    s = sub.add_parser("scheduler", help="run the scheduler (due polls, backoffs, deferrals)")
    s.set_defaults(func=cmd_scheduler)

    s = sub.add_parser("reconcile", help="re-enqueue jobs in progress that have no live message, wait or lease "
                                         "(after Redis lost writes)")
    s.add_argument("--dry-run", action="store_true", help="only list them")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_reconcile)

    s = sub.add_parser("metrics", help="run the Prometheus exporter (/metrics, /scaling for KEDA, /healthz)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9480)
    s.set_defaults(func=cmd_metrics)

    s = sub.add_parser("health", help="exit 0 while this container's worker or scheduler is alive "
                                      "(its heartbeat file is fresh); does not need Redis")
    s.set_defaults(func=None)

    s = sub.add_parser("flower", help="run Flower with basic auth from FLOWER_BASIC_AUTH")
    s.add_argument("--port", type=int, default=5555)
    s.add_argument("--address", default="127.0.0.1")
    s.add_argument("--no-auth", action="store_true", help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_flower)

    s = sub.add_parser("webhooks", help="run the webhook receiver (provider notifications end waits early)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8480)
    s.set_defaults(func=cmd_webhooks)

    s = sub.add_parser("sandbox", help="run the provider emulators; prints the settings that point the fleet at them")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8470)
    s.set_defaults(func=cmd_sandbox)

    s = sub.add_parser("demo", help="run the whole fleet against the sandbox and ingest sample videos")
    s.add_argument("--keep", action="store_true", help="leave everything running afterwards")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list == ["health"]:  # the liveness probe: no imports of the fleet, no Redis
        from workers.health import healthy

        return 0 if healthy() else 1
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # --version and --help need nothing of the fleet
    try:
        import celery  # noqa: F401  (the fleet's dependencies: the `fleet` extra)
    except ImportError:
        print("error: the ingest-fleet command runs the fleet and needs its dependencies: "
              "pip install 'ingest-fleet[fleet]' (applications only need `from ingest_fleet import Client`)",
              file=sys.stderr)
        return EXIT_REFUSED
    import redis

    from ingest_fleet.errors import BatchNotFound
    from tasks import logs as fleet_logging
    from tasks.config import ConfigError, unknown_variables
    from tasks.errors import NotReplicated
    from tasks.intent import IntentError
    from tasks.producer import JobNotFound

    if args.command == "worker":  # further Celery worker options go through (after a --, or as they are)
        args.celery_options = [o for o in extra if o != "--"]
    elif extra and args.command != "sandbox":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        fleet_logging.configure()  # JSON log lines go to stderr; stdout is for results
        for line in unknown_variables(os.environ):
            print(f"warning: {line}", file=sys.stderr)
        if args.command == "sandbox":
            return cmd_sandbox(args, extra)
        return args.func(args)
    except (IntentError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except JobNotFound as exc:
        print(f"error: job_id: {exc.args[0]}", file=sys.stderr)
        return EXIT_REFUSED
    except BatchNotFound as exc:
        print(f"error: batch: {exc.args[0]}", file=sys.stderr)
        return EXIT_REFUSED
    except redis.ResponseError as exc:
        if "DB index" not in str(exc):
            raise
        print(f"error: REDIS_URL: the database does not exist on this server ({exc}); use 0-15 unless "
              "the server sets `databases` higher", file=sys.stderr)
        return EXIT_REFUSED
    except redis.ConnectionError as exc:
        print(f"error: cannot reach Redis at REDIS_URL ({exc}); start Redis or fix REDIS_URL", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except NotReplicated as exc:
        print(f"error: {exc}; try again (a job submitted with --key is never made twice)", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
