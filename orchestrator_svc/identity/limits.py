"""Per-key rate limits, counted in the shared database so that every API replica enforces the same numbers."""

import time
import uuid
from dataclasses import dataclass

from llmorch_common.errors import QuotaViolation, resource_exhausted
from orchestrator_svc.identity.keys import KeyPolicy, Principal
from orchestrator_svc.identity.store import Execute, KeyStore

MINUTE_S = 60.0
CONCURRENCY_RETRY_S = 1.0


@dataclass(frozen=True)
class Admission:
    """A request let in: its lease (a slot of the key's concurrency) and the tokens charged to its minute."""

    key_id: str
    lease_id: str
    minute: int
    charged_tokens: int


def _violation(policy: KeyPolicy, requests: int, tokens: int, in_flight: int, charge: int) -> str | None:
    """Which limit this request would break, if any; usage counts what the minute already admitted."""
    if policy.requests_per_minute and requests + 1 > policy.requests_per_minute:
        return f"requests per minute: limit {policy.requests_per_minute} reached"
    if policy.tokens_per_minute and tokens + charge > policy.tokens_per_minute:
        return (
            f"tokens per minute: {tokens} charged this minute, this request needs {charge} "
            f"(prompt + max_tokens), limit {policy.tokens_per_minute}"
        )
    if policy.max_concurrent and in_flight + 1 > policy.max_concurrent:
        return f"concurrent requests: limit {policy.max_concurrent} in flight"
    return None


class RateLimiter:
    """Requests per minute, tokens per minute and requests in flight, per key. Tokens cannot be known before the
    generation, so a request is charged its prompt estimate plus max_tokens on admission, and the difference to
    what it used is settled when it ends. Each admission is one transaction under a per-key lock, so two replicas
    admitting at once cannot both take the last slot."""

    def __init__(self, store: KeyStore, lease_ttl_s: float) -> None:
        self._store = store
        # A replica that dies mid-request never releases its lease; it expires after the longest a request may run.
        self._lease_ttl_s = lease_ttl_s

    async def admit(self, caller: Principal, charge_tokens: int) -> Admission | None:
        """None when the key has no limits; RESOURCE_EXHAUSTED with RetryInfo and a QuotaFailure when over one."""
        policy = caller.policy
        if not (policy.requests_per_minute or policy.tokens_per_minute or policy.max_concurrent):
            return None
        now = time.time()
        minute = int(now // MINUTE_S)
        admission = Admission(caller.key_id, uuid.uuid4().hex, minute, charge_tokens)

        async def take(execute: Execute) -> str | None:
            key = caller.key_id
            await execute("DELETE FROM key_leases WHERE key_id = ? AND expires_at <= ?", (key, now))
            await execute("DELETE FROM key_usage WHERE key_id = ? AND minute < ?", (key, minute - 1))
            used = await execute(
                "SELECT requests, tokens FROM key_usage WHERE key_id = ? AND minute = ?", (key, minute)
            )
            requests, tokens = (int(used[0][0]), int(used[0][1])) if used else (0, 0)
            [(in_flight,)] = await execute("SELECT COUNT(*) FROM key_leases WHERE key_id = ?", (key,))
            violation = _violation(policy, requests, tokens, int(in_flight), charge_tokens)
            if violation:
                return violation
            await execute(
                "INSERT INTO key_usage (key_id, minute, requests, tokens) VALUES (?, ?, 1, ?) "
                "ON CONFLICT (key_id, minute) DO UPDATE SET requests = key_usage.requests + 1, "
                "tokens = key_usage.tokens + EXCLUDED.tokens",
                (key, minute, charge_tokens),
            )
            await execute(
                "INSERT INTO key_leases (lease_id, key_id, expires_at) VALUES (?, ?, ?)",
                (admission.lease_id, key, now + self._lease_ttl_s),
            )
            return None

        violation = await self._store.transaction(take, lock=f"key:{caller.key_id}")
        if violation:
            retry_after = CONCURRENCY_RETRY_S if violation.startswith("concurrent") else MINUTE_S - now % MINUTE_S
            raise resource_exhausted(
                f"rate limit of API key {caller.key_id}: {violation}",
                retry_after_s=retry_after,
                quota=(QuotaViolation(f"api_key:{caller.key_id}", violation),),
            )
        return admission

    async def release(self, admission: Admission | None, used_tokens: int | None) -> None:
        """Free the request's slot; with `used_tokens`, settle its minute's charge to what it really used."""
        if admission is None:
            return

        async def settle(execute: Execute) -> None:
            await execute("DELETE FROM key_leases WHERE lease_id = ?", (admission.lease_id,))
            if used_tokens is not None:
                await execute(
                    "UPDATE key_usage SET tokens = tokens - ? WHERE key_id = ? AND minute = ?",
                    (admission.charged_tokens - used_tokens, admission.key_id, admission.minute),
                )

        await self._store.transaction(settle)
