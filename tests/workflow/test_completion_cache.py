"""The optional completion and embedding caches on a real redis-server (Debian's, started through tools/stack.py):
hits and misses, TTL, tenants, grounding versions, and a Redis that dies mid-run."""

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis
from helpers import (
    Orchestrator,
    embed_process,
    eventually,
    fake_replica,
    orchestrator_settings,
    record_history,
    start_orchestrator,
    stop_orchestrator,
)
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, retrieval_pb2
from prometheus_client import REGISTRY
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from llmorch_client.client import question_request
from llmorch_common.grpc_edge import make_channel
from orchestrator_svc.identity.limits import RateLimiter
from orchestrator_svc.identity.service import KeyChecker
from orchestrator_svc.inference.cache import KEY_PREFIX
from orchestrator_svc.inference.requests import request_from_proto
from orchestrator_svc.inference.service import InferenceService
from orchestrator_svc.retrieval.embedding_cache import KEY_PREFIX as EMBEDDING_PREFIX
from tools.stack import Child, free_port, redis_spec

pytestmark = pytest.mark.slow
MODEL = "cache-fake"
TTL_S = 600.0


@pytest.fixture(scope="module")
async def redis_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Child]:
    tmp = tmp_path_factory.mktemp("redis")
    child = Child(redis_spec(free_port(), tmp), tmp / "redis.log")
    await child.start(30)
    yield child
    await child.terminate(10)


@pytest.fixture(scope="module")
async def cached(
    temporal_client: Client, temporal_address: str, redis_server: Child, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Orchestrator]:
    tmp = tmp_path_factory.mktemp("cache")
    internal_port = free_port()
    embed = embed_process(temporal_address, internal_port, tmp)
    settings = orchestrator_settings(
        tmp,
        internal_port=internal_port,
        vector_store="lancedb",
        embedding_address=f"localhost:{embed.port}",
        redis_url=f"redis://127.0.0.1:{redis_server.port}/0",
        cache_ttl_s=TTL_S,
    )
    orchestrator = await start_orchestrator(temporal_client, settings)
    await embed.start(timeout_s=120)
    replica = fake_replica(MODEL, temporal_address, orchestrator.internal_address, default_flag=True)
    await replica.start()

    async def registered() -> bool:
        listing = await orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
        return {m.model_id for m in listing.models} == {MODEL, "minilm-l6-v2"}

    await eventually(registered, timeout_s=30)
    yield orchestrator
    await replica.drain()
    await embed.terminate()
    await stop_orchestrator(orchestrator)


@pytest.fixture
async def store(redis_server: Child) -> AsyncIterator["redis.Redis"]:
    client = redis.Redis(port=redis_server.spec.tcp_port or 0)
    yield client
    await client.aclose()


def question(text: str = "", **fields: object) -> orchestrator_pb2.GenerateRequest:
    return question_request(text or f"What is {uuid.uuid4().hex[:8]}?", max_tokens=8, **fields)  # type: ignore[arg-type]


async def test_a_deterministic_request_misses_then_hits_without_running_a_model(
    cached: Orchestrator, temporal_client: Client
) -> None:
    request = question(seed=7)
    first = await cached.stub.Generate(request)
    second = await cached.stub.Generate(request)
    assert (first.provenance.cache, second.provenance.cache) == ("miss", "hit")
    assert second.text == first.text and second.provenance.usage == first.provenance.usage
    assert second.provenance.workflow_id != first.provenance.workflow_id, "a hit is its own durable request"
    history = await temporal_client.get_workflow_handle(second.provenance.workflow_id).fetch_history()
    record_history(history, "inference_cache_hit")
    kinds = [event.event_type for event in history.events]
    assert EventType.EVENT_TYPE_MARKER_RECORDED in kinds, "the lookup is a local activity in the history"
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds, "no generation was dispatched"


async def test_sampled_requests_are_not_cached(cached: Orchestrator) -> None:
    request = question()  # the default temperature, no seed: every answer may differ
    assert (await cached.stub.Generate(request)).provenance.cache == ""


async def test_entries_live_for_the_ttl(cached: Orchestrator, store: "redis.Redis", temporal_client: Client) -> None:
    request = question(seed=1)
    await cached.stub.Generate(request)
    ttls = [await store.pttl(key) async for key in store.scan_iter(f"{KEY_PREFIX}*")]
    assert ttls and all(0 < ttl <= TTL_S * 1000 for ttl in ttls)
    # Another API replica with a short TTL: the TTL travels with the request to the worker.
    api = cached.api
    short = InferenceService(
        temporal_client,
        cached.settings.model_copy(update={"cache_ttl_s": 1.0}),
        api.registry,
        cached.resources.store,
        cached.resources.embeddings,
        RateLimiter(api.keys, lease_ttl_s=60),
    )
    caller = await KeyChecker(api.keys, cache_ttl_s=0).authenticate(f"Bearer {cached.api_key}")
    fresh = question(seed=2)
    assert (await short.generate(request_from_proto(fresh, caller))).cache == "miss"
    assert (await short.generate(request_from_proto(fresh, caller))).cache == "hit"

    async def expired() -> bool:
        return (await short.generate(request_from_proto(fresh, caller))).cache == "miss"

    assert await eventually(expired, timeout_s=15, interval_s=0.3)


async def test_another_tenant_never_gets_the_answer(cached: Orchestrator) -> None:
    """The same prompt with the keys of two tenants: each tenant has its own entry."""
    async with make_channel(cached.address, token=await cached.key_for("globex")) as channel:
        other = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        request = question(seed=3)
        assert (await cached.stub.Generate(request)).provenance.cache == "miss"
        assert (await other.Generate(request)).provenance.cache == "miss"
        assert (await other.Generate(request)).provenance.cache == "hit"
        assert (await cached.stub.Generate(request)).provenance.cache == "hit"


async def ingest(orchestrator: Orchestrator, collection: str, text: str) -> None:
    started = await orchestrator.retrieval.Ingest(
        retrieval_pb2.IngestRequest(collection=collection, documents=[retrieval_pb2.Document(id="doc", text=text)])
    )

    async def done() -> bool:
        progress = await orchestrator.retrieval.GetIngestion(
            retrieval_pb2.GetIngestionRequest(ingestion_id=started.ingestion_id)
        )
        assert progress.state != retrieval_pb2.INGESTION_STATE_FAILED, progress.error
        return bool(progress.state == retrieval_pb2.INGESTION_STATE_COMPLETED)

    await eventually(done, timeout_s=60, interval_s=0.2)


async def test_reingesting_the_collection_invalidates_grounded_answers(
    cached: Orchestrator, temporal_client: Client
) -> None:
    await cached.retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name="cached-facts"))
    await ingest(cached, "cached-facts", "The launch window opens at dawn.")
    request = question("When does the launch window open?", collection="cached-facts", top_k=1, seed=4)
    miss = await cached.stub.Generate(request)
    assert miss.provenance.cache == "miss"
    history = await temporal_client.get_workflow_handle(miss.provenance.workflow_id).fetch_history()
    record_history(history, "inference_cache_miss_rag")
    assert (await cached.stub.Generate(request)).provenance.cache == "hit"
    await ingest(cached, "cached-facts", "The launch window opens at dusk.")
    again = await cached.stub.Generate(request)
    assert again.provenance.cache == "miss"
    assert "dusk" in again.provenance.citations[0].text


async def test_embeddings_are_cached_by_weights_and_text(cached: Orchestrator, store: "redis.Redis") -> None:
    texts = [f"cached sentence {uuid.uuid4().hex}", f"another sentence {uuid.uuid4().hex}"]
    hits_before = cache_count("embedding", "hit")
    first = await cached.stub.Embed(orchestrator_pb2.EmbedRequest(texts=texts))
    assert cache_count("embedding", "hit") == hits_before
    assert len([key async for key in store.scan_iter(f"{EMBEDDING_PREFIX}*")]) >= 2
    # One new text between the cached ones: order holds, and only the new one is embedded.
    mixed = await cached.stub.Embed(orchestrator_pb2.EmbedRequest(texts=[texts[1], "a new text", texts[0]]))
    assert cache_count("embedding", "hit") == hits_before + 2
    assert list(mixed.embeddings[0].values) == list(first.embeddings[1].values)
    assert list(mixed.embeddings[2].values) == list(first.embeddings[0].values)
    assert mixed.embeddings[2].token_count == first.embeddings[0].token_count
    assert mixed.model_id == first.model_id == "minilm-l6-v2"


async def test_a_redis_killed_mid_run_degrades_to_no_cache(cached: Orchestrator, redis_server: Child) -> None:
    """Last in the module: it kills Redis."""
    request = question(seed=5)
    assert (await cached.stub.Generate(request)).provenance.cache == "miss"
    redis_server.kill()
    errors_before = cache_count("completion", "error")
    for _ in range(3):
        reply = await cached.stub.Generate(request)
        assert reply.text and reply.provenance.cache == "miss"
    assert cache_count("completion", "error") == errors_before + 3, "each failed lookup is counted"
    embedded = await cached.stub.Embed(orchestrator_pb2.EmbedRequest(texts=["still embedded without Redis"]))
    assert len(embedded.embeddings[0].values) == 384


def cache_count(kind: str, result: str) -> float:
    return REGISTRY.get_sample_value("llmorch_cache_requests_total", {"kind": kind, "result": result}) or 0.0
