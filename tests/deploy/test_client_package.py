"""The distribution an application installs (issue 14, item 1): `pip install ingest-fleet`
brings the client with redis alone; everything the fleet runs on is the `fleet` extra."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import ROOT


def test_the_wheel_requires_only_redis_unless_the_fleet_extra_is_asked(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy: setuptools writes build/ next to what it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("ingest_fleet", "tasks", "workers", "sandbox"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("ingest_fleet-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    always = [r for r in requires if "extra ==" not in r]
    assert [r.split(">")[0].split("<")[0].split("=")[0].strip() for r in always] == ["redis"], always
    assert any(r.startswith("celery") and 'extra == "fleet"' in r for r in requires)
    assert "ingest_fleet/py.typed" in names and "ingest_fleet/lua/job_create.lua" in names
