"""Fixtures for unit tests: one vector-store fixture parametrized over every backend."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from orchestrator_svc.retrieval.vectorstore import StoreKind, VectorStore, open_store


@pytest_asyncio.fixture(params=["memory", "sqlite", "lancedb"], loop_scope="session")
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    kind: StoreKind = request.param
    path = tmp_path / ("chunks.db" if kind == "sqlite" else "lance")
    opened = await open_store(kind, path)
    yield opened
    await opened.close()
