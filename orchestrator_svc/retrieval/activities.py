"""The retrieve activity: a local activity of the inference workflow that searches a collection."""

from dataclasses import dataclass

from temporalio import activity

from llmorch_common.errors import PlatformError, to_final_failure
from orchestrator_svc.retrieval.vectorstore.base import VectorStore

RETRIEVE_ACTIVITY = "retrieve"


@dataclass(frozen=True)
class RetrieveInput:
    collection: str
    vector: list[float]
    top_k: int


@dataclass(frozen=True)
class CitationRecord:
    chunk_id: str
    source: str
    score: float
    text: str


class RetrievalActivities:
    def __init__(self, store: VectorStore) -> None:
        self._store = store

    @activity.defn(name=RETRIEVE_ACTIVITY)
    async def retrieve(self, request: RetrieveInput) -> list[CitationRecord]:
        try:
            hits = await self._store.query(request.collection, request.vector, request.top_k)
        except PlatformError as error:
            raise to_final_failure(error) from None
        return [CitationRecord(h.id, h.document_id, h.score, h.text) for h in hits]
