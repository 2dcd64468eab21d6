"""What the two optional Redis caches (completions, embeddings) share: the client's bounds, the errors that read as
a miss, and the hit/miss counter."""

import redis.asyncio as redis
from prometheus_client import Counter
from redis.exceptions import RedisError

# Bounds of one Redis call: a cache that answers slower than a generation or an embedding is worth nothing.
REDIS_TIMEOUT_S = 0.25
# What a cache call may raise when Redis is gone or slow: each is a miss (or a skipped store), never an error.
REDIS_FAILURES = (RedisError, OSError)

CACHE_REQUESTS = Counter(
    "llmorch_cache_requests_total",
    "Cache lookups by kind (completion; embedding: one per text) and result (hit, miss, error: Redis failed, read "
    "as a miss)",
    ["kind", "result"],
)


def connect(url: str) -> "redis.Redis":
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S, retry_on_timeout=False
    )
