"""Shared fixtures, each server started once per session by the stack definition: a real Temporal dev server, and
PostgreSQL (the registry's shared database) exactly as the multi-replica stack runs it."""

import asyncio
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from temporalio.client import Client

from llmorch_common.payload_codec import connect, new_key
from tools.stack import Child, PostgresCluster, Stack, StackConfig, free_port

# Workflow payloads are sealed in every test, as in the stack: the in-process clients and every child share this key.
os.environ.setdefault("LLMORCH_PAYLOAD_KEYS", new_key("test"))
# The control plane's credential, shared by the in-process API and every model or embedding child of a test.
os.environ.setdefault("LLMORCH_REGISTRATION_TOKEN", secrets.token_urlsafe(32))


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
    # The port accepts before the frontend is healthy ("Frontend is not healthy yet"): try again for a while.
    for _ in range(60):
        try:
            return await connect(temporal_address, "default")
        except RuntimeError:
            await asyncio.sleep(0.5)
    return await connect(temporal_address, "default")


@pytest.fixture(scope="session")
async def postgres_server() -> AsyncIterator[tuple[PostgresCluster, Child]]:
    """One PostgreSQL for the session (initdb and start take about a second); each test gets its own database.

    Under /tmp rather than pytest's tmp_path: PostgreSQL runs as the `postgres` user when the tests run as root,
    and pytest's directories are closed to other users."""
    root = Path(tempfile.mkdtemp(prefix="llmorch-pg-"))
    cluster = PostgresCluster(root / "postgres", free_port()).init()
    child = Child(cluster.spec(fsync=False), root / "postgres.log")
    await child.start(60)
    await cluster.wait_accepting()
    yield cluster, child
    await child.terminate(30)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster(postgres_server: tuple[PostgresCluster, Child]) -> PostgresCluster:
    return postgres_server[0]


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database on the session's PostgreSQL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_cluster.url.rsplit("/", 1)[0] + f"/{name}"
