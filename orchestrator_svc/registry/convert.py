"""Registry records to and from their protos, for the servicers and for a worker that reads the registry over gRPC."""

from llmorch.internal.v1 import metadata_pb2, registry_pb2
from llmorch.v1 import types_pb2

from llmorch_common.errors import FieldViolation, invalid_argument
from orchestrator_svc.registry.records import (
    Hardware,
    Health,
    ModelMetadata,
    ModelType,
    RegisteredModel,
    ReplicaView,
)

MODEL_TYPES = {types_pb2.MODEL_TYPE_LLM: ModelType.LLM, types_pb2.MODEL_TYPE_EMBEDDING: ModelType.EMBEDDING}
HARDWARE = {types_pb2.HARDWARE_TYPE_GPU: Hardware.GPU}  # UNSPECIFIED and CPU both mean CPU
HEALTH = {
    Health.UNKNOWN: types_pb2.HEALTH_STATE_UNSPECIFIED,
    Health.SERVING: types_pb2.HEALTH_STATE_SERVING,
    Health.NOT_SERVING: types_pb2.HEALTH_STATE_NOT_SERVING,
}


def metadata_violations(metadata: metadata_pb2.ModelMetadata) -> list[FieldViolation]:
    violations = []

    def bad(name: str, description: str) -> None:
        violations.append(FieldViolation(f"metadata.{name}", description))

    if not metadata.model_id.strip():
        bad("model_id", "required")
    if metadata.model_type not in MODEL_TYPES:
        bad("model_type", "must be MODEL_TYPE_LLM or MODEL_TYPE_EMBEDDING")
    if metadata.max_concurrency < 1:
        bad("max_concurrency", "must be at least 1")
    if metadata.context_limit < 1:
        bad("context_limit", "must be at least 1")
    if not metadata.endpoint.strip():
        bad("endpoint", "required (host:port)")
    return violations


def metadata_from_proto(metadata: metadata_pb2.ModelMetadata) -> ModelMetadata:
    violations = metadata_violations(metadata)
    if violations:
        raise invalid_argument(violations)
    return ModelMetadata(
        model_id=metadata.model_id,
        model_name=metadata.model_name,
        model_type=MODEL_TYPES[metadata.model_type],
        priority=metadata.priority,
        default_flag=metadata.default_flag,
        max_concurrency=metadata.max_concurrency,
        context_limit=metadata.context_limit,
        hardware=HARDWARE.get(metadata.hardware_type, Hardware.CPU),
        endpoint=metadata.endpoint,
        task_queue=metadata.task_queue,
        model_digest=metadata.model_digest,
    )


def model_type_to_proto(model_type: ModelType) -> types_pb2.ModelType.ValueType:
    return next(wire for wire, domain in MODEL_TYPES.items() if domain == model_type)


def model_type_from_proto(model_type: types_pb2.ModelType.ValueType) -> ModelType | None:
    """UNSPECIFIED lists every type."""
    return MODEL_TYPES.get(model_type)


def hardware_to_proto(hardware: Hardware) -> types_pb2.HardwareType.ValueType:
    return types_pb2.HARDWARE_TYPE_GPU if hardware == Hardware.GPU else types_pb2.HARDWARE_TYPE_CPU


def metadata_to_proto(metadata: ModelMetadata) -> metadata_pb2.ModelMetadata:
    return metadata_pb2.ModelMetadata(
        model_id=metadata.model_id,
        model_name=metadata.model_name,
        model_type=model_type_to_proto(metadata.model_type),
        priority=metadata.priority,
        default_flag=metadata.default_flag,
        max_concurrency=metadata.max_concurrency,
        context_limit=metadata.context_limit,
        hardware_type=hardware_to_proto(metadata.hardware),
        endpoint=metadata.endpoint,
        task_queue=metadata.task_queue,
        model_digest=metadata.model_digest,
    )


def registered_to_proto(model: RegisteredModel) -> registry_pb2.RegisteredModel:
    return registry_pb2.RegisteredModel(
        metadata=metadata_to_proto(model.metadata),
        health=HEALTH[model.health],
        in_flight=model.in_flight,
        capacity=model.capacity,
        queue_backlog=model.queue_backlog,
        replicas=[
            registry_pb2.Replica(endpoint=r.endpoint, health=HEALTH[r.health], in_flight=r.in_flight)
            for r in model.replicas
        ],
        registration_order=model.registration_order,
    )


def registered_from_proto(model: registry_pb2.RegisteredModel) -> RegisteredModel:
    """For a worker in its own process, which reads the registry over gRPC."""
    health = {wire: domain for domain, wire in HEALTH.items()}
    return RegisteredModel(
        metadata=metadata_from_proto(model.metadata),
        registration_order=model.registration_order,
        health=health[model.health],
        in_flight=model.in_flight,
        capacity=model.capacity,
        replicas=tuple(ReplicaView(r.endpoint, health[r.health], r.in_flight) for r in model.replicas),
        queue_backlog=model.queue_backlog,
    )
