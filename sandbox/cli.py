"""``python -m sandbox``: run the sandbox in the foreground until SIGTERM or SIGINT.

It prints the fleet settings that point at it, one ``export KEY=VALUE`` line each, then
``sandbox listening on <url>``, so a shell can ``eval`` the output or a supervisor can wait
for the last line::

    $ python -m sandbox --port 8900 --media-dir ./media --processing-seconds 1
    export INGEST_GCORE_BASE_URL=http://127.0.0.1:8900
    export INGEST_GCORE_API_KEY=sandbox-gcore-key
    export INGEST_BRIGHTCOVE_CLIENT_ID=sandbox-bc-client
    export INGEST_BRIGHTCOVE_CLIENT_SECRET=sandbox-bc-secret
    export INGEST_BRIGHTCOVE_ACCOUNT_ID=6200000000001
    export INGEST_BRIGHTCOVE_OAUTH_URL=http://127.0.0.1:8900
    export INGEST_BRIGHTCOVE_BASE_URL=http://127.0.0.1:8900
    export INGEST_BRIGHTCOVE_INGEST_URL=http://127.0.0.1:8900
    export INGEST_BRIGHTCOVE_S3_ENDPOINT=http://127.0.0.1:41873
    export INGEST_ITTYBIT_API_KEY=sandbox-ittybit-key
    export INGEST_ITTYBIT_BASE_URL=http://127.0.0.1:8900
    export INGEST_ONCE_API_KEY=sandbox-once-key
    export INGEST_ONCE_DOMAIN_ID=b207b479-c841-4095-8918-978be9e18dee
    export INGEST_ONCE_CATALOG_ID=bc6cb7d4-be99-471b-adf3-7c501172b317
    export INGEST_ONCE_BASE_URL=http://127.0.0.1:8900
    export INGEST_ONCE_STAGING_BUCKET=once-staging
    export INGEST_ONCE_STAGING_ACCESS_KEY_ID=SANDBOXONCESTAGING01
    export INGEST_ONCE_STAGING_SECRET_ACCESS_KEY=sandbox-once-staging-secret
    export INGEST_ONCE_S3_ENDPOINT=http://127.0.0.1:41873
    sandbox listening on http://127.0.0.1:8900

The S3 endpoint (Brightcove's upload bucket, Once's staging bucket) is on a port of its own,
always a free one. (Other providers' lines are left out above.)
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Sequence

from .server import EMULATORS, Sandbox


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    provider_options = {
        f"{cls.name}_{option}": getattr(args, f"{cls.name}_{option}")
        for cls in EMULATORS for option in cls.options
    }
    sandbox = Sandbox(args.host, args.port, data_dir=args.data_dir, media_dir=args.media_dir,
                      processing_seconds=args.processing_seconds, seed=args.seed,
                      client_timeout=args.client_timeout, **provider_options)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        sandbox.start()
        for key, value in sandbox.env().items():
            print(f"export {key}={shlex.quote(value)}")
        print(f"sandbox listening on {sandbox.url}", flush=True)
        while not stop.wait(0.5):  # a timed wait keeps the main thread responsive to signals
            pass
    finally:
        sandbox.stop()
    print("sandbox stopped", file=sys.stderr, flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox",
                                     description="Local emulators of the video providers' HTTP APIs.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 = a free port (default)")
    parser.add_argument("--data-dir", help="where uploaded bytes go (default: a temporary directory, removed on exit)")
    parser.add_argument("--media-dir", help="directory served under /media/ for pull-from-URL ingests")
    parser.add_argument("--processing-seconds", type=float, default=3.0,
                        help="how long emulated processing takes; 0 = instant (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault-injection RNGs (default: %(default)s)")
    parser.add_argument("--client-timeout", type=float, default=120.0,
                        help="seconds of client silence (a stalled request body too) before a connection is "
                             "dropped; an upload a stalled PATCH holds stays locked that long (default: %(default)s)")
    for cls in EMULATORS:
        for option, (default, help_text) in cls.options.items():
            parser.add_argument(f"--{cls.name}-{option.replace('_', '-')}", dest=f"{cls.name}_{option}",
                                type=type(default), default=default, help=f"{help_text} (default: %(default)s)")
    return parser
