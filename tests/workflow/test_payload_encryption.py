"""Tenant data sits sealed in Temporal: a history read straight from the server holds no prompt or answer in clear
text, the codec endpoint opens it for operators, and keys rotate by id."""

import asyncio
import base64
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from helpers import Orchestrator, fake_replica, orchestrator_settings, start_orchestrator, stop_orchestrator
from llmorch.v1 import orchestrator_pb2, types_pb2
from temporalio.api.common.v1 import Payload, Payloads, WorkflowExecution
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryRequest
from temporalio.client import Client

from llmorch_common.codec_server import serve
from llmorch_common.payload_codec import ENCODING, EncryptionCodec, new_key, parse_keys

pytestmark = pytest.mark.slow


def codec_of(*entries: str) -> EncryptionCodec:
    return EncryptionCodec(parse_keys(",".join(entries)))


def test_a_sealed_payload_opens_only_with_its_key_and_keys_rotate_by_id() -> None:
    old, new = new_key("old"), new_key("new")
    secret = Payload(metadata={"encoding": b"json/plain"}, data=b'"the tenant\'s prompt"')
    sealed_by_old = codec_of(old).seal(secret)
    assert sealed_by_old.metadata["encoding"] == ENCODING and b"prompt" not in sealed_by_old.SerializeToString()

    rotated = codec_of(new, old)  # the new key seals from now on; the old one still opens what it sealed
    assert rotated.open(sealed_by_old) == secret
    assert rotated.seal(secret).metadata["encryption-key-id"] == b"new"
    with pytest.raises(ValueError, match="does not hold"):
        codec_of(new).open(sealed_by_old)
    clear = Payload(metadata={"encoding": b"json/plain"}, data=b"1")
    assert rotated.open(clear) == clear, "histories recorded before encryption still replay"


def test_bad_keys_are_refused() -> None:
    for text in ("k1", "k1=" + base64.b64encode(b"short").decode(), "=" + new_key("x").split("=", 1)[1]):
        with pytest.raises(ValueError):
            parse_keys(text)


@pytest.fixture
async def orchestrator(temporal_client: Client, temporal_address: str, tmp_path: Path) -> AsyncIterator[Orchestrator]:
    started = await start_orchestrator(temporal_client, orchestrator_settings(tmp_path))
    replica = fake_replica("m-sealed", temporal_address, started.internal_address, default_flag=True)
    await replica.start()
    yield started
    await replica.drain()
    await stop_orchestrator(started)


def post(url: str, document: bytes) -> dict[str, list[dict[str, str]]]:
    request = urllib.request.Request(url, data=document, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as reply:
        decoded: dict[str, list[dict[str, str]]] = json.loads(reply.read())
    return decoded


async def test_history_in_temporal_holds_no_clear_text_and_the_codec_endpoint_opens_it(
    orchestrator: Orchestrator, temporal_client: Client
) -> None:
    marker = f"tenant-secret-{uuid.uuid4().hex[:8]}"
    reply = await orchestrator.stub.Generate(
        orchestrator_pb2.GenerateRequest(prompt=f"Repeat {marker}.", sampling=types_pb2.SamplingParams(max_tokens=4))
    )
    raw = await temporal_client.workflow_service.get_workflow_execution_history(
        GetWorkflowExecutionHistoryRequest(
            namespace=temporal_client.namespace, execution=WorkflowExecution(workflow_id=reply.provenance.workflow_id)
        )
    )
    stored = raw.history.SerializeToString()
    assert marker.encode() not in stored, "the prompt reached Temporal in clear text"
    started = raw.history.events[0].workflow_execution_started_event_attributes
    assert all(p.metadata["encoding"] == ENCODING for p in started.input.payloads)

    server = serve(0, "http://localhost:8233")
    task = asyncio.get_running_loop().run_in_executor(None, server.serve_forever)
    try:
        body = json_format.MessageToJson(Payloads(payloads=started.input.payloads)).encode()
        decoded = await asyncio.to_thread(post, f"http://127.0.0.1:{server.server_address[1]}/decode", body)
    finally:
        server.shutdown()
        await task
    texts = [base64.b64decode(p["data"]).decode() for p in decoded["payloads"]]
    assert any(marker in text for text in texts), texts
