"""Two API replicas and two workers on a shared PostgreSQL, behind Envoy (`make up REPLICAS=2`, with the fake
engine): a model registered through one replica is served through the other, a collection ingested through one is
grounding answers through the other, and killing a replica loses no request while Envoy stops routing to it."""

import asyncio
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import grpc
import pytest
from helpers import eventually
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc, types_pb2
from temporalio.client import WorkflowExecutionStatus

from llmorch_common.constants import DEFAULT_MODEL_ID
from orchestrator_svc.inference.service import workflow_id
from tools.stack import DEV_TENANT, Stack, fake_stack, replicated

pytestmark = pytest.mark.slow
DOCUMENTS = {
    "rockets": "Rockets carry spacecraft into orbit. A launch vehicle burns propellant to escape gravity.",
    "bread": "Bread is baked from flour, water and yeast. The dough rises before it goes into the oven.",
}


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    # A minute between polls: a replica that learns of a registration within the test did so by notification.
    fake = fake_stack(token_ms=20.0, orchestrator_env=(("ORCH_REGISTRY_SYNC_INTERVAL_S", "60"),))
    config = replicated(replace(fake, embed=True), replicas=2)  # the real MiniLM, for the grounded question
    async with Stack(config) as started:
        yield started


def metric(port: int, name: str, labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


def request(request_id: str, tokens: int = 5) -> orchestrator_pb2.GenerateRequest:
    return orchestrator_pb2.GenerateRequest(
        request_id=request_id, prompt="hello", sampling=types_pb2.SamplingParams(max_tokens=tokens)
    )


async def test_a_model_registered_through_one_replica_is_served_through_the_other(stack: Stack) -> None:
    second = stack.api_targets[1]
    # The model registered through the first replica (the first address of its registry target); the second was
    # already running and had synced before it: it can only know of the model from the registry's notification.
    second_metrics = stack.ports.more_api_metrics[0]
    assert metric(second_metrics, "llmorch_registry_sync_total", 'cause="changed"') >= 1
    assert metric(second_metrics, "llmorch_registry_sync_total", 'cause="poll"') == 0
    async with stack.channel(second) as channel:
        reply = await asyncio.wait_for(
            orchestrator_pb2_grpc.OrchestratorServiceStub(channel).Generate(request(f"r2-{uuid.uuid4().hex}")), 30
        )
    assert (reply.provenance.model_id, reply.provenance.selection_reason) == (DEFAULT_MODEL_ID, "default")


async def _async(value: bool) -> bool:
    return value


async def test_ingest_through_one_replica_and_ask_through_the_other(stack: Stack) -> None:
    """Each replica and worker has its own data directory: the collection, the staged documents and the vectors
    reach the other replica only through PostgreSQL."""
    first, second = stack.api_targets
    collection = f"shared-{uuid.uuid4().hex[:8]}"
    async with stack.channel(first) as one, stack.channel(second) as two:
        retrieval = retrieval_pb2_grpc.RetrievalServiceStub(one)
        await retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name=collection))
        started = await retrieval.Ingest(
            retrieval_pb2.IngestRequest(
                collection=collection,
                documents=[retrieval_pb2.Document(id=k, text=v) for k, v in DOCUMENTS.items()],
            )
        )

        async def ingested() -> bool:
            progress = await retrieval.GetIngestion(
                retrieval_pb2.GetIngestionRequest(ingestion_id=started.ingestion_id)
            )
            assert progress.state != retrieval_pb2.INGESTION_STATE_FAILED, progress.error
            return bool(progress.state == retrieval_pb2.INGESTION_STATE_COMPLETED)

        await eventually(ingested, timeout_s=60, interval_s=0.2)
        reply = await orchestrator_pb2_grpc.OrchestratorServiceStub(two).Generate(
            orchestrator_pb2.GenerateRequest(
                prompt="How do spacecraft reach orbit?",
                sampling=types_pb2.SamplingParams(max_tokens=5),
                rag=types_pb2.RagOptions(collection=collection, top_k=2),
            ),
            timeout=60,
        )
    assert reply.provenance.citations[0].source == "rockets"
    for name in ("api", "api-1"):  # nothing of it on either replica's own disk
        assert not (stack.home / "replicas" / name / "vectors").exists()


async def generate_until_answered(stub: orchestrator_pb2_grpc.OrchestratorServiceStub, request_id: str) -> int:
    """A client that lost its connection asks again with the same request id; returns how many tries it took."""
    for attempt in range(1, 30):
        try:
            reply = await stub.Generate(request(request_id, tokens=40), timeout=60)
            assert reply.provenance.usage.completion_tokens == 40
            return attempt
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL):
                raise
            await asyncio.sleep(0.5)
    raise AssertionError(f"{request_id} was never answered")


def envoy_hosts_healthy(stack: Stack) -> dict[str, bool]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.ports.envoy_admin}/clusters", timeout=5).read().decode()
    healthy: dict[str, bool] = {}
    for line in text.splitlines():
        parts = line.split("::")
        if parts[0] == "orchestrator" and len(parts) >= 4 and parts[2] == "health_flags":
            healthy[parts[1]] = parts[3] == "healthy"
    return healthy


async def test_killing_an_api_replica_loses_no_request_and_envoy_stops_routing_to_it(stack: Stack) -> None:
    client = await stack.temporal_client()
    ids = [f"kill-{i}-{uuid.uuid4().hex[:8]}" for i in range(8)]
    async with stack.channel() as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        calls = [asyncio.ensure_future(generate_until_answered(stub, request_id)) for request_id in ids]
        await asyncio.sleep(0.5)  # 40 tokens at 20 ms: every request is mid-generation
        stack.child("api").kill()
        await asyncio.gather(*calls)

        killed = stack.api_targets[0]
        await eventually(lambda: _async(envoy_hosts_healthy(stack).get(killed) is False), timeout_s=10)
        for _ in range(6):  # every later request is answered at the first try: Envoy sends none to the dead one
            assert await generate_until_answered(stub, f"after-{uuid.uuid4().hex[:8]}") == 1
    for request_id in ids:
        description = await client.get_workflow_handle(workflow_id(DEV_TENANT, request_id)).describe()
        assert description.status == WorkflowExecutionStatus.COMPLETED
