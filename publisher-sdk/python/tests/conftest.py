"""Fixtures: a fresh redis-server, gateway or cluster per test (real processes, stopped by
PID at the end), and the shared wire fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from support import Gateway, RedisCluster, RedisServer, TlsFiles, fixtures


@pytest.fixture(scope="session")
def wire() -> dict[str, Any]:
    return fixtures()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    """A gateway on the embedded broker."""
    node = Gateway()
    yield node
    node.close()


@pytest.fixture
def redis_gateway(redis_server: RedisServer) -> Iterator[Gateway]:
    """A gateway on `redis_server`."""
    node = Gateway(redis_server.url)
    yield node
    node.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    nodes = RedisCluster(3)
    yield nodes
    nodes.close()


@pytest.fixture(scope="module")
def tls_files() -> Iterator[TlsFiles]:
    files = TlsFiles()
    yield files
    files.close()
