"""Both kinds of replica describe themselves to the registry through one build_metadata."""

from llmorch.v1 import types_pb2

from embed_svc import replica as embed_replica
from embed_svc.config import EmbedSettings
from llmorch_common.constants import DEFAULT_MODEL_ID, EMBEDDING_MODEL_ID
from llmorch_common.replica import build_metadata
from model_svc import replica as model_replica
from model_svc.config import ModelSettings


def test_a_catalog_model_takes_the_catalog_unless_settings_override_it() -> None:
    catalog = build_metadata(model_replica.identity(ModelSettings(model_id=DEFAULT_MODEL_ID)), "host:1")
    assert (catalog.model_name, catalog.priority, catalog.default_flag) == ("SmolLM2 135M Instruct (Q4_1)", 100, True)
    overridden = model_replica.identity(
        ModelSettings(model_id=DEFAULT_MODEL_ID, model_name="mine", priority=-5, default_flag=False)
    )
    assert (overridden.model_name, overridden.priority, overridden.default_flag) == ("mine", -5, False)


def test_model_metadata_carries_endpoint_queue_and_hardware() -> None:
    settings = ModelSettings(model_id="m-x", max_concurrency=3, context_limit=1024, hardware_type="gpu")
    metadata = build_metadata(model_replica.identity(settings), "10.0.0.7:50061")
    assert metadata.model_type == types_pb2.MODEL_TYPE_LLM
    assert (metadata.endpoint, metadata.task_queue) == ("10.0.0.7:50061", "llm.m-x")
    assert (metadata.max_concurrency, metadata.context_limit) == (3, 1024)
    assert metadata.hardware_type == types_pb2.HARDWARE_TYPE_GPU


def test_embedding_metadata_promises_one_call_at_a_time_on_cpu() -> None:
    settings = EmbedSettings(max_tokens=128, priority=7, default_flag=False)
    metadata = build_metadata(embed_replica.identity(settings), "localhost:50071")
    assert metadata.model_type == types_pb2.MODEL_TYPE_EMBEDDING
    assert (metadata.model_id, metadata.task_queue) == (EMBEDDING_MODEL_ID, f"embedding.{EMBEDDING_MODEL_ID}")
    assert (metadata.max_concurrency, metadata.context_limit) == (1, 128)
    assert (metadata.priority, metadata.default_flag) == (7, False)
    assert metadata.hardware_type == types_pb2.HARDWARE_TYPE_CPU
