"""The public view of a registered model: what users need to choose one, without replica addresses or task queues."""

from llmorch.v1 import orchestrator_pb2

from orchestrator_svc.registry.convert import HEALTH, hardware_to_proto, model_type_to_proto
from orchestrator_svc.registry.records import RegisteredModel


def public_model(model: RegisteredModel) -> orchestrator_pb2.Model:
    """Copy field by field: a field added to the internal view stays internal until it is added here on purpose."""
    metadata = model.metadata
    return orchestrator_pb2.Model(
        model_id=metadata.model_id,
        model_name=metadata.model_name,
        model_type=model_type_to_proto(metadata.model_type),
        priority=metadata.priority,
        is_default=metadata.default_flag,
        context_limit=metadata.context_limit,
        hardware_type=hardware_to_proto(metadata.hardware),
        health=HEALTH[model.health],
        in_flight=model.in_flight,
        capacity=model.capacity,
        queue_depth=model.queue_backlog,
        serving_replicas=model.serving_replicas,
    )
