"""One trace per request across every hop: an OTLP receiver inside the test collects the spans of every process of a
real stack, and one RAG request with a forced fallback, sent through Envoy with the caller's traceparent, must give
one connected tree Envoy → API → workflow → embed → EmbeddingService → retrieve → select → generate → ModelService."""

import json
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from helpers import eventually
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from llmorch_client.client import OrchestratorClient, question_request
from llmorch_common import constants as c
from tools.stack import DEV_TENANT, ModelGroup, Stack, StackConfig

pytestmark = pytest.mark.slow
DOOMED, BACKUP = c.DEFAULT_MODEL_ID, c.SECOND_MODEL_ID
FAST = (("fake_first_token_ms", "5"), ("fake_token_ms", "1"), ("drain_timeout_s", "2"))
# The default model never answers within the generation bound below: its one attempt times out, and the request
# falls back to the other model.
SLOW = (("fake_first_token_ms", "60000"), ("drain_timeout_s", "2"))
GENERATE_TIMEOUT_S = "2"


@dataclass(frozen=True)
class Collected:
    service: str
    span: Span

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return {a.key: _value(a.value) for a in self.span.attributes}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC trace receiver: what every process's exporter (and Envoy's tracer) sends."""

    def __init__(self) -> None:
        self.spans: list[Collected] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            names = [a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"]
            for scope in resource_spans.scope_spans:
                self.spans.extend(Collected(names[0] if names else "", span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: bytes) -> list[Collected]:
        return [s for s in self.spans if s.span.trace_id == trace_id]


@pytest.fixture(scope="module")
async def traced_stack() -> AsyncIterator[tuple[Stack, Collector]]:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    config = StackConfig(
        models=(ModelGroup(DOOMED, "fake", settings=SLOW), ModelGroup(BACKUP, "fake", settings=FAST)),
        orchestrator_env=(("ORCH_GENERATE_TIMEOUT_S", GENERATE_TIMEOUT_S), ("ORCH_GENERATE_ATTEMPTS", "1")),
        otlp_endpoint=f"http://127.0.0.1:{port}",
        otel_env=(("OTEL_BSP_SCHEDULE_DELAY", "200"),),
    )
    try:
        async with Stack(config) as stack:
            yield stack, collector
    finally:
        await server.stop(1)


def ancestry(span: Collected, by_id: dict[bytes, Collected]) -> list[Collected]:
    """The span and its ancestors, root last, as far as the collected spans reach."""
    chain = [span]
    while chain[-1].span.parent_span_id in by_id:
        chain.append(by_id[chain[-1].span.parent_span_id])
    return chain


def in_order(chain: Iterable[Collected], expected: list[str]) -> bool:
    """`expected` (span names, or `service:` prefixes) appear in the root-first chain in this order."""
    remaining = list(expected)
    for span in chain:
        if remaining and (span.name == remaining[0] or f"{span.service}:" == remaining[0]):
            remaining.pop(0)
    return not remaining


SERVER = Span.SpanKind.SPAN_KIND_SERVER


def one(spans: list[Collected], name: str, attributes: dict[str, Any] | None = None, kind: int = SERVER) -> Collected:
    """The one span of this name and kind (a gRPC call has a client and a server span of one name) that has these
    attributes; Temporal's spans are SERVER (Run*) or CLIENT (Start*) kind too."""
    found = [
        s
        for s in spans
        if s.name == name
        and s.span.kind == kind
        and all(s.attributes.get(k) == v for k, v in (attributes or {}).items())
    ]
    assert len(found) == 1, f"one {name} {attributes}, found {len(found)}: {[s.attributes for s in found]}"
    return found[0]


async def test_one_rag_request_with_a_fallback_is_one_trace_through_every_hop(
    traced_stack: tuple[Stack, Collector],
) -> None:
    stack, collector = traced_stack
    trace_id, caller_span = secrets.token_bytes(16), secrets.token_bytes(8)
    traceparent = f"00-{trace_id.hex()}-{caller_span.hex()}-01"
    async with OrchestratorClient(stack.envoy_target, stack.api_key) as client:
        await client.ensure_collection("docs")
        await client.ingest("docs", {"otel": "OpenTelemetry traces follow one request across every service."})
        request = question_request("What do traces follow?", collection="docs", max_tokens=6)
        reply = await client.api.Generate(request, metadata=(("traceparent", traceparent),), timeout=60)

    assert reply.provenance.trace_id == trace_id.hex(), "the caller's trace continues, and provenance names it"
    assert [f.model_id for f in reply.provenance.fallbacks] == [DOOMED]
    assert reply.provenance.model_id == BACKUP and reply.provenance.citations

    async def whole_tree() -> list[Collected]:
        """Each process exports on its own schedule: wait until every span of the request has a collected parent."""
        spans = collector.trace(trace_id)
        by_id = {s.span.span_id: s for s in spans}
        roots = [(s.service, s.span.parent_span_id) for s in spans if s.span.parent_span_id not in by_id]
        assert roots == [("envoy", caller_span)], f"one tree under Envoy's span, roots: {roots}"
        one(spans, "/llmorch.internal.v1.ModelService/GenerateStream", {"llmorch.model_id": BACKUP})
        one(spans, "/llmorch.v1.OrchestratorService/Generate")
        return spans

    spans = await eventually(whole_tree, timeout_s=30, interval_s=0.2)
    by_id = {s.span.span_id: s for s in spans}
    workflow = ["envoy:", "/llmorch.v1.OrchestratorService/Generate", "StartWorkflow:InferenceWorkflow"]
    model = one(spans, "/llmorch.internal.v1.ModelService/GenerateStream", {"llmorch.model_id": BACKUP})
    generate_chain = [*workflow, "StartActivity:generate", "RunActivity:generate", model.name]
    assert in_order(reversed(ancestry(model, by_id)), generate_chain)
    embedding = one(spans, "/llmorch.internal.v1.EmbeddingService/Embed")
    embed_chain = [*workflow, "StartActivity:embed", "RunActivity:embed", embedding.name]
    assert in_order(reversed(ancestry(embedding, by_id)), embed_chain)
    assert model.service == f"model-{BACKUP}" and embedding.service == f"embed-{c.EMBEDDING_MODEL_ID}"

    retrieve = one(spans, "RunActivity:retrieve")
    select = one(spans, "RunActivity:select_model", {"llmorch.attempt": 2})
    generate = one(spans, "RunActivity:generate", {"llmorch.attempt": 2})
    embed = one(spans, "RunActivity:embed")
    assert in_order(reversed(ancestry(select, by_id)), workflow)
    starts = [s.span.start_time_unix_nano for s in (embed, embedding, retrieve, select, generate, model)]
    assert starts == sorted(starts), "embed, EmbeddingService, retrieve, select, generate, ModelService in order"

    assert select.attributes["llmorch.model_id"] == BACKUP and select.attributes["llmorch.selection_reason"]
    assert generate.attributes["llmorch.model_id"] == BACKUP
    assert generate.attributes["llmorch.completion_tokens"] > 0 and model.attributes["llmorch.completion_tokens"] > 0
    api = one(spans, "/llmorch.v1.OrchestratorService/Generate")
    assert api.attributes["llmorch.model_id"] == BACKUP and api.attributes["llmorch.fallbacks"] == 1
    assert api.attributes["llmorch.request_id"] == reply.request_id
    assert api.attributes["llmorch.tenant"] == DEV_TENANT

    logs = [child.log for child in stack.children if child.name in ("api", "worker") and child.log]
    lines = [json.loads(line) for log in logs for line in log.read_text().splitlines() if line.startswith("{")]
    ours = [line for line in lines if line.get("trace_id") == trace_id.hex()]
    assert ours and all(line["workflow_id"] == reply.provenance.workflow_id for line in ours), "logs name the trace"
