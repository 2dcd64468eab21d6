"""Fixtures for service tests: a real EmbeddingService on a free port, with the real converted model."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmorch.internal.v1 import embedding_pb2, embedding_pb2_grpc

from embed_svc.config import EmbedSettings
from embed_svc.replica import EmbedReplica
from llmorch_common.grpc_edge import wait_until_serving
from tools.testdata import reference_data_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class StartedEmbedding:
    replica: EmbedReplica
    target: str
    # Observed before the weights started loading, so the health test sees the real start-up order.
    status_before_load: int
    embed_code_before_load: grpc.StatusCode


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def embedding_service() -> AsyncIterator[StartedEmbedding]:
    settings = EmbedSettings(
        port=0,
        host="127.0.0.1",
        metrics_port=0,
        drain_timeout_s=1.0,
        model_path=str(REPO_ROOT / "data" / "models" / "minilm-l6-v2.gguf"),
    )
    replica = EmbedReplica(settings)
    await replica.serve()
    target = f"127.0.0.1:{replica.port}"
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        try:
            await embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed(
                embedding_pb2.EmbedRequest(texts=["x"]), timeout=5
            )
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
    await replica.load()
    await wait_until_serving(target, timeout_s=60)
    yield StartedEmbedding(replica, target, reply.status, code)
    await replica.drain()


@pytest_asyncio.fixture(loop_scope="session")
async def embed_channel(embedding_service: StartedEmbedding) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(embedding_service.target) as channel:
        yield channel


@pytest.fixture(scope="session")
def reference_items() -> list[dict[str, object]]:
    path = reference_data_dir() / "minilm_reference.json"
    items: list[dict[str, object]] = json.loads(path.read_text())["items"]
    return items
