"""One behavioural suite run against every vector store, so memory, sqlite, lancedb and postgres stay
interchangeable, full-text search included where the store has it."""

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from llmorch_common.errors import PlatformError
from orchestrator_svc.retrieval.vectorstore import ChunkRecord, VectorStore, open_store
from orchestrator_svc.retrieval.vectorstore.base import (
    RetrievalMode,
    ScoredChunk,
    distinct_documents_first,
    reciprocal_rank_fusion,
    search,
)
from orchestrator_svc.retrieval.vectorstore.lancedb_store import LanceDbStore

DIM = 8


def basis(index: int, dim: int = DIM) -> list[float]:
    vector = [0.0] * dim
    vector[index] = 1.0
    return vector


def chunks(document_id: str, vectors: list[list[float]], tag: str = "v1") -> list[ChunkRecord]:
    return [
        ChunkRecord(f"{document_id}#{i}", f"{document_id} {tag} chunk {i}", vector, {"source": document_id, "tag": tag})
        for i, vector in enumerate(vectors)
    ]


async def test_create_list_and_delete_collections(store: VectorStore) -> None:
    await store.create_collection("beta", DIM)
    await store.create_collection("alpha", DIM)
    assert [c.name for c in await store.list_collections()] == ["alpha", "beta"]
    with pytest.raises(PlatformError) as caught:
        await store.create_collection("alpha", DIM)
    assert caught.value.code == "ALREADY_EXISTS"
    await store.delete_collection("alpha")
    assert [c.name for c in await store.list_collections()] == ["beta"]


@pytest.mark.parametrize("name", ["", "Upper", "has space", "x" * 65, "semi;colon"])
async def test_bad_collection_names_are_invalid_argument(store: VectorStore, name: str) -> None:
    with pytest.raises(PlatformError) as caught:
        await store.create_collection(name, DIM)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert [v.field for v in caught.value.violations] == ["name"]


async def test_unknown_collection_is_not_found_everywhere(store: VectorStore) -> None:
    calls = [
        store.get_collection("missing"),
        store.delete_collection("missing"),
        store.upsert_document("missing", "d", chunks("d", [basis(0)])),
        store.delete_document("missing", "d"),
        store.query("missing", basis(0), 3),
    ]
    for call in calls:
        with pytest.raises(PlatformError) as caught:
            await call
        assert caught.value.code == "NOT_FOUND"


async def test_reupserting_a_document_replaces_its_chunks(store: VectorStore) -> None:
    await store.create_collection("docs", DIM)
    assert await store.upsert_document("docs", "a", chunks("a", [basis(0), basis(1), basis(2)])) == 3
    await store.upsert_document("docs", "b", chunks("b", [basis(3)]))
    # Fewer chunks the second time: the third must disappear, not linger.
    await store.upsert_document("docs", "a", chunks("a", [basis(4), basis(5)], tag="v2"))
    info = await store.get_collection("docs")
    assert (info.document_count, info.chunk_count) == (2, 3)
    hits = await store.query("docs", basis(4), 10)
    assert sorted(h.id for h in hits) == ["a#0", "a#1", "b#0"]
    assert all(h.metadata["tag"] == "v2" for h in hits if h.document_id == "a")
    assert hits[0].id == "a#0" and hits[0].text == "a v2 chunk 0"
    listed = {c.name: c for c in await store.list_collections()}
    assert (listed["docs"].document_count, listed["docs"].chunk_count) == (2, 3)


async def test_delete_document(store: VectorStore) -> None:
    await store.create_collection("docs", DIM)
    await store.upsert_document("docs", "a", chunks("a", [basis(0), basis(1)]))
    await store.upsert_document("docs", "it's", chunks("it's", [basis(2)]))
    assert await store.delete_document("docs", "it's") == 1
    assert await store.delete_document("docs", "never-there") == 0
    assert [h.document_id for h in await store.query("docs", basis(2), 5)] == ["a", "a"]
    assert await store.count("docs") == 2


async def test_top_k_order_and_cosine_scores(store: VectorStore) -> None:
    await store.create_collection("docs", DIM)
    query = np.array(basis(0))
    # Cosines with the query of 1.0, 0.8, 0.6, 0.0 and -1.0; stored unnormalised on purpose.
    vectors = [[2.0] + [0.0] * 7, [0.8, 0.6] + [0.0] * 6, [0.6, 0.8] + [0.0] * 6, basis(3), [-3.0] + [0.0] * 7]
    await store.upsert_document("docs", "d", chunks("d", vectors))
    hits = await store.query("docs", query.tolist(), 4)
    assert [h.id for h in hits] == ["d#0", "d#1", "d#2", "d#3"]
    np.testing.assert_allclose([h.score for h in hits], [1.0, 0.8, 0.6, 0.0], atol=1e-5)
    assert hits[0].metadata == {"source": "d", "tag": "v1"}
    assert len(await store.query("docs", query.tolist(), 50)) == 5


async def test_wrong_dimension_and_bad_top_k_are_invalid_argument(store: VectorStore) -> None:
    await store.create_collection("docs", DIM)
    for call in [
        store.upsert_document("docs", "d", chunks("d", [[1.0, 0.0]])),
        store.query("docs", [1.0, 0.0], 3),
        store.query("docs", basis(0), 0),
    ]:
        with pytest.raises(PlatformError) as caught:
            await call
        assert caught.value.code == "INVALID_ARGUMENT"


async def test_empty_collection_query_returns_nothing(store: VectorStore) -> None:
    await store.create_collection("docs", DIM)
    assert await store.query("docs", basis(0), 5) == []


TEXTS = {
    "rockets": "Rockets carry spacecraft into orbit; a launch vehicle burns propellant.",
    "cats": "Cats purr and sleep most of the day, and they chase mice.",
    "bread": "Bread is baked from flour and yeast; the dough rises in a warm oven.",
}


async def keyword_collection(store: VectorStore) -> None:
    await store.create_collection("words", DIM)
    for index, (document_id, text) in enumerate(TEXTS.items()):
        record = ChunkRecord(f"{document_id}#0", text, basis(index), {"source": document_id})
        await store.upsert_document("words", document_id, [record])


async def test_keyword_search_ranks_by_the_words_and_follows_replacements(store: VectorStore) -> None:
    if not store.supports_keyword:
        pytest.skip("this store is dense-only (it says so through supports_keyword)")
    await keyword_collection(store)
    hits = await store.keyword_query("words", "Which animal chases MICE?", 3)
    assert [h.id for h in hits] == ["cats#0"], "only chunks sharing a word match"
    assert hits[0].score > 0 and hits[0].metadata == {"source": "cats"}
    assert [h.id for h in await store.keyword_query("words", "rising dough", 3)] == ["bread#0"], "stemmed"
    assert await store.keyword_query("words", "quantum ***", 3) == []
    assert await store.keyword_query("words", "\"' OR ( NOT", 3) == [], "query syntax in user text is just text"
    replacement = ChunkRecord("cats#0", "Dogs bark at the postman.", basis(1), {"source": "cats"})
    await store.upsert_document("words", "cats", [replacement])
    assert await store.keyword_query("words", "mice", 3) == []
    assert [h.id for h in await store.keyword_query("words", "postman", 3)] == ["cats#0"]
    await store.delete_document("words", "cats")
    assert await store.keyword_query("words", "postman", 3) == []
    with pytest.raises(PlatformError) as caught:
        await store.keyword_query("missing", "mice", 3)
    assert caught.value.code == "NOT_FOUND"


async def test_hybrid_fuses_both_rankings_and_dense_only_stores_fall_back(store: VectorStore) -> None:
    await keyword_collection(store)
    # The vector points at "rockets" while the words point at "bread": both lists' leaders come back.
    hybrid = await search(store, "words", basis(0), "flour, yeast", RetrievalMode.HYBRID, 2)
    dense = await search(store, "words", basis(0), "flour, yeast", RetrievalMode.DENSE, 2)
    if store.supports_keyword:
        assert {h.id for h in hybrid} == {"rockets#0", "bread#0"}
        assert all(h.score >= 1 / 61 for h in hybrid), "each leads one ranking"
    else:
        assert hybrid == dense
        with pytest.raises(PlatformError) as caught:
            await search(store, "words", basis(0), "flour", RetrievalMode.KEYWORD, 2)
        assert caught.value.code == "FAILED_PRECONDITION"


def test_reciprocal_rank_fusion_sums_reciprocal_ranks() -> None:
    def ranked(*ids: str) -> list[ScoredChunk]:
        return [ScoredChunk(i, i.split("#")[0], i, 0.0, {}) for i in ids]

    fused = reciprocal_rank_fusion([ranked("a#0", "b#0", "c#0"), ranked("c#0", "a#0")], 3)
    assert [h.id for h in fused] == ["a#0", "c#0", "b#0"]
    np.testing.assert_allclose([h.score for h in fused], [1 / 61 + 1 / 62, 1 / 63 + 1 / 61, 1 / 62])
    assert reciprocal_rank_fusion([[], []], 5) == []


def test_each_documents_best_chunk_comes_before_any_documents_second() -> None:
    ranking = [ScoredChunk(i, i.split("#")[0], i, 0.0, {}) for i in ("a#0", "a#1", "a#2", "b#0", "a#3", "c#0")]
    assert [h.id for h in distinct_documents_first(ranking, 4)] == ["a#0", "b#0", "c#0", "a#1"]
    assert [h.id for h in distinct_documents_first(ranking, 10)] == ["a#0", "b#0", "c#0", "a#1", "a#2", "a#3"]
    assert distinct_documents_first([], 3) == []


async def test_data_survives_reopening(tmp_path: Path, postgres_url: str) -> None:
    for kind, path in [("sqlite", tmp_path / "c.db"), ("lancedb", tmp_path / "lance"), ("postgres", None)]:
        first = await open_store(kind, path, database_url=postgres_url)  # type: ignore[arg-type]
        await first.create_collection("docs", DIM)
        await first.upsert_document("docs", "a", chunks("a", [basis(0), basis(1)]))
        await first.close()
        second = await open_store(kind, path, database_url=postgres_url)  # type: ignore[arg-type]
        assert [h.id for h in await second.query("docs", basis(1), 1)] == ["a#1"]
        await second.close()


def clustered(rng: np.random.Generator, count: int, dim: int) -> npt.NDArray[np.float32]:
    """Random vectors around random centres, which is how sentence embeddings are distributed."""
    centres = rng.normal(size=(50, dim))
    return (centres[rng.integers(0, 50, count)] + 0.6 * rng.normal(size=(count, dim))).astype(np.float32)


async def test_lancedb_builds_an_ann_index_past_the_threshold_with_high_recall(tmp_path: Path) -> None:
    dim, count, threshold = 64, 3000, 2000
    store = await LanceDbStore.open(tmp_path / "lance", index_threshold=threshold)
    await store.create_collection("big", dim)
    rng = np.random.default_rng(7)
    vectors = clustered(rng, count, dim)
    for start in range(0, count, 500):
        await store.upsert_document("big", f"doc{start}", chunks(f"doc{start}", vectors[start : start + 500].tolist()))
        assert await store.has_index("big") == (start + 500 >= threshold)
    queries = clustered(rng, 30, dim)
    recalls = []
    for query in queries:
        exact = {h.id for h in await store.query("big", query.tolist(), 10, exact=True)}
        approximate = {h.id for h in await store.query("big", query.tolist(), 10)}
        recalls.append(len(exact & approximate) / 10)
    assert float(np.mean(recalls)) >= 0.9, recalls
    await store.close()


async def test_postgres_store_sees_another_pods_writes_at_once(postgres_url: str) -> None:
    """Two pods' stores on one database: the reader's cached matrix follows the writer's every change."""
    writer = await open_store("postgres", database_url=postgres_url)
    reader = await open_store("postgres", database_url=postgres_url)
    try:
        await writer.create_collection("docs", DIM)
        await writer.upsert_document("docs", "a", chunks("a", [basis(0)]))
        assert [h.id for h in await reader.query("docs", basis(0), 1)] == ["a#0"]
        await writer.upsert_document("docs", "b", chunks("b", [basis(1)]))
        assert [h.id for h in await reader.query("docs", basis(1), 1)] == ["b#0"]
        await writer.delete_document("docs", "b")
        assert [h.id for h in await reader.query("docs", basis(1), 2)] == ["a#0"]
    finally:
        await writer.close()
        await reader.close()


async def test_lancedb_a_collection_dropped_by_a_concurrent_call_is_not_found_or_left_out(tmp_path: Path) -> None:
    """Two stores on one directory, as two processes: one drops collections while the other lists, reads and
    queries them; every answer is a result or NOT_FOUND (lancedb itself raises ValueError or an IO error)."""
    reader, dropper = await LanceDbStore.open(tmp_path / "lance"), await LanceDbStore.open(tmp_path / "lance")
    try:
        await reader.create_collection("kept", DIM)
        for round_ in range(12):
            names = [f"gone-{round_}-{i}" for i in range(4)]
            for name in names:
                await dropper.create_collection(name, DIM)
            calls: list[Awaitable[object]] = [dropper.delete_collection(name) for name in names]
            calls += [reader.list_collections() for _ in names]
            calls += [reader.get_collection(name) for name in names]
            calls += [reader.query(name, basis(0), 3) for name in names]
            for answer in await asyncio.gather(*calls, return_exceptions=True):
                if isinstance(answer, BaseException):
                    assert isinstance(answer, PlatformError) and answer.code == "NOT_FOUND", repr(answer)
                elif isinstance(answer, list) and answer and hasattr(answer[0], "dimension"):
                    assert "kept" in [info.name for info in answer]
    finally:
        await reader.close()
        await dropper.close()
