"""TLS at the front door, end to end: the stack's Envoy with a certificate from a local CA, in front of the real API,
worker, Temporal and ModelService (fake engine); grpcurl and the Python client reach it only by trusting the CA.
The same stack shows the Temporal namespace retention that every stack sets."""

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from llmorch.v1 import orchestrator_pb2
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

from llmorch_client.client import OrchestratorClient, question_request, tls_credentials
from llmorch_common.constants import DEFAULT_MODEL_ID, TEMPORAL_NAMESPACE
from tools.stack import TEMPORAL_RETENTION, Stack, fake_stack
from tools.tls import TlsFiles, issue

pytestmark = pytest.mark.slow
PUBLIC = {"llmorch.v1.OrchestratorService", "llmorch.v1.RetrievalService", "grpc.health.v1.Health"}


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    tls = issue(tmp_path_factory.mktemp("tls"))
    async with Stack(fake_stack(max_concurrency=2, first_token_ms=5.0, token_ms=1.0, tls=tls)) as started:
        yield started


def tls_of(stack: Stack) -> TlsFiles:
    assert stack.config.tls is not None
    return stack.config.tls


async def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    """In a thread: the stack's own clients share this event loop."""
    binary = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    return await asyncio.to_thread(
        subprocess.run, [binary, *args], capture_output=True, text=True, timeout=60, check=False
    )


async def test_grpcurl_lists_and_generates_over_tls(stack: Stack) -> None:
    ca = str(tls_of(stack).ca)
    listing = await grpcurl("-cacert", ca, stack.envoy_target, "list")  # reflection needs no key
    assert listing.returncode == 0, listing.stderr
    assert set(listing.stdout.split()) >= PUBLIC
    body = json.dumps({"prompt": "Say hi.", "request_id": "tls-grpcurl", "sampling": {"max_tokens": 4}})
    key = f"authorization: Bearer {stack.api_key}"
    generate = "llmorch.v1.OrchestratorService/Generate"
    unary = await grpcurl("-cacert", ca, "-H", key, "-d", body, stack.envoy_target, generate)
    assert unary.returncode == 0, unary.stderr
    reply = json.loads(unary.stdout)
    assert reply["requestId"] == "tls-grpcurl" and reply["text"]
    assert reply["provenance"]["modelId"] == DEFAULT_MODEL_ID


async def test_grpcurl_without_the_ca_or_in_plaintext_is_refused(stack: Stack) -> None:
    untrusted = await grpcurl(stack.envoy_target, "list")  # the system's roots do not include the local CA
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr, untrusted.stderr
    plaintext = await grpcurl("-plaintext", "-connect-timeout", "3", stack.envoy_target, "list")
    assert plaintext.returncode != 0, "the public listener speaks TLS only"


async def test_python_client_streams_over_tls(stack: Stack) -> None:
    credentials = tls_credentials(ca_file=tls_of(stack).ca)
    async with OrchestratorClient(stack.envoy_target, stack.api_key, credentials=credentials) as client:
        models = await client.list_models()
        assert DEFAULT_MODEL_ID in {model.model_id for model in models}
        request = question_request("Say hi.", max_tokens=4)
        request.request_id = "tls-python"
        events = [event async for event in client.stream(request, timeout_s=60)]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "selected" and kinds[-1] == "completed" and "delta" in kinds
    completed: orchestrator_pb2.GenerateResponse = events[-1].completed
    assert completed.request_id == "tls-python"
    assert completed.text == "".join(event.delta for event in events if event.WhichOneof("event") == "delta")
    assert stack.envoy_url.startswith("https://")


async def test_python_client_with_another_ca_is_refused(stack: Stack, tmp_path: Path) -> None:
    stranger = issue(tmp_path / "other-ca")  # same names, another issuer: the channel must not trust it
    untrusted = tls_credentials(ca_file=stranger.ca)
    async with OrchestratorClient(stack.envoy_target, stack.api_key, credentials=untrusted) as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.list_models(timeout_s=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_stack_sets_the_namespace_retention(stack: Stack) -> None:
    client = await stack.temporal_client()
    described = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=TEMPORAL_NAMESPACE))
    assert described.config.workflow_execution_retention_ttl.ToTimedelta() == TEMPORAL_RETENTION


async def test_the_stacks_own_channel_speaks_tls_to_envoy(stack: Stack) -> None:
    """Stack.channel, which tests and tools use for the front door, follows the stack's TLS setting."""
    from llmorch.v1 import orchestrator_pb2_grpc

    async with stack.channel() as channel:
        listing = await orchestrator_pb2_grpc.OrchestratorServiceStub(channel).ListModels(
            orchestrator_pb2.ListModelsRequest(), timeout=10
        )
    assert DEFAULT_MODEL_ID in {model.model_id for model in listing.models}
