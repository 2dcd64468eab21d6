"""ModelService transport: protobuf in, engine pool, protobuf out; errors leave through the gRPC edge."""

from collections.abc import AsyncIterator
from contextlib import aclosing

import grpc
from llmorch.internal.v1 import metadata_pb2, model_pb2, model_pb2_grpc
from llmorch.v1 import types_pb2
from prometheus_client import Counter, Gauge, Histogram

from llmorch_common.errors import FieldViolation, invalid_argument, unavailable
from llmorch_common.finish_reason import finish_reason_to_proto
from llmorch_common.grpc_edge import stream_edge, unary_edge
from llmorch_common.tracing import annotate
from llmorch_common.validation import MAX_PROMPT_CHARS, check_generation, resolve_sampling, to_turns
from model_svc.engine import EnginePool, GenerationRequest, GenerationResult, Piece

# Buckets span a fake engine's milliseconds to a CPU model's minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TIME_TO_FIRST_TOKEN = Histogram(
    "llmorch_model_time_to_first_token_seconds", "Model time to first token", ["model_id"], buckets=LATENCY_BUCKETS
)
GENERATION_TIME = Histogram(
    "llmorch_model_generation_seconds", "Model generation time, total", ["model_id"], buckets=LATENCY_BUCKETS
)
IN_FLIGHT = Gauge("llmorch_model_in_flight", "Generations running on this replica", ["model_id"])
GENERATED_TOKENS = Counter(
    "llmorch_model_generated_tokens", "Tokens this replica generated itself (resumed tokens not counted)", ["model_id"]
)
RESUMED_TOKENS = Counter(
    "llmorch_model_resumed_tokens", "Tokens replayed to resume a generation another attempt started", ["model_id"]
)

# Decode speed per generation: a fake engine's thousands to a CPU model's handful.
TOKENS_PER_SECOND = Histogram(
    "llmorch_model_tokens_per_second",
    "Tokens per second of one generation, from request to last token",
    ["model_id"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)

SERVICE_NAME = model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name


class ModelServicer(model_pb2_grpc.ModelServiceServicer):
    def __init__(self, metadata: metadata_pb2.ModelMetadata) -> None:
        self.metadata = metadata
        self.pool: EnginePool | None = None  # set once the weights are loaded
        self.draining = False

    @property
    def in_flight(self) -> int:
        return self.pool.in_flight if self.pool else 0

    def _request(self, request: model_pb2.GenerateRequest) -> tuple[EnginePool, GenerationRequest]:
        check_generation(list(request.messages), request.prompt, request.sampling)
        if self.pool is None or self.draining:
            raise unavailable(f"model {self.metadata.model_id} is {'draining' if self.draining else 'loading'}")
        sampling = resolve_sampling(request.sampling)
        violations = []
        if len(request.resume_token_ids) >= sampling.max_tokens:
            violations.append(FieldViolation("generation.resume_token_ids", "must be fewer than sampling.max_tokens"))
        if len(request.assistant_prefix) > MAX_PROMPT_CHARS:
            violations.append(FieldViolation("generation.assistant_prefix", f"at most {MAX_PROMPT_CHARS} characters"))
        if violations:
            raise invalid_argument(violations)
        generation = GenerationRequest(
            to_turns(list(request.messages)),
            request.prompt,
            sampling,
            resume_token_ids=tuple(request.resume_token_ids),
            assistant_prefix=request.assistant_prefix,
        )
        return self.pool, generation

    def _response(self, result: GenerationResult) -> model_pb2.GenerateResponse:
        TIME_TO_FIRST_TOKEN.labels(self.metadata.model_id).observe(result.time_to_first_token_ms / 1000)
        GENERATION_TIME.labels(self.metadata.model_id).observe(result.generation_ms / 1000)
        GENERATED_TOKENS.labels(self.metadata.model_id).inc(result.completion_tokens)
        RESUMED_TOKENS.labels(self.metadata.model_id).inc(result.resumed_tokens)
        if result.generation_ms > 0 and result.completion_tokens:
            rate = result.completion_tokens / (result.generation_ms / 1000)
            TOKENS_PER_SECOND.labels(self.metadata.model_id).observe(rate)
        annotate(
            model_id=self.metadata.model_id,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            resumed_tokens=result.resumed_tokens,
        )
        return model_pb2.GenerateResponse(
            text=result.text,
            finish_reason=finish_reason_to_proto(result.finish_reason),
            usage=types_pb2.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
            time_to_first_token_ms=result.time_to_first_token_ms,
            generation_ms=result.generation_ms,
            model_id=self.metadata.model_id,
            resumed_tokens=result.resumed_tokens,
        )

    @unary_edge
    async def Generate(
        self, request: model_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> model_pb2.GenerateResponse:
        pool, generation = self._request(request)
        return self._response(await pool.generate(generation))

    @stream_edge
    async def GenerateStream(
        self, request: model_pb2.GenerateStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[model_pb2.GenerateStreamResponse]:
        pool, generation = self._request(request.generation)
        # aclosing: when the client goes away, the generation stops and its context is freed at once.
        async with aclosing(pool.stream(generation)) as items:
            async for item in items:
                if isinstance(item, Piece):
                    yield model_pb2.GenerateStreamResponse(delta=item.text, token_ids=item.token_ids)
                else:
                    yield model_pb2.GenerateStreamResponse(final=self._response(item))

    @unary_edge
    async def GetModelInfo(
        self, request: model_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> model_pb2.GetModelInfoResponse:
        ready = self.pool is not None and not self.draining
        return model_pb2.GetModelInfoResponse(metadata=self.metadata, in_flight=self.in_flight, ready=ready)


def register(server: grpc.aio.Server, servicer: ModelServicer) -> list[str]:
    model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]
