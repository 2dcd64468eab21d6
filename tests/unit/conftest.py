"""Fixtures for unit tests: one vector-store fixture parametrized over every backend (PostgreSQL included)."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from orchestrator_svc.retrieval.vectorstore import StoreKind, VectorStore, open_store


@pytest.fixture(params=["memory", "sqlite", "lancedb", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[StoreKind, Path, str]:
    """Kind, path and database URL; postgres gets a fresh database on the session's PostgreSQL (tests/conftest.py)."""
    kind: StoreKind = request.param
    database_url = str(request.getfixturevalue("postgres_url")) if kind == "postgres" else ""
    return kind, tmp_path / ("chunks.db" if kind == "sqlite" else "lance"), database_url


@pytest_asyncio.fixture(loop_scope="session")
async def store(store_target: tuple[StoreKind, Path, str]) -> AsyncIterator[VectorStore]:
    kind, path, database_url = store_target
    opened = await open_store(kind, path, database_url=database_url)
    yield opened
    await opened.close()
