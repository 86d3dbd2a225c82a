"""Take the README's Flower screenshot from a real run of the demo (headless Chromium).

    .venv/bin/python docs/flower_screenshot.py        # writes docs/flower.png

Starts ``ingest-fleet demo`` with a known Flower password, waits until its jobs are under
way, and has Debian's ``chromium`` (``apt-get install chromium``) capture Flower's task list
while the fleet works. Nothing is mocked: the page is Flower's own, fed by the demo's workers.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "flower.png"


def main() -> int:
    password = secrets.token_urlsafe(12)
    env = {**os.environ, "FLOWER_BASIC_AUTH": f"demo:{password}"}
    demo = subprocess.Popen([sys.executable, "-m", "workers.cli", "demo"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = None
    assert demo.stdout is not None
    for line in demo.stdout:
        sys.stdout.write(line)
        found = re.search(r"flower\s+(http://127\.0\.0\.1:\d+)", line)
        if found:
            url = found.group(1)
        if (url and "submitted" in line.lower()) or (url and "upload" in line.lower()):
            break
    if url is None:
        print("the demo never started Flower", file=sys.stderr)
        return 1
    time.sleep(6)  # let the fleet get busy: uploads in flight, polls, tasks succeeding
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1900,1000",
                        "--virtual-time-budget=8000", f"--screenshot={OUT}",
                        url.replace("http://", f"http://demo:{password}@") + "/tasks"],
                       check=True, timeout=120, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for line in demo.stdout:  # let the demo finish and stop its fleet
        sys.stdout.write(line)
    demo.wait()
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
