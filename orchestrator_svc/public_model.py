"""The public view of a registered model: what users need to choose one, without replica addresses or task queues."""

from llmorch.internal.v1 import registry_pb2
from llmorch.v1 import orchestrator_pb2, types_pb2


def public_model(model: registry_pb2.RegisteredModel) -> orchestrator_pb2.Model:
    """Copy field by field: a field added to the internal view stays internal until it is added here on purpose."""
    metadata = model.metadata
    return orchestrator_pb2.Model(
        model_id=metadata.model_id,
        model_name=metadata.model_name,
        model_type=metadata.model_type,
        priority=metadata.priority,
        is_default=metadata.default_flag,
        context_limit=metadata.context_limit,
        hardware_type=metadata.hardware_type,
        health=model.health,
        in_flight=model.in_flight,
        capacity=model.capacity,
        queue_depth=model.queue_backlog,
        serving_replicas=sum(r.health == types_pb2.HEALTH_STATE_SERVING for r in model.replicas),
    )
