"""The key check runs scrypt once for a burst of calls with the same key, whatever the outcome, and again only once
the cached entry has expired; a caller that goes away does not cancel the check the others await."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmorch_common.errors import PlatformError
from orchestrator_svc.identity import service
from orchestrator_svc.identity.keys import KEY_PREFIX, Principal, parse_key, secret_matches
from orchestrator_svc.identity.service import KeyAdmin, KeyChecker
from orchestrator_svc.identity.store import KeyStore

BURST = 20


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[KeyStore]:
    opened = await KeyStore.open(f"sqlite:///{tmp_path / 'keys.db'}")
    yield opened
    await opened.close()


@pytest.fixture
def scrypt_runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The secrets scrypt was run on: the real check, counted."""
    runs: list[str] = []

    def counted(secret: str, secret_hash: str) -> bool:
        runs.append(secret)
        return secret_matches(secret, secret_hash)

    monkeypatch.setattr(service, "secret_matches", counted)
    return runs


async def burst(checker: KeyChecker, authorization: str) -> list[Principal | BaseException]:
    return await asyncio.gather(*(checker.authenticate(authorization) for _ in range(BURST)), return_exceptions=True)


async def test_a_burst_with_a_valid_key_runs_scrypt_once(store: KeyStore, scrypt_runs: list[str]) -> None:
    key, record = await KeyAdmin(store).create("acme")
    checker = KeyChecker(store, cache_ttl_s=0.2)
    assert await burst(checker, f"Bearer {key}") == [record.principal] * BURST
    assert len(scrypt_runs) == 1
    await asyncio.sleep(0.3)  # past the TTL: the next burst checks the key again, once
    assert await burst(checker, f"Bearer {key}") == [record.principal] * BURST
    assert len(scrypt_runs) == 2


async def test_a_burst_with_a_wrong_secret_runs_scrypt_once_and_is_refused(
    store: KeyStore, scrypt_runs: list[str]
) -> None:
    key, _ = await KeyAdmin(store).create("acme")
    parsed = parse_key(key)
    assert parsed is not None
    wrong = f"Bearer {KEY_PREFIX}{parsed[0]}_{'A' * 43}"
    answers = await burst(KeyChecker(store, cache_ttl_s=10), wrong)
    assert all(isinstance(a, PlatformError) and a.code == "UNAUTHENTICATED" for a in answers), answers
    assert len(scrypt_runs) == 1


async def test_a_caller_that_goes_away_leaves_the_check_to_the_others(store: KeyStore, scrypt_runs: list[str]) -> None:
    key, record = await KeyAdmin(store).create("acme")
    checker = KeyChecker(store, cache_ttl_s=10)
    first = asyncio.ensure_future(checker.authenticate(f"Bearer {key}"))
    others = asyncio.ensure_future(burst(checker, f"Bearer {key}"))
    await asyncio.sleep(0)  # the first has started the check
    first.cancel()
    assert await others == [record.principal] * BURST
    assert len(scrypt_runs) == 1
