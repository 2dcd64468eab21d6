"""OrchestratorService transport: protos to domain values and back; the rules live in InferenceService."""

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator

import grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from llmorch_common.errors import FieldViolation, invalid_argument
from llmorch_common.finish_reason import finish_reason_to_proto
from llmorch_common.grpc_edge import stream_edge, unary_edge
from llmorch_common.validation import (
    REQUEST_ID_PATTERN,
    embed_violations,
    generation_violations,
    resolve_sampling,
    to_turns,
)
from orchestrator_svc.identity.caller import caller
from orchestrator_svc.identity.keys import Principal, PriorityClass
from orchestrator_svc.inference.contracts import CONTINUE, RESTART, InferenceResult
from orchestrator_svc.inference.service import (
    Delta,
    InferenceRequest,
    InferenceService,
    RequestState,
    RequestStatus,
    Reset,
    Selected,
    StreamEvent,
)
from orchestrator_svc.registry.convert import model_type_from_proto
from orchestrator_svc.registry.public_model import public_model
from orchestrator_svc.registry.service import Registry
from orchestrator_svc.retrieval.vectorstore.base import resolve_top_k, top_k_violations

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
REQUEST_ID_RULE = "1 to 128 characters of [A-Za-z0-9._:-]"
REQUEST_STATES = {
    RequestState.RUNNING: orchestrator_pb2.REQUEST_STATUS_RUNNING,
    RequestState.COMPLETED: orchestrator_pb2.REQUEST_STATUS_COMPLETED,
    RequestState.FAILED: orchestrator_pb2.REQUEST_STATUS_FAILED,
    RequestState.CANCELLED: orchestrator_pb2.REQUEST_STATUS_CANCELLED,
}


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


def result_to_proto(result: InferenceResult) -> orchestrator_pb2.GenerateResponse:
    return orchestrator_pb2.GenerateResponse(
        request_id=result.request_id,
        text=result.text,
        finish_reason=finish_reason_to_proto(result.finish_reason),
        provenance=types_pb2.Provenance(
            model_id=result.model_id,
            selection_reason=result.selection_reason,
            fallbacks=[types_pb2.Fallback(model_id=f.model_id, reason=f.reason) for f in result.fallbacks],
            usage=types_pb2.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
            timings=types_pb2.Timings(
                queue_wait_ms=result.queue_wait_ms,
                time_to_first_token_ms=result.time_to_first_token_ms,
                generation_ms=result.generation_ms,
                retrieval_ms=result.retrieval_ms,
                total_ms=result.total_ms,
            ),
            citations=[
                types_pb2.Citation(chunk_id=c.chunk_id, source=c.source, score=c.score, text=c.text)
                for c in result.citations
            ],
            workflow_id=result.workflow_id,
            run_id=result.run_id,
            priority_class=result.priority_class,
            parts=[
                types_pb2.GenerationPart(
                    model_id=p.model_id,
                    selection=p.selection,
                    attempts=p.attempts,
                    resumed_at_tokens=p.resumed_at_tokens,
                    generated_tokens=p.generated_tokens,
                    carried_chars=p.carried_chars,
                    chars=p.chars,
                    outcome=p.outcome,
                )
                for p in result.parts
            ],
        ),
    )


def event_to_proto(request_id: str, event: StreamEvent) -> orchestrator_pb2.GenerateStreamResponse:
    reply = orchestrator_pb2.GenerateStreamResponse(request_id=request_id)
    if isinstance(event, Selected):
        reply.selected.CopyFrom(
            orchestrator_pb2.ModelSelected(model_id=event.model_id, reason=event.reason, attempt=event.attempt)
        )
    elif isinstance(event, Delta):
        reply.delta = event.text
    elif isinstance(event, Reset):
        reply.reset.CopyFrom(orchestrator_pb2.StreamReset(reason=event.reason))
    else:
        reply.completed.CopyFrom(result_to_proto(event.result))
    return reply


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, service: InferenceService, registry: Registry) -> None:
        self._service = service
        self._registry = registry

    @unary_edge
    async def Generate(
        self, request: orchestrator_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.GenerateResponse:
        with self._service.admitted():
            return result_to_proto(await self._service.generate(request_from_proto(request, caller())))

    @stream_edge
    async def GenerateStream(
        self, request: orchestrator_pb2.GenerateStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orchestrator_pb2.GenerateStreamResponse]:
        with self._service.admitted():
            inference = request_from_proto(request.request, caller())
            async with contextlib.aclosing(self._service.stream(inference)) as events:
                async for event in events:
                    yield event_to_proto(inference.request_id, event)

    @unary_edge
    async def GetRequest(
        self, request: orchestrator_pb2.GetRequestRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.GetRequestResponse:
        check_request_id(request.request_id)
        status = await self._service.status(caller().tenant, request.request_id)
        reply = orchestrator_pb2.GetRequestResponse(request_id=request.request_id, status=REQUEST_STATES[status.state])
        if status.result:
            reply.result.CopyFrom(result_to_proto(status.result))
        if status.error:
            reply.error_code, reply.error_message = status.error.code, status.error.message
        return reply

    @unary_edge
    async def CancelRequest(
        self, request: orchestrator_pb2.CancelRequestRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.CancelRequestResponse:
        check_request_id(request.request_id)
        status: RequestStatus = await self._service.cancel(caller().tenant, request.request_id)
        reply = orchestrator_pb2.CancelRequestResponse(
            request_id=request.request_id, status=REQUEST_STATES[status.state]
        )
        if status.result:
            reply.result.CopyFrom(result_to_proto(status.result))
        return reply

    @unary_edge
    async def ListModels(
        self, request: orchestrator_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.ListModelsResponse:
        models = await self._registry.live_models(model_type_from_proto(request.model_type))
        return orchestrator_pb2.ListModelsResponse(models=[public_model(m) for m in models])

    @unary_edge
    async def Embed(
        self, request: orchestrator_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.EmbedResponse:
        texts = list(request.texts)
        violations = embed_violations(texts)
        if violations:
            raise invalid_argument(violations)
        embedded = await self._service.embed(texts)
        return orchestrator_pb2.EmbedResponse(
            model_id=embedded.model_id,
            embeddings=[
                orchestrator_pb2.Embedding(values=vector, token_count=count)
                for vector, count in zip(embedded.vectors, embedded.token_counts, strict=True)
            ],
        )


def check_request_id(request_id: str) -> None:
    if not REQUEST_ID_PATTERN.match(request_id):
        raise invalid_argument([FieldViolation("request_id", REQUEST_ID_RULE)])


def register(server: grpc.aio.Server, servicer: OrchestratorServicer) -> list[str]:
    orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]
