"""The Envoy config validates with the real binary, and its policy matches the protos (retries, timeouts, exposure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from llmorch.internal.v1 import embedding_pb2, model_pb2, registry_pb2
from llmorch.v1 import orchestrator_pb2, retrieval_pb2

from llmorch_common.constants import READINESS_SERVICE
from llmorch_common.grpc_edge import idempotent_methods
from tools.envoy_config import DEFAULT_WEB_DIR, REPO_ROOT, TEMPLATE_PATH, render, write_config
from tools.stack import validate_envoy

PUBLIC_SERVICES = (
    orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"],
    retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
)
INTERNAL_SERVICES = tuple(
    service
    for module in (registry_pb2, model_pb2, embedding_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
)


def _routes(config_text: str) -> list[dict[str, Any]]:
    config = yaml.safe_load(config_text)
    (listener,) = config["static_resources"]["listeners"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    return list(vhost["routes"])


def _route_for(routes: list[dict[str, Any]], path: str) -> dict[str, Any] | None:
    """First match wins, as in Envoy."""
    for route in routes:
        match = route["match"]
        if match.get("path") == path or ("prefix" in match and path.startswith(match["prefix"])):
            return route
    return None


def test_committed_config_validates() -> None:
    result = validate_envoy(TEMPLATE_PATH.relative_to(REPO_ROOT))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_rendered_config_validates(tmp_path: Path) -> None:
    path = write_config(tmp_path / "envoy.yaml", orchestrator_port=41001, listen_port=41002, admin_port=41003)
    result = validate_envoy(path)
    assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    assert "port_value: 41001" in text and "port_value: 41002" in text and "port_value: 41003" in text
    assert f"filename: {DEFAULT_WEB_DIR / 'app.js'}" in text
    assert "exact: http://localhost:41002" in text


def test_rendered_config_with_missing_console_fails_validation(tmp_path: Path) -> None:
    path = write_config(tmp_path / "envoy.yaml", web_dir=tmp_path / "nowhere")
    assert validate_envoy(path).returncode != 0


def test_render_keeps_policy_identical() -> None:
    """Only the marked knobs change; everything else is the committed template, byte for byte."""
    rendered = render(1, 2, 3, "/srv/web", "orchestrator.internal").splitlines()
    template = TEMPLATE_PATH.read_text().splitlines()
    changed = [(a, b) for a, b in zip(template, rendered, strict=True) if a != b]
    assert all(line.rstrip().split("# @")[-1] for line, _ in changed)
    assert all("# @" in line for line, _ in changed)
    assert len(changed) == 8


def test_retries_only_on_idempotent_rpcs_and_only_on_connection_failures() -> None:
    routes = _routes(TEMPLATE_PATH.read_text())
    idempotent = {f"/{service}/{method}" for service, method in idempotent_methods(*PUBLIC_SERVICES)}
    idempotent.add("/grpc.health.v1.Health/Check")
    for service in PUBLIC_SERVICES:
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            route = _route_for(routes, path)
            assert route is not None and route["route"]["cluster"] == "orchestrator", path
            policy = route["route"].get("retry_policy")
            if path in idempotent:
                assert policy is not None, f"{path} is idempotent and should be retried on connection failures"
                assert set(policy["retry_on"].split(",")) == {"connect-failure", "refused-stream", "reset"}
            else:
                assert policy is None, f"{path} has side effects and must never be retried by Envoy"


def test_streams_have_no_route_timeout() -> None:
    routes = _routes(TEMPLATE_PATH.read_text())
    for service in PUBLIC_SERVICES:
        for method in service.methods:
            if method.server_streaming or method.client_streaming:
                route = _route_for(routes, f"/{service.full_name}/{method.name}")
                assert route is not None and route["route"]["timeout"] == "0s", method.full_name
    for path in ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", "/grpc.health.v1.Health/Watch"):
        route = _route_for(routes, path)
        assert route is not None and route["route"]["timeout"] == "0s", path


@pytest.mark.parametrize(
    "path",
    [f"/{service.full_name}/{method.name}" for service in INTERNAL_SERVICES for method in service.methods],
)
def test_internal_services_have_no_route(path: str) -> None:
    assert _route_for(_routes(TEMPLATE_PATH.read_text()), path) is None


def test_admin_is_loopback_only_and_cluster_is_health_checked_http2() -> None:
    config = yaml.safe_load(TEMPLATE_PATH.read_text())
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    (cluster,) = config["static_resources"]["clusters"]
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {"service_name": READINESS_SERVICE}, "readiness follows Temporal"
    assert cluster["outlier_detection"]["enforcing_consecutive_5xx"] == 0


def test_several_api_replicas_are_each_a_health_checked_host(tmp_path: Path) -> None:
    """`make up REPLICAS=2`: one cluster, one host per API replica, the template's one health-check policy."""
    text = render(50051, 18080, 19901, more_orchestrator_ports=(50052, 50053))
    (cluster,) = yaml.safe_load(text)["static_resources"]["clusters"]
    hosts = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert hosts == [50051, 50052, 50053]
    assert cluster["health_checks"][0]["grpc_health_check"] == {"service_name": READINESS_SERVICE}
    assert render(50051, 18080, 19901) == render(50051, 18080, 19901, more_orchestrator_ports=())
    path = write_config(tmp_path / "envoy.yaml", 50051, 18080, 19901, more_orchestrator_ports=(50052,))
    result = validate_envoy(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tls_render_adds_only_the_transport_socket_and_https_origins(tmp_path: Path) -> None:
    from tools.tls import issue

    files = issue(tmp_path / "tls")
    path = write_config(tmp_path / "envoy.yaml", listen_port=41012, tls=(files.cert, files.key))
    result = validate_envoy(path)
    assert result.returncode == 0, result.stdout + result.stderr
    tls = yaml.safe_load(path.read_text())
    (chain,) = tls["static_resources"]["listeners"][0]["filter_chains"]
    socket = chain.pop("transport_socket")
    assert socket["typed_config"]["common_tls_context"] == {
        "alpn_protocols": ["h2", "http/1.1"],
        "tls_certificates": [
            {"certificate_chain": {"filename": str(files.cert)}, "private_key": {"filename": str(files.key)}}
        ],
    }
    assert (
        "exact: https://localhost:41012" in path.read_text() and "exact: http://localhost:41012" not in path.read_text()
    )
    plain_text = render(listen_port=41012)
    for host in ("localhost", "127.0.0.1"):  # the dev server's origins (:5173) stay http
        plain_text = plain_text.replace(f"exact: http://{host}:41012", f"exact: https://{host}:41012")
    plain = yaml.safe_load(plain_text)
    assert tls == plain, "TLS changes nothing but the socket and the listener's own origins"
