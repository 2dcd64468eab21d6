"""The key check every public surface shares (gRPC interceptor, HTTP facade), and key administration."""

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

from llmorch_common.errors import FieldViolation, invalid_argument, not_found, unauthenticated
from orchestrator_svc.identity.keys import (
    NO_LIMITS,
    KeyPolicy,
    KeyRecord,
    Principal,
    Role,
    mint_key,
    parse_key,
    secret_matches,
    valid_tenant,
)
from orchestrator_svc.identity.store import KeyStore

BEARER = "bearer "
CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    until: float


class KeyChecker:
    """Checks `authorization: Bearer <key>`. A verified key is remembered for `cache_ttl_s` (scrypt costs tens of
    milliseconds), so a revocation reaches every API replica within that bound and never later."""

    def __init__(self, store: KeyStore, cache_ttl_s: float) -> None:
        self._store = store
        self._cache_ttl_s = cache_ttl_s
        # Keyed by a digest of the whole key, so a cached entry can only be matched by the exact key that earned it.
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()
        # The verification under way for a key, which every call with that key awaits: without it, each call that
        # comes while the entry is missing or expired runs scrypt of its own, and a busy client's burst of calls
        # takes the replica's CPU for seconds.
        self._verifying: dict[bytes, asyncio.Future[Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller's principal, or UNAUTHENTICATED saying what is wrong (never which keys exist)."""
        if not authorization:
            raise unauthenticated("an API key is required: send the header `authorization: Bearer <key>`")
        if not authorization.lower().startswith(BEARER):
            raise unauthenticated("the authorization header must read `Bearer <key>`")
        key = authorization[len(BEARER) :].strip()
        digest = hashlib.sha256(key.encode()).digest()
        cached = self._verified.get(digest)
        if cached and cached.until > time.monotonic():
            return cached.principal
        verifying = self._verifying.get(digest)
        if verifying is None:
            verifying = asyncio.ensure_future(self._verify_and_remember(key, digest))
            self._verifying[digest] = verifying
            verifying.add_done_callback(lambda _: self._verifying.pop(digest, None))
        # Shielded: a caller that goes away does not cancel the verification the others await.
        return await asyncio.shield(verifying)

    async def _verify_and_remember(self, key: str, digest: bytes) -> Principal:
        now = time.monotonic()  # before the store is read, so a revocation is seen within the TTL
        principal = await self._verify(key)
        self._verified[digest] = _Verified(principal, now + self._cache_ttl_s)
        self._verified.move_to_end(digest)
        while len(self._verified) > CACHE_ENTRIES:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, key: str) -> Principal:
        refused = unauthenticated("the API key is not valid")
        parsed = parse_key(key)
        if parsed is None:
            raise refused
        key_id, secret = parsed
        record = await self._store.get(key_id)
        if record is None or record.revoked_at is not None:
            raise refused
        # scrypt releases the GIL but takes tens of milliseconds of CPU: in a thread, the event loop keeps answering.
        if not await asyncio.to_thread(secret_matches, secret, record.secret_hash):
            raise refused
        return record.principal


class KeyAdmin:
    """Create, list and revoke keys: the operator's side, through `llmorch-admin keys` on the database itself."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store

    async def create(
        self, tenant: str, role: Role = Role.TENANT, policy: KeyPolicy = NO_LIMITS
    ) -> tuple[str, KeyRecord]:
        """The new key (shown once) and its stored record."""
        violations = []
        if not valid_tenant(tenant):
            violations.append(FieldViolation("tenant", "must be 1 to 32 characters of [a-z0-9_-]"))
        if not 0 < policy.fairness_weight <= 1000:
            violations.append(FieldViolation("fairness_weight", "must be above 0 and at most 1000"))
        limits = (policy.requests_per_minute, policy.tokens_per_minute, policy.max_concurrent)
        if min(limits) < 0:
            violations.append(FieldViolation("limits", "must be 0 (none) or positive"))
        if violations:
            raise invalid_argument(violations)
        new = mint_key()
        return new.key, await self._store.add(new.key_id, tenant, role, new.secret_hash, policy)

    async def list(self, tenant: str | None = None) -> list[KeyRecord]:
        return await self._store.list(tenant)

    async def revoke(self, key_id: str) -> None:
        if not await self._store.revoke(key_id):
            raise not_found(f"no live key {key_id!r}")
