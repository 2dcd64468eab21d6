"""Public GenerateRequest → validated InferenceRequest: the one conversion both transports (gRPC, OpenAI HTTP) use."""

import hashlib
import uuid

from llmorch.v1 import orchestrator_pb2

from llmorch_common.errors import FieldViolation, invalid_argument
from llmorch_common.validation import (
    REQUEST_ID_PATTERN,
    embed_violations,
    generation_violations,
    resolve_sampling,
    to_turns,
)
from orchestrator_svc.identity.keys import Principal, PriorityClass
from orchestrator_svc.inference.contracts import CONTINUE, RESTART
from orchestrator_svc.inference.service import InferenceRequest
from orchestrator_svc.retrieval.vectorstore.base import resolve_top_k, top_k_violations

REQUEST_ID_RULE = "1 to 128 characters of [A-Za-z0-9._:-]"
FALLBACK_POLICIES = {
    orchestrator_pb2.FALLBACK_POLICY_UNSPECIFIED: CONTINUE,
    orchestrator_pb2.FALLBACK_POLICY_CONTINUE: CONTINUE,
    orchestrator_pb2.FALLBACK_POLICY_RESTART: RESTART,
}
PRIORITY_CLASSES = {
    orchestrator_pb2.PRIORITY_CLASS_UNSPECIFIED: None,
    orchestrator_pb2.PRIORITY_CLASS_INTERACTIVE: PriorityClass.INTERACTIVE,
    orchestrator_pb2.PRIORITY_CLASS_BATCH: PriorityClass.BATCH,
}
DISCONNECT_POLICIES = {
    orchestrator_pb2.DISCONNECT_POLICY_UNSPECIFIED: False,
    orchestrator_pb2.DISCONNECT_POLICY_KEEP_RUNNING: False,
    orchestrator_pb2.DISCONNECT_POLICY_CANCEL: True,
}


def request_digest(request: orchestrator_pb2.GenerateRequest) -> str:
    """What makes two requests "the same" for idempotency: everything but the id and what a disconnect does (a
    property of the connection), deterministically serialised."""
    content = orchestrator_pb2.GenerateRequest()
    content.CopyFrom(request)
    content.request_id = ""
    content.on_disconnect = orchestrator_pb2.DISCONNECT_POLICY_UNSPECIFIED
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()


def request_from_proto(request: orchestrator_pb2.GenerateRequest, caller: Principal) -> InferenceRequest:
    """`caller` is who the API key speaks for: the tenant, its class, weight and limits."""
    violations = generation_violations(list(request.messages), request.prompt, request.sampling)
    if request.request_id and not REQUEST_ID_PATTERN.match(request.request_id):
        violations.append(FieldViolation("request_id", REQUEST_ID_RULE))
    top_k = resolve_top_k(request.rag.top_k)
    if request.rag.collection:
        violations += top_k_violations(top_k, "rag.top_k")
    if request.fallback not in FALLBACK_POLICIES:
        violations.append(FieldViolation("fallback", "must be a FallbackPolicy value"))
    if request.on_disconnect not in DISCONNECT_POLICIES:
        violations.append(FieldViolation("on_disconnect", "must be a DisconnectPolicy value"))
    if request.priority_class not in PRIORITY_CLASSES:
        violations.append(FieldViolation("priority_class", "must be a PriorityClass value"))
    if violations:
        raise invalid_argument(violations)
    return InferenceRequest(
        request_id=request.request_id or uuid.uuid4().hex,
        caller=caller,
        messages=to_turns(list(request.messages)),
        prompt=request.prompt,
        sampling=resolve_sampling(request.sampling),
        model_id=request.model_id,
        rag_collection=request.rag.collection,
        rag_top_k=top_k,
        digest=request_digest(request),
        on_fallback=FALLBACK_POLICIES[request.fallback],
        cancel_on_disconnect=DISCONNECT_POLICIES[request.on_disconnect],
        priority_class=PRIORITY_CLASSES[request.priority_class],
    )


def check_request_id(request_id: str) -> None:
    if not REQUEST_ID_PATTERN.match(request_id):
        raise invalid_argument([FieldViolation("request_id", REQUEST_ID_RULE)])


def check_embed(texts: list[str]) -> None:
    violations = embed_violations(texts)
    if violations:
        raise invalid_argument(violations)
