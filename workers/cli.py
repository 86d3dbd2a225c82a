"""The ``ingest-fleet`` command. Scripts and operators rely on its contract:

* exit 0 success; 1 the job failed (``submit --wait``); 2 refused input or configuration
  (one line on stderr naming the field and the fix; nothing stored, nothing enqueued);
  3 Redis unreachable.
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

EXIT_FAILED, EXIT_REFUSED, EXIT_UNAVAILABLE = 1, 2, 3


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
    }
    job_id = submit(intent)
    if not args.wait:
        if args.json:
            from tasks.producer import status

            _print_job(status(job_id), True)
        else:
            print(job_id)
        return 0
    if not args.json:
        print(job_id, file=sys.stderr)
    record = wait(job_id, timeout=args.timeout)
    if args.json:
        _print_job(record, True)
    else:
        _print_job(record, False)
    if record["state"] == "ready":
        return 0
    if record["state"] in ("failed", "cancelled"):
        return EXIT_FAILED
    print(f"error: job {job_id} not terminal after {args.timeout} s (state {record['state']})", file=sys.stderr)
    return EXIT_FAILED


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
    from tasks.runtime import runtime

    records = [job.public() for job in runtime().store.iter_jobs()
               if (not args.state or job.state == args.state) and (not args.provider or job.provider == args.provider)]
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        for record in records:
            _print_job(record, False)
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
                       loglevel=args.loglevel)
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
    p = argparse.ArgumentParser(prog="ingest-fleet", description="Carry video ingest intents into video platforms.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("submit", help="validate an intent and enqueue its job; prints the job id")
    s.add_argument("--provider", required=True)
    s.add_argument("--source", required=True, help="a file under INGEST_SOURCE_ROOTS, or a URL the provider pulls")
    s.add_argument("--title")
    s.add_argument("--description")
    s.add_argument("--account", default="default")
    s.add_argument("--key", help="idempotency key: the same key gives the same job")
    s.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata (Brightcove: custom fields)")
    s.add_argument("--tag", action="append", help="a tag (repeat for more)")
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
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_jobs)

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
    s.set_defaults(func=cmd_worker)

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
    import redis

    from tasks import logs as fleet_logging
    from tasks.config import ConfigError
    from tasks.errors import NotReplicated
    from tasks.intent import IntentError
    from tasks.producer import JobNotFound

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    fleet_logging.configure()  # JSON log lines go to stderr; stdout is for results
    if extra and args.command != "sandbox":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "sandbox":
            return cmd_sandbox(args, extra)
        return args.func(args)
    except (IntentError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except JobNotFound as exc:
        print(f"error: job_id: {exc.args[0]}", file=sys.stderr)
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
