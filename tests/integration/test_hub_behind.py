"""A hub replica cut off from the registry says so in /readyz, on a real redis-server.

The hub follows the registry in-process (its watcher's real loop, retrying while Redis
is down) and serves its real HTTP endpoints on loopback. Stopping Redis (the process
we started, by its pid) makes ``/readyz`` answer 503 with the reason once no read has
succeeded for ``behind_after`` seconds; starting it again makes it ready again.
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from e2e.cluster import free_port
from e2e.processes import ProcessGroup
from e2e.redis_server import RedisServer
from federation.hub.core import Hub
from federation.hub.http import serve_hub_http
from federation.hub.snapshots import SnapshotOptions
from federation.registry.redis_store import RedisReader, RedisWriter
from federation.translate.inputs import TranslateOptions
from federation.xds.snapshot import SnapshotCache
from federation.xds.status import SyncRegistry, XdsMetrics
from tests import samples

pytestmark = pytest.mark.integration

DEADLINE = 30.0


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own: it is stopped and started again."""
    group = ProcessGroup()
    try:
        with RedisServer(group, persistence=True) as server:
            yield server
    finally:
        group.stop_all()


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_readyz_says_behind_while_the_registry_is_unreachable(
    own_redis: RedisServer,
) -> None:
    writer = RedisWriter.from_url(own_redis.admin_url, "a")
    await writer.replace_all([samples.service("a")], samples.cluster_record("a"))
    await writer.close()
    reader = RedisReader.from_url(own_redis.admin_url, socket_timeout=1)
    cache = SnapshotCache()
    sync = SyncRegistry(cache.snapshot_versions)
    hub = Hub(
        reader,
        cache,
        SnapshotOptions(TranslateOptions(), {}),
        freeze_heap=False,
        behind_after=1.0,  # --registry-behind-after 1
    )
    port = free_port()
    runner = await serve_hub_http(hub, sync, XdsMetrics(), f"127.0.0.1:{port}")
    running = asyncio.create_task(hub.run())
    try:
        await until(lambda: readyz(port) == (200, "ok"), "the hub to be ready")
        own_redis.stop_process()
        await until(
            lambda: readyz(port)[0] == 503 and "behind the registry" in readyz(port)[1],
            "/readyz to say the hub is behind",
        )
        own_redis.start()
        await until(lambda: readyz(port) == (200, "ok"), "the hub to be ready again")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await runner.cleanup()
        await reader.close()
