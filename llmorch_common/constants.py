"""Ports, task-queue names and other constants, kept in one place so no service hard-codes another's."""

ORCHESTRATOR_PORT = 50051
# The API's internal listener: RegistryService, for the platform's own components only (never behind Envoy).
ORCHESTRATOR_INTERNAL_PORT = 50050  # API replica i of a fixed-port local stack: 50050 - i
# The OpenAI-compatible HTTP facade, served by the API process beside its gRPC port; Envoy routes /v1/ to it.
ORCHESTRATOR_HTTP_PORT = 50080
MODEL_BASE_PORT = 50061
EMBED_PORT = 50071
ENVOY_PORT = 8080
ENVOY_ADMIN_PORT = 9901
TEMPORAL_PORT = 7233
TEMPORAL_UI_PORT = 8233
TEMPORAL_HTTP_PORT = 7243
TEMPORAL_METRICS_PORT = 7235

ORCHESTRATOR_METRICS_PORT = 9100
ORCHESTRATOR_WORKER_METRICS_PORT = 9101
ORCHESTRATOR_WORKER_SDK_METRICS_PORT = 9102
ORCHESTRATOR_API_SDK_METRICS_PORT = 9103
MODEL_BASE_METRICS_PORT = 9110
EMBED_METRICS_PORT = 9120

TEMPORAL_NAMESPACE = "default"
# grpc.health.v1 service names of the API: readiness follows its dependencies (Temporal), liveness only the process,
# so a Temporal outage takes replicas out of the load balancer without restarting them all.
READINESS_SERVICE = "llmorch.readiness"
LIVENESS_SERVICE = "llmorch.liveness"
# Where a local stack's Temporal frontend listens; containers override it through their settings.
TEMPORAL_ADDRESS = f"localhost:{TEMPORAL_PORT}"
ORCHESTRATOR_TASK_QUEUE = "orchestrator"
LLM_QUEUE_FAMILY = "llm"
EMBEDDING_QUEUE_FAMILY = "embedding"

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
SECOND_MODEL_ID = "gemma3-270m"
EMBEDDING_MODEL_ID = "minilm-l6-v2"


def llm_task_queue(model_id: str) -> str:
    """Each model gets its own queue so that the queue itself selects the model."""
    return f"{LLM_QUEUE_FAMILY}.{model_id}"


def embedding_task_queue(model_id: str) -> str:
    """Embedding models get their own queue family so LLM workers never poll embedding work."""
    return f"{EMBEDDING_QUEUE_FAMILY}.{model_id}"
