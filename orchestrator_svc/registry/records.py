"""The registry's domain records: what a replica declares when it registers, and the live view of a model."""

from dataclasses import dataclass
from enum import StrEnum


class ModelType(StrEnum):
    LLM = "llm"
    EMBEDDING = "embedding"


class Hardware(StrEnum):
    CPU = "cpu"
    GPU = "gpu"


class Health(StrEnum):
    UNKNOWN = "unknown"  # no report yet: the router treats it as unhealthy
    SERVING = "serving"
    NOT_SERVING = "not_serving"


@dataclass(frozen=True)
class ModelMetadata:
    """One replica's registration, as its container declares it."""

    model_id: str
    model_name: str
    model_type: ModelType
    priority: int
    default_flag: bool
    max_concurrency: int
    context_limit: int
    hardware: Hardware
    endpoint: str
    task_queue: str
    model_digest: str = ""  # identifies the weights; older registrations stored without it read as ""


@dataclass(frozen=True)
class ReplicaView:
    endpoint: str
    health: Health
    in_flight: int


@dataclass(frozen=True)
class RegisteredModel:
    """A model with every replica that registered it, and its live health and load."""

    metadata: ModelMetadata  # of the newest registration
    registration_order: int  # of the first registration: rule 4 of the router
    health: Health
    in_flight: int  # over serving replicas
    capacity: int  # max_concurrency summed over serving replicas
    replicas: tuple[ReplicaView, ...]
    queue_backlog: int = 0  # tasks waiting on the model's queue, where Temporal reports it

    @property
    def serving_replicas(self) -> int:
        return sum(replica.health == Health.SERVING for replica in self.replicas)
