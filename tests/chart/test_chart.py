"""The Helm chart, rendered and checked without a cluster.

Helm 4's own library (helm-python-sdk, no helm binary) lints the chart in
strict mode and renders it as `helm template` would, for the default values
and for ci/production-values.yaml. Every rendered object is validated with
kubernetes-validate's strict schemas for the oldest Kubernetes the chart
supports and the newest the package ships, then the properties that matter
are asserted on the objects themselves: the headless decoder Service and the
gateway's dns:/// target, native gRPC and HTTP probes, the two HPAs, PDBs,
security contexts, graceful termination, settings, S3 with IRSA,
NetworkPolicy, ServiceMonitors and the Grafana dashboard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from decoder.settings import DecoderSettings
from gateway.settings import GatewaySettings

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk (Helm 4's library) is not installed"
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "iiif-stack"
PRODUCTION = CHART / "ci" / "production-values.yaml"
DASHBOARD = CHART / "dashboards" / "iiif-stack.json"
RELEASE = "iiif"
NAMESPACE = "media"
# The chart's kubeVersion floor (native gRPC probes are GA from 1.27).
OLDEST_KUBERNETES = "1.27"

Manifest = dict[str, Any]

# Settings the chart manages itself rather than through `<component>.config`.
GATEWAY_MANAGED = {"host", "port", "decoder_target", "metrics_port"}
DECODER_MANAGED = {"host", "port", "metrics_port", "max_connection_age_s"}

# Every metric the dashboard must chart (the brief's key signals).
DASHBOARD_METRICS = {
    "iiif_gateway_requests_total",
    "iiif_gateway_request_seconds_bucket",
    "iiif_decoder_rpcs_total",
    "iiif_decoder_decode_seconds_bucket",
    "iiif_decoder_s3_gets_total",
    "iiif_decoder_s3_bytes_total",
    "iiif_decoder_s3_retries_total",
    "iiif_decoder_block_cache_hits_total",
    "iiif_decoder_block_cache_misses_total",
    "iiif_decoder_queue_depth",
    "iiif_decoder_rejections_total",
    "iiif_decoder_memory_bytes",
}


@dataclass(frozen=True)
class Rendered:
    """The objects one `helm template` run produced."""

    values: dict[str, Any]
    objects: list[Manifest]

    def all(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, component: str) -> Manifest:
        found = [o for o in self.all(kind) if component_of(o) == component]
        assert len(found) == 1, f"expected one {component} {kind}, got {len(found)}"
        return found[0]

    def config(self, component: str) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap", component)["data"]
        return data

    def pod_spec(self, component: str) -> Manifest:
        spec: Manifest = self.one("Deployment", component)["spec"]["template"]["spec"]
        return spec

    def container(self, component: str) -> Manifest:
        containers = self.pod_spec(component)["containers"]
        assert [c["name"] for c in containers] == [component]
        container: Manifest = containers[0]
        return container


def component_of(obj: Manifest) -> str | None:
    labels: dict[str, str] = obj["metadata"].get("labels", {})
    return labels.get("app.kubernetes.io/component")


def render(values: dict[str, Any], release: str = RELEASE) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        manifests: dict[str, str] = chart.render(
            values, name=release, namespace=NAMESPACE, is_install=True
        )
    objects: list[Manifest] = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                assert isinstance(doc, dict), template
                objects.append(doc)
    return Rendered(values, objects)


def production_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(PRODUCTION.read_text())
    return values


@pytest.fixture(scope="module", params=["default", "production"])
def profile(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def rendered(profile: str) -> Rendered:
    return render(production_values() if profile == "production" else {})


@pytest.fixture(scope="module")
def production() -> Rendered:
    return render(production_values())


@pytest.fixture(scope="module")
def chart_defaults() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return values


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {e["name"]: e for e in container.get("env", [])}


# -- Helm itself ---------------------------------------------------------------


@pytest.mark.parametrize("kube_version", [f"v{OLDEST_KUBERNETES}.0", "v1.37.0"])
def test_helm_lint_strict(profile: str, kube_version: str) -> None:
    values = production_values() if profile == "production" else None
    report: dict[str, Any] = helm.lint(CHART, values, strict=True, kube_version=kube_version)
    assert report["errors"] == []
    # Severity 2 is a warning, 3 an error; 1 (info, e.g. "icon is recommended") is fine.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_objects_rendered(rendered: Rendered, profile: str) -> None:
    kinds = sorted((o["kind"], component_of(o) or "-") for o in rendered.objects)
    core = [
        ("ConfigMap", "decoder"),
        ("ConfigMap", "gateway"),
        ("Deployment", "decoder"),
        ("Deployment", "gateway"),
        ("HorizontalPodAutoscaler", "decoder"),
        ("HorizontalPodAutoscaler", "gateway"),
        ("PodDisruptionBudget", "decoder"),
        ("PodDisruptionBudget", "gateway"),
        ("Service", "decoder"),
        ("Service", "gateway"),
        ("ServiceAccount", "decoder"),
        ("ServiceAccount", "gateway"),
    ]
    optional = [
        ("ConfigMap", "-"),  # the Grafana dashboard
        ("Ingress", "gateway"),
        ("NetworkPolicy", "decoder"),
        ("ServiceMonitor", "decoder"),
        ("ServiceMonitor", "gateway"),
    ]
    expected = core if profile == "default" else core + optional
    assert kinds == sorted(expected)
    for obj in rendered.objects:
        assert obj["metadata"].get("namespace", NAMESPACE) == NAMESPACE
        labels = obj["metadata"]["labels"]
        for key in ("name", "instance", "managed-by", "part-of", "version"):
            assert f"app.kubernetes.io/{key}" in labels, (obj["kind"], key)
        assert labels["app.kubernetes.io/instance"] == RELEASE


def test_schema_rejects_bad_values() -> None:
    bad: list[dict[str, Any]] = [
        {"decoder": {"config": {"source": "s3", "s3_bucket": ""}}},
        {"decoder": {"config": {"source": "ftp"}}},
        {"gateway": {"replicaCount": "three"}},
        {"gateway": {"config": {"log_level": "verbose"}}},
        {"decoder": {"autoscaling": {"minReplicas": 0}}},
        {"unknownTopLevelKey": True},
    ]
    with helm.Chart.load(CHART) as chart:
        for values in bad:
            with pytest.raises(helm.HelmValuesError):
                chart.render(values, name=RELEASE, namespace=NAMESPACE)


def test_long_release_names_fit_kubernetes_limits() -> None:
    long = render({}, release="a" * 53)
    for obj in long.objects:
        assert len(obj["metadata"]["name"]) <= 63, obj["metadata"]["name"]


# -- Kubernetes schemas ---------------------------------------------------------


def kubernetes_versions() -> list[str]:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    versions: list[str] = kv.utils.all_versions()
    majors = sorted({".".join(v.split(".")[:2]) for v in versions}, key=lambda v: int(v[2:]))
    assert OLDEST_KUBERNETES in majors, "kubernetes-validate dropped the oldest supported version"
    return [OLDEST_KUBERNETES, majors[-1]]


def test_manifests_validate_strictly(rendered: Rendered) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    versions = kubernetes_versions()
    assert len(versions) == 2
    assert versions[0] != versions[1]
    failures: list[str] = []
    for obj in rendered.objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: no schema in the package; see test_service_monitors
        for version in versions:
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                failures.append(f"{obj['kind']}/{obj['metadata']['name']} @ {version}: {path}")
                failures.append(f"  {error.message}")
            except kv.SchemaNotFoundError as error:
                failures.append(error.message)
    assert not failures, "\n".join(failures)


# -- Decoders behind a headless Service, gateways balancing over them ------------


def test_decoder_service_is_headless(rendered: Rendered) -> None:
    service = rendered.one("Service", "decoder")
    assert service["spec"]["clusterIP"] == "None"
    assert not service["spec"].get("publishNotReadyAddresses", False)
    pod_labels = rendered.one("Deployment", "decoder")["spec"]["template"]["metadata"]["labels"]
    assert selector_matches(service["spec"]["selector"], pod_labels)
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    container_ports = {p["name"] for p in rendered.container("decoder")["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    assert {p["targetPort"] for p in ports.values()} <= container_ports
    gateway_service = rendered.one("Service", "gateway")
    assert gateway_service["spec"].get("clusterIP") != "None"


def test_gateway_targets_the_headless_service_with_dns(rendered: Rendered) -> None:
    service = rendered.one("Service", "decoder")
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    fqdn = f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    config = rendered.config("gateway")
    assert config["IIIF_GATEWAY_DECODER_TARGET"] == f"dns:///{fqdn}:{grpc_port}"
    assert config["IIIF_GATEWAY_HOST"] == "0.0.0.0"
    gateway = rendered.container("gateway")
    assert [e["configMapRef"]["name"] for e in gateway["envFrom"]] == [
        rendered.one("ConfigMap", "gateway")["metadata"]["name"]
    ]


def test_decoder_rebalancing_and_listening(rendered: Rendered) -> None:
    config = rendered.config("decoder")
    assert config["IIIF_DECODER_MAX_CONNECTION_AGE_S"] == "300"
    assert config["IIIF_DECODER_HOST"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in rendered.container("decoder")["ports"]}
    assert config["IIIF_DECODER_PORT"] == str(ports["grpc"])
    assert config["IIIF_DECODER_METRICS_PORT"] == str(ports["metrics"]) == "9090"


# -- Probes -----------------------------------------------------------------------


def test_decoder_uses_native_grpc_probes(rendered: Rendered) -> None:
    decoder = rendered.container("decoder")
    grpc_port = next(p["containerPort"] for p in decoder["ports"] if p["name"] == "grpc")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert set(decoder[probe]) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"}
        assert decoder[probe]["grpc"]["port"] == grpc_port
    assert decoder["readinessProbe"]["grpc"]["service"] == "iiif.decoder.v1.Decoder"


def test_gateway_uses_http_probes(rendered: Rendered) -> None:
    gateway = rendered.container("gateway")
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert gateway["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert any(p["name"] == "http" for p in gateway["ports"])


# -- Scaling and disruption ---------------------------------------------------------


def test_two_hpas_scale_the_two_deployments(rendered: Rendered, profile: str) -> None:
    hpas = rendered.all("HorizontalPodAutoscaler")
    assert len(hpas) == 2
    for component in ("gateway", "decoder"):
        hpa = rendered.one("HorizontalPodAutoscaler", component)
        deployment = rendered.one("Deployment", component)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        # The HPA owns the replica count; an upgrade must not reset it.
        assert "replicas" not in deployment["spec"]
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        if profile == "production":
            assert hpa["spec"]["minReplicas"] >= 3
        assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    decoder_metrics = rendered.one("HorizontalPodAutoscaler", "decoder")["spec"]["metrics"]
    assert [(m["type"], m["resource"]["name"]) for m in decoder_metrics] == [("Resource", "cpu")]
    gateway_metrics = rendered.one("HorizontalPodAutoscaler", "gateway")["spec"]["metrics"]
    kinds = {m["type"] for m in gateway_metrics}
    assert kinds == ({"Resource", "Pods"} if profile == "production" else {"Resource"})
    # Every CPU target is relative to a CPU request.
    for component in ("gateway", "decoder"):
        assert "cpu" in rendered.container(component)["resources"]["requests"]


def test_autoscaling_off_sets_replicas() -> None:
    off = render(
        {
            "gateway": {"autoscaling": {"enabled": False}, "replicaCount": 3},
            "decoder": {"autoscaling": {"enabled": False}, "replicaCount": 4},
        }
    )
    assert not off.all("HorizontalPodAutoscaler")
    assert off.one("Deployment", "gateway")["spec"]["replicas"] == 3
    assert off.one("Deployment", "decoder")["spec"]["replicas"] == 4


def test_pod_disruption_budgets(rendered: Rendered) -> None:
    for component in ("gateway", "decoder"):
        pdb = rendered.one("PodDisruptionBudget", component)
        assert pdb["apiVersion"] == "policy/v1"
        pod_labels = rendered.one("Deployment", component)["spec"]["template"]["metadata"]["labels"]
        assert selector_matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
        # Evictions (node drains) stay possible, one pod at a time, and the
        # HPA's floor keeps capacity while one is gone.
        assert pdb["spec"]["maxUnavailable"] == 1
        min_replicas = rendered.one("HorizontalPodAutoscaler", component)["spec"]["minReplicas"]
        assert min_replicas > pdb["spec"]["maxUnavailable"]


def test_rolling_updates_never_drop_below_capacity(rendered: Rendered) -> None:
    for component in ("gateway", "decoder"):
        strategy = rendered.one("Deployment", component)["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        assert strategy["rollingUpdate"]["maxSurge"] not in (0, "0%")


def test_topology_spread_selects_own_pods(rendered: Rendered) -> None:
    for component in ("gateway", "decoder"):
        spec = rendered.pod_spec(component)
        pod_labels = rendered.one("Deployment", component)["spec"]["template"]["metadata"]["labels"]
        keys = set()
        for constraint in spec["topologySpreadConstraints"]:
            keys.add(constraint["topologyKey"])
            selector = constraint["labelSelector"]["matchLabels"]
            assert selector_matches(selector, pod_labels)
            assert selector["app.kubernetes.io/component"] == component
        assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


# -- Security -------------------------------------------------------------------------


def test_security_context_non_root_read_only(rendered: Rendered) -> None:
    for component in ("gateway", "decoder"):
        pod = rendered.pod_spec(component)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = rendered.container(component)
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        # The only writable path: /tmp, an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        # Neither component talks to the Kubernetes API.
        assert pod["automountServiceAccountToken"] is False


def test_service_accounts(rendered: Rendered, profile: str) -> None:
    for component in ("gateway", "decoder"):
        account = rendered.one("ServiceAccount", component)
        assert rendered.pod_spec(component)["serviceAccountName"] == account["metadata"]["name"]
    annotations = rendered.one("ServiceAccount", "decoder")["metadata"].get("annotations", {})
    gateway_annotations = rendered.one("ServiceAccount", "gateway")["metadata"].get("annotations")
    assert not gateway_annotations, "the gateway never gets the decoders' cloud identity"
    if profile == "production":
        assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    else:
        assert not annotations


# -- Graceful termination ----------------------------------------------------------------


def test_termination_grace_covers_prestop_and_drain(rendered: Rendered) -> None:
    drains = {
        "gateway": float(rendered.config("gateway")["IIIF_GATEWAY_REQUEST_TIMEOUT_S"]),
        "decoder": float(rendered.config("decoder")["IIIF_DECODER_GRACE_PERIOD_S"]),
    }
    for component, drain in drains.items():
        container = rendered.container(component)
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        sleep = int(command[1])
        assert sleep >= 1, "endpoints need a moment to drop the pod before SIGTERM"
        grace = rendered.pod_spec(component)["terminationGracePeriodSeconds"]
        assert grace >= sleep + drain, (component, grace, sleep, drain)


def test_explicit_termination_grace_wins() -> None:
    explicit = render({"decoder": {"terminationGracePeriodSeconds": 90}})
    assert explicit.pod_spec("decoder")["terminationGracePeriodSeconds"] == 90


# -- Settings ---------------------------------------------------------------------


def test_every_setting_is_a_chart_value(chart_defaults: dict[str, Any]) -> None:
    """values.yaml lists every setting the applications read (and no other)."""
    for component, settings, managed in (
        ("gateway", GatewaySettings, GATEWAY_MANAGED),
        ("decoder", DecoderSettings, DECODER_MANAGED),
    ):
        fields = set(settings.model_fields)
        listed = set(chart_defaults[component]["config"])
        assert listed - fields == set(), f"{component}.config names unknown settings"
        assert fields - managed - listed == set(), f"{component}.config misses settings"


def test_configmaps_carry_settings(rendered: Rendered) -> None:
    for component in ("gateway", "decoder"):
        values_config = {
            k: v for k, v in render_values_config(rendered, component).items() if v is not None
        }
        data = rendered.config(component)
        prefix = f"IIIF_{component.upper()}_"
        assert all(key.startswith(prefix) for key in data)
        for key, value in values_config.items():
            rendered_value = data[prefix + key.upper()]
            expected = str(value).lower() if isinstance(value, bool) else str(value)
            assert rendered_value == expected, key
        for value in data.values():
            assert not re.fullmatch(r"[0-9.]+e[+-][0-9]+", value), "a number lost its digits"


def render_values_config(rendered: Rendered, component: str) -> dict[str, Any]:
    defaults: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    merged: dict[str, Any] = dict(defaults[component]["config"])
    merged.update(rendered.values.get(component, {}).get("config", {}))
    return merged


def test_large_numbers_keep_their_digits() -> None:
    data = render({"gateway": {"config": {"max_area": 25000000}}}).config("gateway")
    assert data["IIIF_GATEWAY_MAX_AREA"] == "25000000"
    assert "IIIF_GATEWAY_MAX_WIDTH" not in data, "null leaves a setting unset"


def test_pods_roll_when_settings_change() -> None:
    before = render({}).one("Deployment", "decoder")["spec"]["template"]["metadata"]
    after = render({"decoder": {"config": {"jpeg_quality": 90}}}).one("Deployment", "decoder")
    assert (
        before["annotations"]["checksum/config"]
        != after["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    )


# -- Image sources ---------------------------------------------------------------------


def test_default_reads_a_volume() -> None:
    default = render({})
    config = default.config("decoder")
    assert config["IIIF_DECODER_SOURCE"] == "filesystem"
    mounts = {m["mountPath"]: m for m in default.container("decoder")["volumeMounts"]}
    assert mounts[config["IIIF_DECODER_IMAGE_ROOT"]]["readOnly"] is True


def test_production_reads_s3_with_irsa(production: Rendered) -> None:
    config = production.config("decoder")
    assert config["IIIF_DECODER_SOURCE"] == "s3"
    assert config["IIIF_DECODER_S3_BUCKET"]
    decoder = production.container("decoder")
    # IRSA: no static credentials anywhere.
    assert not any(name.startswith("AWS_") for name in env_of(decoder))
    assert not production.all("Secret")
    assert "/srv/images" not in {m["mountPath"] for m in decoder["volumeMounts"]}


def test_s3_credentials_from_a_created_secret() -> None:
    values = production_values()
    values["decoder"]["s3Credentials"] = {
        "create": True,
        "accessKeyId": "AKIAEXAMPLE",
        "secretAccessKey": "secret",
    }
    created = render(values)
    secret = created.one("Secret", "decoder")
    env = env_of(created.container("decoder"))
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = env[variable]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"]
        assert ref["key"] in secret["data"]
    annotations = created.one("Deployment", "decoder")["spec"]["template"]["metadata"]
    assert "checksum/secret" in annotations["annotations"]


def test_s3_credentials_from_an_existing_secret() -> None:
    values = production_values()
    values["decoder"]["s3Credentials"] = {"existingSecret": "minio", "sessionTokenKey": "token"}
    existing = render(values)
    assert not existing.all("Secret")
    env = env_of(existing.container("decoder"))
    assert {env[v]["valueFrom"]["secretKeyRef"]["name"] for v in env} == {"minio"}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "token"


# -- Optional objects ---------------------------------------------------------------------


def test_network_policy_admits_only_gateways_and_listed_namespaces(production: Rendered) -> None:
    policy = production.one("NetworkPolicy", "decoder")
    decoder_labels = production.one("Deployment", "decoder")["spec"]["template"]["metadata"]
    assert selector_matches(policy["spec"]["podSelector"]["matchLabels"], decoder_labels["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    gateway_labels = production.one("Deployment", "gateway")["spec"]["template"]["metadata"]
    rules = {
        tuple(p["port"] for p in rule["ports"]): rule["from"] for rule in policy["spec"]["ingress"]
    }
    assert set(rules) == {("grpc",), ("metrics",)}
    peers = rules[("grpc",)]
    pods = [p["podSelector"]["matchLabels"] for p in peers if "podSelector" in p]
    namespaces = [
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in peers
        if "namespaceSelector" in p
    ]
    assert len(pods) == 1
    assert selector_matches(pods[0], gateway_labels["labels"])
    assert pods[0]["app.kubernetes.io/component"] == "gateway"
    assert namespaces == production.values["networkPolicy"]["allowedNamespaces"]
    assert all(set(p) <= {"podSelector", "namespaceSelector"} for p in peers)
    metrics_from = [
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in rules[("metrics",)]
    ]
    assert metrics_from == ["monitoring"]


def test_service_monitors(production: Rendered) -> None:
    monitors = production.all("ServiceMonitor")
    assert len(monitors) == 2
    services = production.all("Service")
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        spec = monitor["spec"]
        assert set(spec) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        selected = [
            s
            for s in services
            if selector_matches(spec["selector"]["matchLabels"], s["metadata"]["labels"])
        ]
        assert len(selected) == 1, "each monitor selects exactly one Service"
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
            assert re.fullmatch(r"\d+s", endpoint["interval"])
    decoder_monitor = production.one("ServiceMonitor", "decoder")
    assert decoder_monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_ingress_with_tls_routes_to_the_gateway(production: Rendered) -> None:
    ingress = production.one("Ingress", "gateway")
    service = production.one("Service", "gateway")
    assert ingress["spec"]["tls"][0]["hosts"] == ["iiif.example.org"]
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def test_grafana_dashboard(production: Rendered) -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"]
    assert dashboard["title"]
    exprs = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
    used = {m for expr in exprs for m in re.findall(r"\biiif_[a-z0-9_]+", expr)}
    assert used == DASHBOARD_METRICS
    for expr in exprs:
        assert expr.count("(") == expr.count(")"), expr
        assert "$namespace" in expr
    latency = [e for e in exprs if "iiif_gateway_request_seconds_bucket" in e]
    quantiles = {q for e in latency for q in re.findall(r"histogram_quantile\((0\.\d+)", e)}
    assert {"0.5", "0.95", "0.99"} <= quantiles
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    configmap = next(c for c in production.all("ConfigMap") if component_of(c) is None)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["iiif-stack.json"]) == dashboard
