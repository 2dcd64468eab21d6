"""OrchestratorService transport: protos to domain values and back; the rules live in InferenceService."""

import contextlib
from collections.abc import AsyncIterator

import grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from llmorch_common.finish_reason import finish_reason_to_proto
from llmorch_common.grpc_edge import stream_edge, unary_edge
from orchestrator_svc.identity.caller import caller
from orchestrator_svc.inference.contracts import InferenceResult
from orchestrator_svc.inference.requests import check_embed, check_request_id, request_from_proto
from orchestrator_svc.inference.service import (
    Delta,
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

SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
REQUEST_STATES = {
    RequestState.RUNNING: orchestrator_pb2.REQUEST_STATUS_RUNNING,
    RequestState.COMPLETED: orchestrator_pb2.REQUEST_STATUS_COMPLETED,
    RequestState.FAILED: orchestrator_pb2.REQUEST_STATUS_FAILED,
    RequestState.CANCELLED: orchestrator_pb2.REQUEST_STATUS_CANCELLED,
}


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
                types_pb2.Citation(
                    chunk_id=c.chunk_id, source=c.source, score=c.score, text=c.text, heading_path=c.heading_path
                )
                for c in result.citations
            ],
            workflow_id=result.workflow_id,
            run_id=result.run_id,
            priority_class=result.priority_class,
            cache=result.cache,
            trace_id=result.trace_id,
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
        check_embed(texts)
        embedded = await self._service.embed(texts)
        return orchestrator_pb2.EmbedResponse(
            model_id=embedded.model_id,
            embeddings=[
                orchestrator_pb2.Embedding(values=vector, token_count=count)
                for vector, count in zip(embedded.vectors, embedded.token_counts, strict=True)
            ],
        )


def register(server: grpc.aio.Server, servicer: OrchestratorServicer) -> list[str]:
    orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]
