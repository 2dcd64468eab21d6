"""RAG end to end: real embedding service, real LanceDB, durable ingestion and grounded generation."""

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from helpers import (
    Orchestrator,
    embed_process,
    eventually,
    fake_replica,
    orchestrator_settings,
    record_history,
    start_orchestrator,
    stop_orchestrator,
    worker_process,
)
from llmorch.v1 import orchestrator_pb2, retrieval_pb2, types_pb2
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from llmorch_client.client import OrchestratorClient
from llmorch_client.corpus import DEMO_COLLECTION, python_reference
from llmorch_client.documents import read_document
from llmorch_client.ingest_files import IngestState, content_hash, ingest_paths
from llmorch_common.validation import MAX_EMBED_TEXT_CHARS, MAX_EMBED_TEXTS
from orchestrator_svc.retrieval.chunking import chunk_document
from orchestrator_svc.retrieval.embedding_client import BATCH
from tools.rag_eval import DATA, HTML_ROOT, PUBLIC_QUESTIONS, evaluate, load_questions
from tools.stack import Child, free_port

pytestmark = pytest.mark.slow

# Small pages of the Python 3.11 HTML documentation (Debian's python3.11-doc, which `make test` installs).
HTML_PAGES = ("library/bisect.html", "library/heapq.html", "library/glob.html", "library/fnmatch.html")
DOCUMENTS = {
    "rockets": "Rockets carry spacecraft into orbit. A launch vehicle burns propellant to escape gravity.",
    "cats": "Cats are small carnivorous mammals. They purr, sleep most of the day and chase mice.",
    "bread": "Bread is baked from flour, water and yeast. The dough rises before it goes into the oven.",
}


@pytest.fixture(scope="module")
async def rag_stack(
    temporal_client: Client, temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Orchestrator, Child]]:
    tmp = tmp_path_factory.mktemp("rag")
    internal_port = free_port()
    embed = embed_process(temporal_address, internal_port, tmp)
    settings = orchestrator_settings(
        tmp, internal_port=internal_port, vector_store="lancedb", embedding_address=f"localhost:{embed.port}"
    )
    orchestrator = await start_orchestrator(temporal_client, settings)
    await embed.start(timeout_s=120)
    replica = fake_replica("rag-fake", temporal_address, orchestrator.internal_address, default_flag=True)
    await replica.start()

    async def both_registered() -> bool:
        listing = await orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
        return {m.model_id for m in listing.models} == {"rag-fake", "minilm-l6-v2"}

    await eventually(both_registered, timeout_s=20)
    yield orchestrator, embed
    await replica.drain()
    await embed.terminate()
    await stop_orchestrator(orchestrator)


async def ingest_and_wait(
    orchestrator: Orchestrator, collection: str, documents: dict[str, str], timeout_s: float = 120
) -> retrieval_pb2.GetIngestionResponse:
    started = await orchestrator.retrieval.Ingest(
        retrieval_pb2.IngestRequest(
            collection=collection,
            documents=[retrieval_pb2.Document(id=k, text=v, metadata={"topic": k}) for k, v in documents.items()],
        )
    )

    async def finished() -> retrieval_pb2.GetIngestionResponse | None:
        progress = await orchestrator.retrieval.GetIngestion(
            retrieval_pb2.GetIngestionRequest(ingestion_id=started.ingestion_id)
        )
        assert progress.state != retrieval_pb2.INGESTION_STATE_FAILED, progress.error
        return progress if progress.state == retrieval_pb2.INGESTION_STATE_COMPLETED else None

    result: retrieval_pb2.GetIngestionResponse = await eventually(finished, timeout_s=timeout_s, interval_s=0.2)
    return result


async def collection_info(orchestrator: Orchestrator, name: str) -> retrieval_pb2.Collection:
    listing: retrieval_pb2.ListCollectionsResponse = await orchestrator.retrieval.ListCollections(
        retrieval_pb2.ListCollectionsRequest()
    )
    return next(c for c in listing.collections if c.name == name)


async def test_ingest_query_and_reingest_replaces(rag_stack: tuple[Orchestrator, Child]) -> None:
    orchestrator, _ = rag_stack
    await orchestrator.retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name="facts"))
    progress = await ingest_and_wait(orchestrator, "facts", DOCUMENTS)
    assert (progress.documents_total, progress.documents_done, progress.chunks_done) == (3, 3, 3)

    hits = await orchestrator.retrieval.Query(
        retrieval_pb2.QueryRequest(collection="facts", text="How do spacecraft reach orbit?", top_k=2)
    )
    assert hits.chunks[0].document_id == "rockets"
    assert hits.chunks[0].score > hits.chunks[1].score
    assert hits.chunks[0].metadata["topic"] == "rockets"

    await ingest_and_wait(orchestrator, "facts", {"rockets": "Rockets were invented in China as fire arrows."})
    info = await collection_info(orchestrator, "facts")
    assert (info.document_count, info.chunk_count) == (3, 3), "re-ingesting a document replaces it"
    hits = await orchestrator.retrieval.Query(retrieval_pb2.QueryRequest(collection="facts", text="fire arrows"))
    assert hits.chunks[0].text == "Rockets were invented in China as fire arrows."
    for mode in (retrieval_pb2.RETRIEVAL_MODE_KEYWORD, retrieval_pb2.RETRIEVAL_MODE_HYBRID):
        request = retrieval_pb2.QueryRequest(collection="facts", text="Who invented fire arrows?", mode=mode)
        hits = await orchestrator.retrieval.Query(request)
        assert hits.chunks[0].document_id == "rockets", mode
    keyword = retrieval_pb2.QueryRequest(collection="facts", text="oven", mode=retrieval_pb2.RETRIEVAL_MODE_KEYWORD)
    assert [h.document_id for h in (await orchestrator.retrieval.Query(keyword)).chunks] == ["bread"]


async def test_public_embed_batches_through_the_embedding_service(
    rag_stack: tuple[Orchestrator, Child],
) -> None:
    orchestrator, _ = rag_stack
    texts = [f"sentence number {i} about {topic}" for i, topic in enumerate(["rockets", "cats", "bread"] * 14)]
    assert len(texts) > BATCH  # crosses the client's batch boundary, so order across batches is checked too
    async with OrchestratorClient(orchestrator.address, orchestrator.api_key) as client:
        batched = await client.embed(texts)
        single = await client.embed([texts[-1]])
    assert batched.model_id == "minilm-l6-v2" and len(batched.embeddings) == len(texts)
    last, alone = batched.embeddings[-1], single.embeddings[0]
    assert sum(a * b for a, b in zip(last.values, alone.values, strict=True)) > 0.999
    assert last.token_count == alone.token_count > 2


@pytest.mark.parametrize(
    ("texts", "field"),
    [([], "texts"), (["x"] * (MAX_EMBED_TEXTS + 1), "texts"), (["ok", "y" * (MAX_EMBED_TEXT_CHARS + 1)], "texts[1]")],
)
async def test_public_embed_rejects_bad_input_with_field_violations(
    rag_stack: tuple[Orchestrator, Child], texts: list[str], field: str
) -> None:
    orchestrator, _ = rag_stack
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await orchestrator.stub.Embed(orchestrator_pb2.EmbedRequest(texts=texts), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error.value)
    assert status is not None
    fields = set()
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields |= {v.field for v in bad_request.field_violations}
    assert fields == {field}


async def test_generate_with_rag_cites_retrieved_chunks(
    rag_stack: tuple[Orchestrator, Child], temporal_client: Client
) -> None:
    orchestrator, _ = rag_stack
    await orchestrator.retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name="kitchen"))
    await ingest_and_wait(orchestrator, "kitchen", DOCUMENTS)
    question = "What makes dough rise?"
    reply = await orchestrator.stub.Generate(
        orchestrator_pb2.GenerateRequest(
            messages=[types_pb2.ChatMessage(role="user", content=question)],
            rag=types_pb2.RagOptions(collection="kitchen", top_k=2),
            sampling=types_pb2.SamplingParams(max_tokens=4),
        ),
        timeout=60,
    )
    citations = reply.provenance.citations
    assert citations[0].source == "bread" and citations[0].heading_path == "", "no headings, no path"
    assert len(citations) == 2 and citations[0].chunk_id == "bread#0"
    assert reply.provenance.usage.prompt_tokens > len(question.split()) + 20, "the prompt carries the context"

    history = await temporal_client.get_workflow_handle(reply.provenance.workflow_id).fetch_history()
    record_history(history, "inference_rag")
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert [(a.activity_type.name, a.task_queue.name) for a in scheduled] == [
        ("embed", "embedding.minilm-l6-v2"),
        ("generate", "llm.rag-fake"),
    ]


async def expect_code(call: object, code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call  # type: ignore[misc]
    assert error.value.code() == code, error.value.details()


async def test_bad_retrieval_input_gets_precise_codes(rag_stack: tuple[Orchestrator, Child]) -> None:
    orchestrator, _ = rag_stack
    retrieval = orchestrator.retrieval
    await retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name="strict"))
    bad = grpc.StatusCode
    await expect_code(
        retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name="strict")), bad.ALREADY_EXISTS
    )
    await expect_code(
        retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name="Bad Name")), bad.INVALID_ARGUMENT
    )
    empty = retrieval_pb2.Document(id="e", text="   ")
    await expect_code(
        retrieval.Ingest(retrieval_pb2.IngestRequest(collection="strict", documents=[empty])), bad.INVALID_ARGUMENT
    )
    huge = retrieval_pb2.Document(id="h", text="x" * 2_000_001)
    await expect_code(
        retrieval.Ingest(retrieval_pb2.IngestRequest(collection="strict", documents=[huge])), bad.INVALID_ARGUMENT
    )
    fine = retrieval_pb2.Document(id="f", text="fine")
    await expect_code(retrieval.Ingest(retrieval_pb2.IngestRequest(collection="nope", documents=[fine])), bad.NOT_FOUND)
    await expect_code(retrieval.Query(retrieval_pb2.QueryRequest(collection="nope", text="x")), bad.NOT_FOUND)
    await expect_code(
        retrieval.Query(retrieval_pb2.QueryRequest(collection="strict", text="x", top_k=51)), bad.INVALID_ARGUMENT
    )
    await expect_code(
        retrieval.Query(retrieval_pb2.QueryRequest(collection="strict", text="x", top_k=-1)), bad.INVALID_ARGUMENT
    )
    await expect_code(
        retrieval.Query(retrieval_pb2.QueryRequest(collection="strict", text="x", mode=99)),  # type: ignore[arg-type]
        bad.INVALID_ARGUMENT,
    )
    unknown_chunking = retrieval_pb2.IngestRequest(collection="strict", documents=[fine], chunking=99)  # type: ignore[arg-type]
    await expect_code(retrieval.Ingest(unknown_chunking), bad.INVALID_ARGUMENT)
    await expect_code(
        retrieval.GetIngestion(retrieval_pb2.GetIngestionRequest(ingestion_id="ingest-none")), bad.NOT_FOUND
    )
    await expect_code(retrieval.DeleteCollection(retrieval_pb2.DeleteCollectionRequest(name="nope")), bad.NOT_FOUND)
    unknown = orchestrator_pb2.GenerateRequest(prompt="hi", rag=types_pb2.RagOptions(collection="nope"))
    await expect_code(orchestrator.stub.Generate(unknown), bad.NOT_FOUND)
    not_an_llm = orchestrator_pb2.GenerateRequest(prompt="hi", model_id="minilm-l6-v2")
    await expect_code(orchestrator.stub.Generate(not_an_llm), bad.NOT_FOUND)


def html_documents(pages: tuple[str, ...] = HTML_PAGES) -> list[retrieval_pb2.Document]:
    read = [read_document(HTML_ROOT / page, HTML_ROOT) for page in pages]
    return [retrieval_pb2.Document(id=d.document_id, text=d.text, metadata=d.metadata) for d in read]


def expected_chunks(documents: list[retrieval_pb2.Document]) -> int:
    return sum(len(chunk_document(d.id, d.text)) for d in documents)


async def test_ingestion_survives_a_worker_kill_without_duplicates(
    temporal_client: Client, temporal_address: str, rag_stack: tuple[Orchestrator, Child], tmp_path: Path
) -> None:
    _, embed = rag_stack
    settings = orchestrator_settings(tmp_path, vector_store="lancedb", embedding_address=f"localhost:{embed.port}")
    orchestrator = await start_orchestrator(temporal_client, settings, with_worker=False)
    worker = await worker_process(orchestrator.settings, temporal_address, tmp_path).start()
    documents = html_documents()
    try:
        await orchestrator.retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name="pyref"))
        started = await orchestrator.retrieval.Ingest(
            retrieval_pb2.IngestRequest(collection="pyref", documents=documents)
        )

        async def some_done() -> bool:
            progress: retrieval_pb2.GetIngestionResponse = await orchestrator.retrieval.GetIngestion(
                retrieval_pb2.GetIngestionRequest(ingestion_id=started.ingestion_id)
            )
            return 1 <= progress.documents_done < len(documents)

        await eventually(some_done, timeout_s=120, interval_s=0.1)
        worker.kill()
        worker = await worker_process(orchestrator.settings, temporal_address, tmp_path).start()

        async def complete() -> bool:
            progress: retrieval_pb2.GetIngestionResponse = await orchestrator.retrieval.GetIngestion(
                retrieval_pb2.GetIngestionRequest(ingestion_id=started.ingestion_id)
            )
            return progress.state == retrieval_pb2.INGESTION_STATE_COMPLETED

        await eventually(complete, timeout_s=180, interval_s=0.2)
        history = await temporal_client.get_workflow_handle(started.ingestion_id).fetch_history()
        record_history(history, "ingestion_worker_killed")
        info = await collection_info(orchestrator, "pyref")
        assert (info.document_count, info.chunk_count) == (len(documents), expected_chunks(documents))
    finally:
        await worker.terminate()
        await stop_orchestrator(orchestrator)


async def test_cli_ingestion_resumes_skips_unchanged_files_and_answers_with_the_right_page(
    rag_stack: tuple[Orchestrator, Child], tmp_path: Path
) -> None:
    orchestrator, _ = rag_stack
    docs = tmp_path / "html"
    for page in HTML_PAGES[:3]:
        (docs / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(HTML_ROOT / page, docs / page)
    state_path = tmp_path / "state.json"
    async with OrchestratorClient(orchestrator.address, orchestrator.api_key) as client:
        await client.ensure_collection("pages")
        # An earlier run that died after starting its ingestion: the workflow ran on, the state says pending.
        first = html_documents(HTML_PAGES[:1])
        state = IngestState(
            state_path, pending={await client.start_ingestion("pages", first): {d.id: content_hash(d) for d in first}}
        )
        state.save()
        resumed = await ingest_paths(client, "pages", [docs], state_path, show_progress=False)
        assert (resumed.documents_sent, resumed.documents_unchanged) == (2, 1), "the pending page was not resent"
        again = await ingest_paths(client, "pages", [docs], state_path, show_progress=False)
        assert (again.documents_sent, again.documents_unchanged, again.chunks) == (0, 3, 0)
        changed = docs / HTML_PAGES[2]
        changed.write_text(changed.read_text().replace("</h1>", "</h1><p>Globbing is pattern expansion.</p>", 1))
        edited = await ingest_paths(client, "pages", [docs], state_path, show_progress=False)
        assert (edited.documents_sent, edited.documents_unchanged) == (1, 2)
        stored = [read_document(docs / page, docs) for page in HTML_PAGES[:3]]
        info = await collection_info(orchestrator, "pages")
        assert (info.document_count, info.chunk_count) == (
            3,
            sum(len(chunk_document(d.document_id, d.text)) for d in stored),
        )
        reply = await orchestrator.stub.Generate(
            orchestrator_pb2.GenerateRequest(
                prompt="How do I insert into a sorted list and keep it sorted?",
                rag=types_pb2.RagOptions(collection="pages", top_k=3),
                sampling=types_pb2.SamplingParams(max_tokens=4),
            ),
            timeout=60,
        )
    citation = reply.provenance.citations[0]
    assert citation.source == "library/bisect.html"
    assert citation.heading_path.startswith("bisect — Array bisection algorithm")
    assert citation.text.startswith(citation.heading_path + "\n\n")


async def test_recall_at_5_on_the_demo_corpus_through_the_public_api(
    rag_stack: tuple[Orchestrator, Child],
) -> None:
    """The default mode, through the public Query API: the public 20 and the frozen held-out pydoc questions."""
    orchestrator, _ = rag_stack
    async with OrchestratorClient(orchestrator.address, orchestrator.api_key) as client:
        await client.ensure_collection(DEMO_COLLECTION)
        chunks = await client.ingest(DEMO_COLLECTION, python_reference())
        public = await evaluate(client, DEMO_COLLECTION, load_questions(PUBLIC_QUESTIONS))
        heldout = await evaluate(client, DEMO_COLLECTION, load_questions(DATA / "heldout_pydoc.jsonl"))
    assert chunks == sum(len(chunk_document(k, v)) for k, v in python_reference().items())
    assert public.recall_at_5 >= 19 / 20, public.misses
    assert heldout.recall_at_5 >= 0.95, heldout.misses
