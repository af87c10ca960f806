"""``fedctl add-cluster`` / ``add-hub`` against a real redis-server: the printed Secret's
URL connects as a user with exactly the agent's (or hub's) rights."""

from __future__ import annotations

import asyncio

import pytest
import yaml
from redis import Redis
from redis.exceptions import AuthenticationError, NoPermissionError

from e2e.federation import fedctl
from e2e.redis_server import RedisServer
from e2e.redis_topologies import RedisClusterServers, RedisSentinelSet
from federation.cli.members import ADMIN_URL_ENV
from federation.registry.records import ClusterRecord
from federation.registry.redis_store import RedisWriter

pytestmark = pytest.mark.integration


def test_add_cluster_prints_a_secret_whose_url_is_the_agents(redis_server: RedisServer) -> None:
    admin = redis_server.url()
    done = fedctl("add-cluster", "west-1", "--namespace", "fed", env={ADMIN_URL_ENV: admin})
    assert done.returncode == 0, done.stderr
    secret = yaml.safe_load(done.stdout)
    assert (secret["kind"], secret["metadata"]["namespace"]) == ("Secret", "fed")
    url = secret["stringData"]["url"]
    assert url.startswith("redis://agent-west-1:") and url.endswith(admin.rsplit("@", 1)[1])
    assert admin.split("@")[0].rsplit(":", 1)[1] not in url  # not the admin's password

    with Redis.from_url(url) as agent:
        agent.hset("fed:v2:{west-1}:records", "x", "1")  # its own keys
        with pytest.raises(NoPermissionError):
            agent.hset("fed:v2:{east}:records", "x", "1")  # no other cluster's

    # Again: the password rotates, and the old URL stops working.
    again = fedctl("add-cluster", "west-1", env={ADMIN_URL_ENV: admin})
    new_url = yaml.safe_load(again.stdout)["stringData"]["url"]
    assert new_url != url
    with Redis.from_url(new_url) as agent:
        assert agent.ping()
    with pytest.raises(AuthenticationError), Redis.from_url(url) as old:
        old.ping()


def test_add_hub_creates_a_read_only_user(redis_server: RedisServer) -> None:
    done = fedctl("add-hub", "--user", "hub-2", env={ADMIN_URL_ENV: redis_server.url()})
    assert done.returncode == 0, done.stderr
    with Redis.from_url(yaml.safe_load(done.stdout)["stringData"]["url"]) as hub:
        hub.hget("fed:v2:{a}:records", "x")  # reads everything
        with pytest.raises(NoPermissionError):
            hub.hset("fed:v2:{a}:records", "x", "1")


def test_without_the_admin_url_it_says_where_it_belongs() -> None:
    done = fedctl("add-cluster", "a", env={ADMIN_URL_ENV: ""})
    assert done.returncode == 1
    assert f"{ADMIN_URL_ENV} is not set" in done.stderr


@pytest.mark.parametrize("registry_name", ["redis_cluster", "redis_sentinel"])
def test_add_cluster_creates_the_user_on_every_node_of_a_distributed_registry(
    registry_name: str, request: pytest.FixtureRequest
) -> None:
    """Redis keeps ACL users per node: a replica a failover promotes must know the
    agent already. The printed URL names the same cluster or sentinels."""
    registry: RedisClusterServers | RedisSentinelSet = request.getfixturevalue(registry_name)
    admin = registry.url()
    done = fedctl("add-cluster", "north", env={ADMIN_URL_ENV: admin})
    assert done.returncode == 0, done.stderr
    url = yaml.safe_load(done.stdout)["stringData"]["url"]
    assert url.startswith(f"{registry.scheme}://agent-north:")
    assert url.endswith(admin.rsplit("@", 1)[1])
    for node in registry.running():
        with node.admin_client() as client:
            assert client.acl_getuser("agent-north"), f"{node.name} lacks the agent's user"

    async def publish() -> None:
        writer = RedisWriter.from_url(url, "north")
        try:
            await writer.join(ClusterRecord("north", "test", 1.0, "e1"))
        finally:
            await writer.close()

    asyncio.run(publish())
