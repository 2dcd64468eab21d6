"""EmbeddingService over real gRPC with the real converted model: reference vectors, bad input, health, reflection."""

import dataclasses
from datetime import timedelta
from typing import Any

import grpc
import numpy as np
import pytest
from google.rpc import code_pb2, error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from llmorch.internal.v1 import embedding_pb2, embedding_pb2_grpc
from llmorch.v1 import types_pb2
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from embed_svc.worker import EmbedActivities
from llmorch_common.contracts import EmbedInput

MIN_COSINE = 0.999


def stub(channel: grpc.aio.Channel) -> embedding_pb2_grpc.EmbeddingServiceStub:
    return embedding_pb2_grpc.EmbeddingServiceStub(channel)


async def test_reference_vectors_match_sentence_transformers(
    embed_channel: grpc.aio.Channel, reference_items: list[dict[str, Any]]
) -> None:
    texts = [item["text"] for item in reference_items]
    reply = await stub(embed_channel).Embed(embedding_pb2.EmbedRequest(texts=texts), timeout=60)
    got = np.array([list(e.values) for e in reply.embeddings], dtype=np.float64)
    want = np.array([item["embedding"] for item in reference_items], dtype=np.float64)
    assert got.shape == want.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cosines = (got * want).sum(axis=1) / np.linalg.norm(want, axis=1)
    worst = int(np.argmin(cosines))
    assert cosines[worst] >= MIN_COSINE, f"cosine {cosines[worst]:.5f} for {texts[worst][:60]!r}"
    assert reply.model_id == "minilm-l6-v2"


async def test_long_text_is_truncated_to_256_tokens(
    embed_channel: grpc.aio.Channel, reference_items: list[dict[str, Any]]
) -> None:
    longest = max((item["text"] for item in reference_items), key=len)
    reply = await stub(embed_channel).Embed(embedding_pb2.EmbedRequest(texts=[longest, ""]), timeout=30)
    assert [e.token_count for e in reply.embeddings] == [256, 2]


async def test_single_and_batched_calls_agree(embed_channel: grpc.aio.Channel) -> None:
    texts = [f"text number {i} about gRPC and Temporal" for i in range(40)]
    batched = await stub(embed_channel).Embed(embedding_pb2.EmbedRequest(texts=texts), timeout=30)
    single = await stub(embed_channel).Embed(embedding_pb2.EmbedRequest(texts=[texts[17]]), timeout=30)
    cosine = float(np.dot(batched.embeddings[17].values, single.embeddings[0].values))
    assert cosine > 0.9999


def bad_request(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None and status.code == code_pb2.INVALID_ARGUMENT
    violations: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            unpacked = error_details_pb2.BadRequest()
            detail.Unpack(unpacked)
            violations.update({v.field: v.description for v in unpacked.field_violations})
    return violations


@pytest.mark.parametrize(
    ("texts", "field"),
    [
        ([], "texts"),
        (["a"] * 257, "texts"),
        (["ok", "fine", "x" * 20001], "texts[2]"),
    ],
    ids=["empty", "257-texts", "over-long-text"],
)
async def test_bad_input_is_invalid_argument_with_field_violations(
    embed_channel: grpc.aio.Channel, texts: list[str], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub(embed_channel).Embed(embedding_pb2.EmbedRequest(texts=texts), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(bad_request(caught.value)) == [field]


async def test_limits_are_inclusive(embed_channel: grpc.aio.Channel) -> None:
    texts = ["y"] * 255 + ["x" * 20000]
    reply = await stub(embed_channel).Embed(embedding_pb2.EmbedRequest(texts=texts), timeout=60)
    assert len(reply.embeddings) == 256


async def test_health_goes_from_not_serving_to_serving(embedding_service: Any, embed_channel: grpc.aio.Channel) -> None:
    assert embedding_service.status_before_load == health_pb2.HealthCheckResponse.NOT_SERVING
    assert embedding_service.embed_code_before_load == grpc.StatusCode.UNAVAILABLE
    health = health_pb2_grpc.HealthStub(embed_channel)
    for service in ["", "llmorch.internal.v1.EmbeddingService"]:
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_model_info(embed_channel: grpc.aio.Channel) -> None:
    reply = await stub(embed_channel).GetEmbeddingModelInfo(embedding_pb2.GetEmbeddingModelInfoRequest(), timeout=5)
    assert reply.dimension == 384
    assert reply.metadata.model_id == "minilm-l6-v2"
    assert reply.metadata.model_type == types_pb2.MODEL_TYPE_EMBEDDING
    assert reply.metadata.task_queue == "embedding.minilm-l6-v2"
    assert reply.metadata.max_concurrency == 1


async def test_reflection_lists_the_service(embed_channel: grpc.aio.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(embed_channel)
    call = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names = [service.name async for reply in call for service in reply.list_services_response.service]
    assert "llmorch.internal.v1.EmbeddingService" in names
    assert "grpc.health.v1.Health" in names


def activity_environment() -> ActivityEnvironment:
    """The default 1 s start-to-close timeout becomes the gRPC deadline; a loaded CI machine needs more."""
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(environment.info, start_to_close_timeout=timedelta(seconds=60))
    return environment


async def test_embed_activity_splits_batches_and_calls_the_service(embedding_service: Any) -> None:
    activities = EmbedActivities(embedding_service.target, max_batch=3)
    texts = tuple(f"sentence {i}" for i in range(7))
    try:
        output = await activity_environment().run(activities.embed, EmbedInput(texts=texts))
        direct = await embedding_service.replica.app.servicer.engine.embed(list(texts))
    finally:
        await activities.close()
    assert len(output.vectors) == 7 and output.token_counts == direct.token_counts
    # Batch composition changes llama.cpp's summation order, so rows agree closely but not bit for bit.
    assert (np.array(output.vectors) * direct.vectors).sum(axis=1).min() > 0.9999


async def test_embed_activity_marks_input_errors_non_retryable(embedding_service: Any) -> None:
    activities = EmbedActivities(embedding_service.target, max_batch=256)
    try:
        with pytest.raises(ApplicationError) as caught:
            await activity_environment().run(activities.embed, EmbedInput(texts=("x" * 20001,)))
    finally:
        await activities.close()
    assert caught.value.type == "INVALID_ARGUMENT" and caught.value.non_retryable
