"""The public API shows users what they need and nothing internal: the Model view, FinishReason, Embed's limits."""

import pytest
from google.protobuf.descriptor import Descriptor
from llmorch.internal.v1 import metadata_pb2, registry_pb2
from llmorch.v1 import orchestrator_pb2, retrieval_pb2, types_pb2

from llmorch_common.contracts import CANCELLED, LENGTH, STOP
from llmorch_common.finish_reason import finish_reason_from_proto, finish_reason_to_proto
from llmorch_common.validation import MAX_EMBED_TEXT_CHARS, MAX_EMBED_TEXTS, embed_violations
from orchestrator_svc.inference.contracts import InferenceResult
from orchestrator_svc.inference.servicer import result_to_proto
from orchestrator_svc.registry.convert import registered_from_proto
from orchestrator_svc.registry.public_model import public_model

# Field names of the internal view; user metadata (Document.metadata) is fine, ModelMetadata is caught by its type.
INTERNAL_FIELDS = {"endpoint", "task_queue", "replicas", "registration_order"}


def registered(
    health: types_pb2.HealthState.ValueType = types_pb2.HEALTH_STATE_SERVING,
) -> registry_pb2.RegisteredModel:
    return registry_pb2.RegisteredModel(
        metadata=metadata_pb2.ModelMetadata(
            model_id="smollm2-135m-instruct",
            model_name="SmolLM2 135M Instruct",
            model_type=types_pb2.MODEL_TYPE_LLM,
            priority=100,
            default_flag=True,
            max_concurrency=2,
            context_limit=2048,
            hardware_type=types_pb2.HARDWARE_TYPE_CPU,
            endpoint="10.0.0.7:50061",
            task_queue="llm.smollm2-135m-instruct",
        ),
        health=health,
        in_flight=3,
        capacity=4,
        queue_backlog=5,
        replicas=[
            registry_pb2.Replica(endpoint="10.0.0.7:50061", health=types_pb2.HEALTH_STATE_SERVING, in_flight=2),
            registry_pb2.Replica(endpoint="10.0.0.8:50061", health=types_pb2.HEALTH_STATE_SERVING, in_flight=1),
            registry_pb2.Replica(endpoint="10.0.0.9:50061", health=types_pb2.HEALTH_STATE_NOT_SERVING),
        ],
        registration_order=1,
    )


def test_public_model_carries_what_users_need() -> None:
    model = public_model(registered_from_proto(registered()))
    assert model == orchestrator_pb2.Model(
        model_id="smollm2-135m-instruct",
        model_name="SmolLM2 135M Instruct",
        model_type=types_pb2.MODEL_TYPE_LLM,
        priority=100,
        is_default=True,
        context_limit=2048,
        hardware_type=types_pb2.HARDWARE_TYPE_CPU,
        health=types_pb2.HEALTH_STATE_SERVING,
        in_flight=3,
        capacity=4,
        queue_depth=5,
        serving_replicas=2,
    )


def test_public_model_leaks_no_endpoint_or_task_queue() -> None:
    wire = public_model(registered_from_proto(registered())).SerializeToString()
    for secret in (b"10.0.0.", b"50061", b"llm.smollm2"):
        assert secret not in wire


def _message_types(descriptor: Descriptor) -> list[Descriptor]:
    return [descriptor, *(t for nested in descriptor.nested_types for t in _message_types(nested))]


@pytest.mark.parametrize("module", [orchestrator_pb2, retrieval_pb2, types_pb2], ids=lambda m: m.__name__)
def test_no_public_message_has_an_internal_field(module: object) -> None:
    """A structural guard: the public package has no field that could carry an address or a queue."""
    messages = [t for top in module.DESCRIPTOR.message_types_by_name.values() for t in _message_types(top)]  # type: ignore[attr-defined]
    for message in messages:
        leaked = {f.name for f in message.fields} & INTERNAL_FIELDS
        assert not leaked, f"{message.full_name} has internal fields {leaked}"
        for field in message.fields:
            if field.message_type is not None:
                assert not field.message_type.full_name.startswith("llmorch.internal."), field.full_name


@pytest.mark.parametrize(
    ("word", "wire"),
    [
        (STOP, types_pb2.FINISH_REASON_STOP),
        (LENGTH, types_pb2.FINISH_REASON_LENGTH),
        (CANCELLED, types_pb2.FINISH_REASON_CANCELLED),
    ],
)
def test_finish_reason_round_trips(word: str, wire: types_pb2.FinishReason.ValueType) -> None:
    assert finish_reason_to_proto(word) == wire
    assert finish_reason_from_proto(wire) == word


def test_every_finish_reason_but_unspecified_has_a_word() -> None:
    values = [v.number for v in types_pb2.FinishReason.DESCRIPTOR.values if v.number]
    assert all(finish_reason_from_proto(v) for v in values)  # type: ignore[arg-type]


def test_unknown_finish_reason_is_unspecified_not_an_error() -> None:
    assert finish_reason_to_proto("eos_token") == types_pb2.FINISH_REASON_UNSPECIFIED
    assert finish_reason_from_proto(types_pb2.FINISH_REASON_UNSPECIFIED) == ""


def test_generate_response_carries_the_enum() -> None:
    result = InferenceResult(
        request_id="r",
        text="t",
        finish_reason=CANCELLED,
        model_id="m",
        selection_reason="default",
        prompt_tokens=1,
        completion_tokens=1,
        queue_wait_ms=0,
        time_to_first_token_ms=0,
        generation_ms=0,
        retrieval_ms=0,
        total_ms=0,
        workflow_id="w",
        run_id="run",
    )
    assert result_to_proto(result).finish_reason == types_pb2.FINISH_REASON_CANCELLED


@pytest.mark.parametrize(
    ("texts", "fields"),
    [
        ([], ["texts"]),
        (["x"] * (MAX_EMBED_TEXTS + 1), ["texts"]),
        (["ok", "y" * (MAX_EMBED_TEXT_CHARS + 1), "z" * (MAX_EMBED_TEXT_CHARS + 1)], ["texts[1]", "texts[2]"]),
    ],
)
def test_embed_violations_name_every_bad_field(texts: list[str], fields: list[str]) -> None:
    assert [v.field for v in embed_violations(texts)] == fields


def test_embed_allows_the_empty_string_and_the_limits() -> None:
    assert embed_violations([""]) == []
    assert embed_violations(["x" * MAX_EMBED_TEXT_CHARS] * MAX_EMBED_TEXTS) == []
