"""pytest fixtures for a real redis-server, in clear text or TLS-only, and for a
Redis Cluster and a sentinel set of real redis-server processes.

Registered for every test run with ``-p e2e.redis_fixtures`` (pyproject.toml).
The server is started on first use, shared by the session and stopped at its
end, also when tests fail. Tests that need a clean registry flush it
themselves with the admin client.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.processes import ProcessGroup
from e2e.redis_server import RedisServer
from e2e.redis_topologies import RedisClusterServers, RedisSentinelSet


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server (admin: the ``default`` user), in its own process group."""
    group = ProcessGroup()
    try:
        with RedisServer(group) as server:
            yield server
    finally:
        # RedisServer stops itself; this is only the backstop should it not have.
        group.stop_all()


@pytest.fixture(scope="session")
def tls_redis_server() -> Iterator[RedisServer]:
    """A TLS-only redis-server (``rediss://``, its own CA); client certificates optional."""
    group = ProcessGroup()
    try:
        with RedisServer(group, tls=True, name="redis-tls") as server:
            yield server
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster: 3 masters with a replica each."""
    group = ProcessGroup()
    try:
        with RedisClusterServers(group) as cluster:
            yield cluster
    finally:
        group.stop_all()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelSet]:
    """A primary with a replica, under 3 sentinels."""
    group = ProcessGroup()
    try:
        with RedisSentinelSet(group) as sentinel:
            yield sentinel
    finally:
        group.stop_all()
