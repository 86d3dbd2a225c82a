"""Sum py-spy's raw (collapsed) samples by library: each sample counts once, for the library
nearest its leaf frame (bench/results/orchestration-profile.md says how the files were made).

Usage: python bench/profile/categorize.py FILE [FILE ...]
"""

from __future__ import annotations

import sys
from collections import Counter

#: (category, path fragments of its frames), checked in this order at each frame.
CATEGORIES = [
    ("redis-py (Redis round trips)", ("redis/",)),
    ("structlog/logging", ("structlog/", "logging/")),
    ("HTTP client (requests/urllib3/http.client)", ("requests/", "urllib3/", "http/client.py")),
    ("json / record encoding", ("json/", "jobstore.py")),
    ("crypto (Fernet/secrets)", ("cryptography/", "sealed.py")),
    ("celery/kombu/billiard", ("celery/", "kombu/", "billiard/")),
    ("fleet code", ("/tasks/", "/workers/")),
]


def categorize(lines: list[str]) -> tuple[Counter[str], int]:
    """``frame;frame;... count`` lines (frames ``func (file:line)``) -> samples by category."""
    found: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        for frame in reversed(stack.split(";")):
            hit = next((name for name, parts in CATEGORIES if any(p in frame for p in parts)), None)
            if hit:
                found[hit] += n
                break
        else:
            found["other"] += n
    return found, total


def main(paths: list[str]) -> None:
    lines = [line for path in paths for line in open(path, encoding="utf-8")]
    found, total = categorize(lines)
    for name, n in found.most_common():
        print(f"{name:45s} {100 * n / total:5.1f} %")
    print("samples", total)


if __name__ == "__main__":
    main(sys.argv[1:])
