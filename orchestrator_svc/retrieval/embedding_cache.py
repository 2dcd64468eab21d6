"""The optional Redis cache of embeddings (ORCH_REDIS_URL), keyed by (the weights' digest, text): vectors depend on
nothing else, so a hit is exact. Any Redis failure reads as a miss."""

import hashlib
import logging
import struct
from collections.abc import Sequence
from typing import cast

import redis.asyncio as redis

from llmorch_common.redis_cache import CACHE_REQUESTS, REDIS_FAILURES

log = logging.getLogger(__name__)

KEY_PREFIX = "llmorch:embedding:"
_TOKENS = struct.Struct("<i")


def embedding_key(model_digest: str, text: str) -> str:
    return KEY_PREFIX + hashlib.sha256(f"{model_digest}\0{text}".encode()).hexdigest()


def pack(vector: Sequence[float], token_count: int) -> bytes:
    """float32, as EmbeddingService sends them: a cached vector is bit for bit the one it served."""
    return _TOKENS.pack(token_count) + struct.pack(f"<{len(vector)}f", *vector)


def unpack(value: bytes) -> tuple[list[float], int]:
    (token_count,) = _TOKENS.unpack_from(value)
    floats = (len(value) - _TOKENS.size) // 4
    return list(struct.unpack_from(f"<{floats}f", value, _TOKENS.size)), token_count


class EmbeddingCache:
    def __init__(self, client: "redis.Redis", ttl_s: float) -> None:
        self._client = client
        self._ttl_ms = int(ttl_s * 1000)

    async def close(self) -> None:
        await self._client.aclose()

    async def lookup(self, model_digest: str, texts: Sequence[str]) -> list[tuple[list[float], int] | None]:
        """One entry per text: (vector, token count) or None for a miss."""
        try:
            # Bytes: the client is made without decode_responses (redis_cache.connect).
            values = cast(
                list[bytes | None], await self._client.mget([embedding_key(model_digest, text) for text in texts])
            )
        except REDIS_FAILURES as error:
            CACHE_REQUESTS.labels("embedding", "error").inc(len(texts))
            log.warning("embedding cache unavailable, read as misses: %s", error)
            return [None] * len(texts)
        hits = sum(value is not None for value in values)
        CACHE_REQUESTS.labels("embedding", "hit").inc(hits)
        CACHE_REQUESTS.labels("embedding", "miss").inc(len(texts) - hits)
        return [unpack(value) if value is not None else None for value in values]

    async def store(self, model_digest: str, entries: Sequence[tuple[str, Sequence[float], int]]) -> None:
        """(text, vector, token count) each; a Redis that cannot take them only costs later misses."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for text, vector, token_count in entries:
                    pipe.set(embedding_key(model_digest, text), pack(vector, token_count), px=self._ttl_ms)
                await pipe.execute()
        except REDIS_FAILURES as error:
            log.warning("embedding cache unavailable, vectors not stored: %s", error)
