"""The retrieve activity: a local activity of the inference workflow that searches a collection."""

from dataclasses import dataclass

from temporalio import activity

from llmorch_common.errors import PlatformError, to_final_failure
from orchestrator_svc.retrieval.chunking import HEADING_PATH_KEY
from orchestrator_svc.retrieval.vectorstore.base import RetrievalMode, VectorStore, search

RETRIEVE_ACTIVITY = "retrieve"


@dataclass(frozen=True)
class RetrieveInput:
    collection: str
    vector: list[float]
    top_k: int
    # The question's text, for keyword and hybrid modes; runs started before modes existed send neither.
    text: str = ""
    mode: str = RetrievalMode.DENSE.value


@dataclass(frozen=True)
class CitationRecord:
    chunk_id: str
    source: str
    score: float
    text: str
    heading_path: str = ""


class RetrievalActivities:
    def __init__(self, store: VectorStore) -> None:
        self._store = store

    @activity.defn(name=RETRIEVE_ACTIVITY)
    async def retrieve(self, request: RetrieveInput) -> list[CitationRecord]:
        try:
            hits = await search(
                self._store,
                request.collection,
                request.vector,
                request.text,
                RetrievalMode(request.mode),
                request.top_k,
            )
        except PlatformError as error:
            raise to_final_failure(error) from None
        return [
            CitationRecord(h.id, h.document_id, h.score, h.text, h.metadata.get(HEADING_PATH_KEY, "")) for h in hits
        ]
