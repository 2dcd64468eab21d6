"""API keys, tenant isolation and the closed control plane, on a real orchestrator, Temporal and fake-engine model."""

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from helpers import (
    Orchestrator,
    assert_every_public_rpc_refuses,
    eventually,
    fake_replica,
    orchestrator_settings,
    start_orchestrator,
    stop_orchestrator,
)
from llmorch.internal.v1 import metadata_pb2, registry_pb2, registry_pb2_grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from llmorch.v1 import types_pb2 as public_types
from temporalio.client import Client

from llmorch_common.grpc_edge import make_channel
from orchestrator_svc.identity.keys import Role
from orchestrator_svc.identity.service import KeyAdmin

pytestmark = pytest.mark.slow
DEFAULT = "m-default"


@pytest.fixture
async def orchestrator(temporal_client: Client, temporal_address: str, tmp_path: Path) -> AsyncIterator[Orchestrator]:
    started = await start_orchestrator(temporal_client, orchestrator_settings(tmp_path, key_cache_ttl_s=0.5))
    replica = fake_replica(DEFAULT, temporal_address, started.internal_address, default_flag=True)
    await replica.start()

    async def serving() -> bool:
        listing = await started.stub.ListModels(orchestrator_pb2.ListModelsRequest())
        return any(m.model_id == DEFAULT and m.health == public_types.HEALTH_STATE_SERVING for m in listing.models)

    await eventually(serving)
    yield started
    await replica.drain()
    await stop_orchestrator(started)


def generate(prompt: str, request_id: str = "", collection: str = "") -> orchestrator_pb2.GenerateRequest:
    return orchestrator_pb2.GenerateRequest(
        request_id=request_id,
        prompt=prompt,
        sampling=public_types.SamplingParams(max_tokens=4),
        rag=public_types.RagOptions(collection=collection) if collection else None,
    )


async def code_of(call: "asyncio.Future[object] | object") -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def rogue_metadata() -> metadata_pb2.ModelMetadata:
    return metadata_pb2.ModelMetadata(
        model_id="rogue",
        model_name="rogue",
        model_type=public_types.MODEL_TYPE_LLM,
        default_flag=True,
        priority=100,
        max_concurrency=1,
        context_limit=2048,
        endpoint="203.0.113.9:443",
        task_queue="llm.rogue",
    )


async def test_a_rogue_register_is_refused_and_the_default_keeps_its_flag_and_serves(
    orchestrator: Orchestrator,
) -> None:
    """The hijack of the first version: one unauthenticated Register took the default flag, for good."""
    register = registry_pb2.RegisterRequest(metadata=rogue_metadata())
    # The public port does not serve the registry at all, even to a caller with a valid API key.
    public = registry_pb2_grpc.RegistryServiceStub(orchestrator.channel)
    assert await code_of(public.Register(register)) == grpc.StatusCode.UNIMPLEMENTED
    # The internal listener wants the registration credential: none, or a wrong one, is UNAUTHENTICATED.
    for token in (None, "not-the-registration-token-but-long-enough-to-pass", orchestrator.api_key):
        async with make_channel(orchestrator.internal_address, token=token) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            assert await code_of(stub.Register(register)) == grpc.StatusCode.UNAUTHENTICATED
            assert await code_of(stub.ListModels(registry_pb2.ListModelsRequest())) == grpc.StatusCode.UNAUTHENTICATED

    listing = await orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
    assert [(m.model_id, m.is_default) for m in listing.models] == [(DEFAULT, True)]
    reply = await orchestrator.stub.Generate(generate("Say hi."))
    assert (reply.provenance.model_id, reply.provenance.selection_reason) == (DEFAULT, "default")


async def test_every_public_rpc_needs_a_key_on_the_api_port(orchestrator: Orchestrator) -> None:
    await assert_every_public_rpc_refuses(orchestrator.address)


async def test_a_revoked_key_stops_working_within_the_cache_ttl(orchestrator: Orchestrator) -> None:
    key, record = await KeyAdmin(orchestrator.api.keys).create("revokee")
    async with make_channel(orchestrator.address, token=key) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        await stub.ListModels(orchestrator_pb2.ListModelsRequest())
        await KeyAdmin(orchestrator.api.keys).revoke(record.key_id)

        async def refused() -> bool:
            code = await code_of(stub.ListModels(orchestrator_pb2.ListModelsRequest()))
            return bool(code == grpc.StatusCode.UNAUTHENTICATED)

        # key_cache_ttl_s is 0.5 here: the bound is the setting, not the poll.
        await eventually(refused, timeout_s=2.0)


async def test_requests_belong_to_their_tenant(orchestrator: Orchestrator) -> None:
    """Same request id, two tenants: two runs. Another tenant's id is NOT_FOUND for GetRequest, CancelRequest and a
    reattach is a new request of its own."""
    request_id = f"shared-{uuid.uuid4().hex[:8]}"
    async with await orchestrator.channel_for("tenant-a") as a, await orchestrator.channel_for("tenant-b") as b:
        as_a, as_b = orchestrator_pb2_grpc.OrchestratorServiceStub(a), orchestrator_pb2_grpc.OrchestratorServiceStub(b)
        first = await as_a.Generate(generate("Count to three.", request_id))
        # B may use the same id, with another body: no ALREADY_EXISTS, a run of its own.
        other = await as_b.Generate(generate("Name a colour.", request_id))
        assert other.provenance.workflow_id != first.provenance.workflow_id
        assert "tenant-a" in first.provenance.workflow_id and "tenant-b" in other.provenance.workflow_id

        a_only = f"a-only-{uuid.uuid4().hex[:8]}"
        await as_a.Generate(generate("Count to four.", a_only))
        for call in (
            as_b.GetRequest(orchestrator_pb2.GetRequestRequest(request_id=a_only)),
            as_b.CancelRequest(orchestrator_pb2.CancelRequestRequest(request_id=a_only)),
        ):
            try:
                await call
                raise AssertionError("another tenant's request answered")
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
                assert "tenant-a" not in (error.details() or "")
        # Reattaching with A's id and body from B starts B's own run; A's reattach returns A's run.
        reattached = await as_a.Generate(generate("Count to four.", a_only))
        stranger = await as_b.Generate(generate("Count to four.", a_only))
        assert stranger.provenance.workflow_id != reattached.provenance.workflow_id
        mine = await as_a.GetRequest(orchestrator_pb2.GetRequestRequest(request_id=a_only))
        assert mine.status == orchestrator_pb2.REQUEST_STATUS_COMPLETED
        assert mine.result.provenance.workflow_id == reattached.provenance.workflow_id


async def test_collections_and_ingestions_belong_to_their_tenant(orchestrator: Orchestrator) -> None:
    docs = f"docs-{uuid.uuid4().hex[:6]}"
    async with (
        await orchestrator.channel_for("tenant-a") as a,
        await orchestrator.channel_for("tenant-b") as b,
        await orchestrator.channel_for("ops", Role.ADMIN) as admin,
    ):
        as_a, as_b = retrieval_pb2_grpc.RetrievalServiceStub(a), retrieval_pb2_grpc.RetrievalServiceStub(b)
        await as_a.CreateCollection(retrieval_pb2.CreateCollectionRequest(name=docs))
        ingestion = await as_a.Ingest(
            retrieval_pb2.IngestRequest(collection=docs, documents=[retrieval_pb2.Document(id="d", text="Hello.")])
        )
        listed = await as_b.ListCollections(retrieval_pb2.ListCollectionsRequest())
        assert docs not in [c.name for c in listed.collections]

        not_found = [
            as_b.Ingest(
                retrieval_pb2.IngestRequest(collection=docs, documents=[retrieval_pb2.Document(id="x", text="x")])
            ),
            as_b.Query(retrieval_pb2.QueryRequest(collection=docs, text="hello")),
            as_b.DeleteCollection(retrieval_pb2.DeleteCollectionRequest(name=docs)),
            as_b.GetIngestion(retrieval_pb2.GetIngestionRequest(ingestion_id=ingestion.ingestion_id)),
            orchestrator_pb2_grpc.OrchestratorServiceStub(b).Generate(generate("Hi.", collection=docs)),
        ]
        for call in not_found:
            assert await code_of(call) == grpc.StatusCode.NOT_FOUND
        # B's refusal left A's collection in place, and B may own a collection of the same name.
        assert docs in [
            c.name for c in (await as_a.ListCollections(retrieval_pb2.ListCollectionsRequest())).collections
        ]
        await as_b.CreateCollection(retrieval_pb2.CreateCollectionRequest(name=docs))
        assert (await as_a.GetIngestion(retrieval_pb2.GetIngestionRequest(ingestion_id=ingestion.ingestion_id))).state

        across = retrieval_pb2.ListCollectionsRequest(all_tenants=True)
        assert await code_of(as_a.ListCollections(across)) == grpc.StatusCode.PERMISSION_DENIED
        everything = await retrieval_pb2_grpc.RetrievalServiceStub(admin).ListCollections(across)
        owners = {(c.tenant, c.name) for c in everything.collections}
        assert {("tenant-a", docs), ("tenant-b", docs)} <= owners


def test_keys_are_created_listed_and_revoked_with_the_cli_and_stored_hashed(tmp_path: Path) -> None:
    database = tmp_path / "keys.db"
    admin = [sys.executable, "-m", "orchestrator_svc.identity.admin", "--database-url", f"sqlite:///{database}"]

    def run(*args: str) -> str:
        done = subprocess.run([*admin, *args], capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    created = run("keys", "create", "--tenant", "acme").splitlines()
    key = created[-1]
    key_id = key.split("_")[1]
    assert key.startswith("llmo_") and key_id in created[0]
    assert f"{key_id}  acme" in run("keys", "list") and "live" in run("keys", "list", "--tenant", "acme")
    with sqlite3.connect(database) as db:
        stored = db.execute("SELECT secret_hash FROM api_keys").fetchall()
    assert len(stored) == 1 and key.split("_", 2)[2] not in stored[0][0] and stored[0][0].startswith("scrypt$")
    run("keys", "revoke", key_id)
    assert "revoked" in run("keys", "list")
    again = subprocess.run([*admin, "keys", "revoke", key_id], capture_output=True, text=True, timeout=60)
    assert again.returncode != 0 and "NOT_FOUND" in again.stderr
