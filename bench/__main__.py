"""`python -m bench [orchestration [N] | upload | uploads [ROUNDS] | budget | redis_bytes [N] | relay |
across_hosts [N] | backlog [N]]`.

No argument runs them all."""

from __future__ import annotations

import sys

from bench import across_hosts, backlog, budget, orchestration, redis_bytes, relay, upload, uploads

BENCHES = {"orchestration": orchestration.main, "upload": upload.main, "budget": budget.main,
           "redis_bytes": redis_bytes.main, "relay": relay.main, "uploads": uploads.main,
           "across_hosts": across_hosts.main, "backlog": backlog.main}

if __name__ == "__main__":
    args = sys.argv[1:]
    names = [args.pop(0)] if args and args[0] in BENCHES else list(BENCHES)
    for name in names:
        BENCHES[name](args)
