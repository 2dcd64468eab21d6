"""Envoy front door against a fake orchestrator: routing, reflection, streaming, gRPC-Web, CORS, health, failure."""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from e2e.conftest_envoy import (
    REPO_ROOT,
    WEB_DIST,
    EnvoyProcess,
    FakeUpstream,
    fake_answer,
    fake_upstream,
    grpcurl,
    running_envoy,
    wait_for,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc

ORCH = "llmorch.v1.OrchestratorService"
# What reflection through the front door may show: public services (the fake serves only one), health, reflection.
PUBLIC_LISTING = {ORCH, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeUpstream, EnvoyProcess]]:
    workdir = tmp_path_factory.mktemp("envoy")
    with fake_upstream(workdir) as upstream, running_envoy(upstream.port, workdir) as envoy:
        wait_for(envoy.upstream_healthy, 15, "orchestrator cluster healthy")
        yield upstream, envoy


@pytest.fixture(scope="module")
def envoy(stack: tuple[FakeUpstream, EnvoyProcess]) -> EnvoyProcess:
    return stack[1]


def _http(
    envoy: EnvoyProcess, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.listen_port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    reply = conn.getresponse()
    data = reply.read()
    conn.close()
    return reply, data


def test_console_is_served_by_envoy(envoy: EnvoyProcess) -> None:
    reply, body = _http(envoy, "GET", "/")
    assert reply.status == 200
    assert reply.getheader("content-type", "").startswith("text/html")
    assert b'src="/app.js"' in body
    reply, body = _http(envoy, "GET", "/app.js")
    assert reply.status == 200
    assert reply.getheader("content-type", "").startswith("text/javascript")
    assert body == (WEB_DIST / "app.js").read_bytes()


def test_grpcurl_list_and_describe_through_envoy(envoy: EnvoyProcess) -> None:
    listed = grpcurl("-plaintext", envoy.target, "list")
    assert listed.returncode == 0, listed.stderr
    # The upstream also serves RegistryService, but reflection leaves it out, so users never see it.
    assert set(listed.stdout.split()) == PUBLIC_LISTING
    described = grpcurl("-plaintext", envoy.target, "describe", ORCH)
    assert described.returncode == 0, described.stderr
    for rpc in ("rpc Generate", "rpc GenerateStream", "rpc ListModels", "stream .llmorch.v1.GenerateStreamResponse"):
        assert rpc in described.stdout


def test_unary_generate_through_envoy(envoy: EnvoyProcess) -> None:
    request = json.dumps(
        {"prompt": "why is the sky blue", "request_id": "r-1", "rag": {"collection": "docs", "top_k": 2}}
    )
    result = grpcurl("-plaintext", "-d", request, envoy.target, f"{ORCH}/Generate")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["requestId"] == "r-1"
    assert reply["text"] == "".join(fake_answer("why is the sky blue"))
    assert reply["provenance"]["modelId"] == "fake-small"
    assert [c["chunkId"] for c in reply["provenance"]["citations"]] == ["doc-0#0", "doc-1#0"]


def test_streaming_generate_through_envoy(envoy: EnvoyProcess) -> None:
    request = json.dumps({"request": {"prompt": "stream me"}})
    result = grpcurl("-plaintext", "-format-error", "-d", request, envoy.target, f"{ORCH}/GenerateStream")
    assert result.returncode == 0, result.stderr
    decoder, text, events = json.JSONDecoder(), result.stdout.strip(), []
    while text:
        event, end = decoder.raw_decode(text)
        events.append(event)
        text = text[end:].strip()
    kinds = [next(k for k in ("selected", "delta", "completed") if k in e) for e in events]
    deltas = fake_answer("stream me")
    assert kinds == ["selected"] + ["delta"] * len(deltas) + ["completed"]
    assert [e["delta"] for e in events[1:-1]] == deltas
    assert events[-1]["completed"]["text"] == "".join(deltas)


def test_health_through_envoy_and_directly(stack: tuple[FakeUpstream, EnvoyProcess]) -> None:
    upstream, envoy = stack
    # Through the front door (load balancers, humans) and straight at the pod port (a Kubernetes gRPC probe).
    for target in (envoy.target, f"127.0.0.1:{upstream.port}"):
        result = grpcurl("-plaintext", "-d", '{"service": ""}', target, "grpc.health.v1.Health/Check")
        assert result.returncode == 0, (target, result.stderr)
        assert json.loads(result.stdout)["status"] == "SERVING"


def test_internal_services_are_not_exposed(stack: tuple[FakeUpstream, EnvoyProcess]) -> None:
    upstream, envoy = stack
    method = "llmorch.internal.v1.RegistryService/ListModels"
    # Reflection does not describe it, so give grpcurl the protos, as a caller who has them would.
    protos = ("-import-path", str(REPO_ROOT / "proto"), "-proto", "llmorch/internal/v1/registry.proto")
    direct = grpcurl("-plaintext", *protos, "-d", "{}", f"127.0.0.1:{upstream.port}", method)
    assert direct.returncode == 0, direct.stderr  # the upstream serves it...
    via_envoy = grpcurl("-plaintext", *protos, "-d", "{}", envoy.target, method)
    assert via_envoy.returncode != 0  # ...but the front door does not route it
    assert "Unimplemented" in via_envoy.stderr, via_envoy.stderr


def _grpc_web_frame(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def _grpc_web_frames(body: bytes) -> list[tuple[int, bytes]]:
    frames, offset = [], 0
    while offset < len(body):
        flag, length = body[offset], struct.unpack(">I", body[offset + 1 : offset + 5])[0]
        frames.append((flag, body[offset + 5 : offset + 5 + length]))
        offset += 5 + length
    return frames


def test_grpc_web_unary_over_http1(envoy: EnvoyProcess) -> None:
    """What a browser sends: HTTP/1.1 POST, application/grpc-web+proto, length-prefixed frames, trailers in-body."""
    request = orchestrator_pb2.ListModelsRequest()
    reply, body = _http(
        envoy,
        "POST",
        f"/{ORCH}/ListModels",
        body=_grpc_web_frame(request.SerializeToString()),
        headers={
            "content-type": "application/grpc-web+proto",
            "x-grpc-web": "1",
            "origin": envoy.url,
        },
    )
    assert reply.status == 200
    assert reply.getheader("content-type", "").startswith("application/grpc-web")
    frames = _grpc_web_frames(body)
    assert [flag for flag, _ in frames] == [0x00, 0x80]
    models = orchestrator_pb2.ListModelsResponse.FromString(frames[0][1]).models
    assert [m.model_id for m in models] == ["fake-small", "fake-large"]
    assert b"grpc-status:0" in frames[1][1].replace(b" ", b"")


@pytest.mark.parametrize("origin", ["http://localhost:5173", "LISTEN_ORIGIN"])
def test_cors_preflight_allows_console_origins(envoy: EnvoyProcess, origin: str) -> None:
    origin = envoy.url if origin == "LISTEN_ORIGIN" else origin
    reply, _ = _http(
        envoy,
        "OPTIONS",
        f"/{ORCH}/GenerateStream",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,x-grpc-web,x-user-agent,grpc-timeout",
        },
    )
    assert reply.status == 200
    assert reply.getheader("access-control-allow-origin") == origin
    assert "grpc-status" in reply.getheader("access-control-expose-headers", "")
    assert "x-grpc-web" in reply.getheader("access-control-allow-headers", "")


def test_cors_preflight_refuses_other_origins(envoy: EnvoyProcess) -> None:
    reply, _ = _http(
        envoy,
        "OPTIONS",
        f"/{ORCH}/Generate",
        headers={"origin": "http://evil.example", "access-control-request-method": "POST"},
    )
    assert reply.getheader("access-control-allow-origin") is None


def test_admin_serves_prometheus_stats(envoy: EnvoyProcess) -> None:
    stats = envoy.admin("/stats/prometheus")
    assert 'envoy_cluster_upstream_rq_total{envoy_cluster_name="orchestrator"}' in stats
    assert "envoy_cluster_health_check_success" in stats


async def test_not_serving_upstream_gets_no_traffic(stack: tuple[FakeUpstream, EnvoyProcess]) -> None:
    """Active gRPC health checks: a NOT_SERVING orchestrator (draining, not ready) is taken out of rotation and
    Envoy answers UNAVAILABLE itself (no panic routing), even though the process still answers RPCs."""
    upstream, envoy = stack
    upstream.flip_health()
    try:
        wait_for(lambda: not envoy.upstream_healthy(), 10, "orchestrator marked unhealthy")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _generate(envoy.target, 5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no healthy upstream" in (refused.value.details() or "")
        assert (await _generate(f"127.0.0.1:{upstream.port}", 5)).text  # the process itself is alive
    finally:
        upstream.flip_health()
    wait_for(envoy.upstream_healthy, 10, "orchestrator healthy again")
    assert (await _generate(envoy.target, 5)).text


async def _generate(target: str, timeout_s: float) -> orchestrator_pb2.GenerateResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        request = orchestrator_pb2.GenerateRequest(prompt="are you there")
        reply: orchestrator_pb2.GenerateResponse = await stub.Generate(request, timeout=timeout_s)
        return reply


async def test_upstream_death_is_unavailable_fast_then_recovers(tmp_path: Path) -> None:
    """A dead orchestrator gives clients a prompt UNAVAILABLE (never a hang), and traffic returns when it does."""
    with fake_upstream(tmp_path) as upstream, running_envoy(upstream.port, tmp_path) as envoy:
        wait_for(envoy.upstream_healthy, 15, "orchestrator cluster healthy")
        assert (await _generate(envoy.target, 5)).text

        # A stream in flight when the upstream dies ends with an error, promptly.
        async with grpc.aio.insecure_channel(envoy.target) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            call = stub.GenerateStream(
                orchestrator_pb2.GenerateStreamRequest(request=orchestrator_pb2.GenerateRequest(prompt="long one")),
                timeout=10,
            )
            first = await call.read()
            assert first.HasField("selected")
            upstream.kill()
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as broken:
                while await call.read() is not grpc.aio.EOF:
                    pass
            assert time.monotonic() - started < 3
            assert broken.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)

        # New calls: UNAVAILABLE well inside the client's deadline, both before and after health checks notice.
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _generate(envoy.target, 5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 3
            wait_for(lambda: not envoy.upstream_healthy(), 10, "orchestrator marked unhealthy")

        upstream.start()
        deadline = time.monotonic() + 15
        while True:
            try:
                reply = await _generate(envoy.target, 2)
                break
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                assert time.monotonic() < deadline, "no recovery within 15 s of the upstream's return"
                await asyncio.sleep(0.1)
        assert reply.provenance.model_id == "fake-small"

        # Health through Envoy follows the upstream too.
        async with grpc.aio.insecure_channel(envoy.target) as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
