"""The optional Redis cache of deterministic completions (ORCH_REDIS_URL), read and written by local activities
inside InferenceWorkflow, so a hit is still one recorded, durable request. Any Redis failure reads as a miss."""

import hashlib
import json
import logging
from dataclasses import asdict, dataclass

import redis.asyncio as redis
from temporalio import activity

from llmorch_common.contracts import ChatTurn, Sampling
from llmorch_common.redis_cache import CACHE_REQUESTS, REDIS_FAILURES
from orchestrator_svc.retrieval.activities import CitationRecord

log = logging.getLogger(__name__)

CACHE_LOOKUP_ACTIVITY = "cache_lookup"
CACHE_STORE_ACTIVITY = "cache_store"
CACHE_HIT, CACHE_MISS = "hit", "miss"
KEY_PREFIX = "llmorch:completion:"


@dataclass(frozen=True)
class CachedCompletion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class CacheLookupOutput:
    completion: CachedCompletion | None = None


@dataclass(frozen=True)
class CacheStoreInput:
    key: str
    completion: CachedCompletion
    ttl_s: float


def completion_key(
    tenant: str,
    model_id: str,
    model_digest: str,
    messages: tuple[ChatTurn, ...],
    prompt: str,
    sampling: Sampling,
    citations: tuple[CitationRecord, ...],
) -> str:
    """Everything the answer depends on: the tenant (one tenant never reads another's answer), the weights, the
    augmented prompt, the sampling, and each retrieved chunk's id and content digest (its version: a re-ingested
    chunk with new text is another key). Deterministic, so the workflow computes it on replay alike."""
    chunks = [(c.chunk_id, hashlib.sha256(c.text.encode()).hexdigest()) for c in citations]
    parts = {
        "tenant": tenant,
        "model": [model_id, model_digest],
        "messages": [[m.role, m.content] for m in messages],
        "prompt": prompt,
        "sampling": asdict(sampling),
        "chunks": chunks,
    }
    return KEY_PREFIX + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class CacheActivities:
    """`client` is None without ORCH_REDIS_URL: every lookup is then a miss (the API sends no cacheable request)."""

    def __init__(self, client: "redis.Redis | None") -> None:
        self._client = client

    @activity.defn(name=CACHE_LOOKUP_ACTIVITY)
    async def cache_lookup(self, key: str) -> CacheLookupOutput:
        if self._client is None:
            return CacheLookupOutput()
        try:
            raw = await self._client.get(key)
        except REDIS_FAILURES as error:
            CACHE_REQUESTS.labels("completion", "error").inc()
            log.warning("cache unavailable, read as a miss: %s", error)
            return CacheLookupOutput()
        CACHE_REQUESTS.labels("completion", CACHE_HIT if raw else CACHE_MISS).inc()
        return CacheLookupOutput(CachedCompletion(**json.loads(raw)) if raw else None)

    @activity.defn(name=CACHE_STORE_ACTIVITY)
    async def cache_store(self, request: CacheStoreInput) -> bool:
        """False when Redis could not take it: the answer is delivered all the same."""
        if self._client is None:
            return False
        try:
            await self._client.set(request.key, json.dumps(asdict(request.completion)), px=int(request.ttl_s * 1000))
        except REDIS_FAILURES as error:
            log.warning("cache unavailable, answer not stored: %s", error)
            return False
        return True
