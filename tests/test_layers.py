"""Layers run one way (issue 12): ``workers/`` (the processes) imports ``tasks/`` (the domain),
never the reverse, and ``sandbox/`` (the emulators) imports neither. Read from the code's own
imports, those inside functions too, so a cycle cannot hide in a late import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _imports(package: str, of: tuple[str, ...]) -> set[tuple[str, str]]:
    """(file, module) for every import in ``package`` of a module under one of ``of``."""
    found = set()
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            found |= {(str(path.relative_to(ROOT)), m) for m in modules if m.split(".")[0] in of}
    return found


def test_the_domain_never_imports_the_processes() -> None:
    assert _imports("tasks", ("workers",)) == set(), \
        "tasks/ must not import workers/: what the domain needs belongs in tasks/"


def test_the_sandbox_imports_nothing_of_the_fleet() -> None:
    assert _imports("sandbox", ("tasks", "workers")) == set()


def test_redis_keys_are_named_in_one_module() -> None:
    import re

    literal = re.compile(r"""f?["']if:""")
    stray = [f"{path.relative_to(ROOT)}:{n}" for package in ("tasks", "workers")
             for path in sorted((ROOT / package).rglob("*.py")) if path.name != "keys.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
    assert stray == [], "name Redis keys in tasks/keys.py"
