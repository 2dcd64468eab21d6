"""Shared fixtures: one real Temporal dev server per session, started by the stack definition with its flags."""

import os
from collections.abc import AsyncIterator

import pytest
from temporalio.client import Client

from llmorch_common.payload_codec import connect, new_key
from tools.stack import Child, Stack, StackConfig

# Workflow payloads are sealed in every test, as in the stack: the in-process clients and every child share this key.
os.environ.setdefault("LLMORCH_PAYLOAD_KEYS", new_key("test"))


@pytest.fixture(scope="session")
async def temporal_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Child]:
    """The dev server exactly as `make up` runs it (tools/stack.py), on free ports and a fresh SQLite file."""
    stack = Stack(StackConfig(home=tmp_path_factory.mktemp("temporal")))
    yield await stack.start_temporal()
    await stack.stop()


@pytest.fixture(scope="session")
def temporal_address(temporal_server: Child) -> str:
    return f"127.0.0.1:{temporal_server.port}"


@pytest.fixture(scope="session")
async def temporal_client(temporal_address: str) -> Client:
    return await connect(temporal_address, "default")
