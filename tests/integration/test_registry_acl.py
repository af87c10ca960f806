"""Least privilege in the registry, proven on a real redis-server.

The users come from :mod:`federation.registry.acl`: agent ``a`` may write only
``fed:v2:{a}:*`` (and SADD the members set), can read every cluster, and cannot
run the commands key patterns do not restrict (KEYS, SCAN, FLUSH*). The hub
user reads everything and writes nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError

from e2e.redis_server import RedisServer
from federation.errors import InvalidInputError
from federation.registry import keys
from federation.registry.acl import (
    agent_user,
    agent_user_rules,
    apply_users,
    hub_user_rules,
)
from federation.registry.hub_state import RedisHubState
from federation.registry.kinds import Kind, RecordRef
from federation.registry.records import (
    encode_service,
)
from federation.registry.redis_store import RedisReader, RedisWriter
from federation.registry.store import START, Op, RegistryUnavailableError
from tests import samples
from tests.samples import cluster_record, service

pytestmark = pytest.mark.integration

HUB = "hub-test"


@dataclass
class Users:
    server: RedisServer
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return self.server.url(user, self.passwords[user])

    def client(self, user: str) -> Redis:
        return Redis.from_url(self.url(user))


@pytest.fixture
async def users(redis_server: RedisServer) -> AsyncIterator[Users]:
    """agent-a, agent-b and the hub user, on a registry where b has published."""
    passwords = {name: secrets.token_urlsafe(16) for name in ("agent-a", "agent-b", HUB)}
    admin = redis_server.async_admin_client()
    try:
        await admin.flushall()
        await apply_users(
            admin,
            [
                agent_user_rules("a", passwords["agent-a"]),
                agent_user_rules("b", passwords["agent-b"]),
                hub_user_rules(HUB, passwords[HUB]),
            ],
        )
        env = Users(redis_server, passwords)
        writer_b = RedisWriter.from_url(env.url("agent-b"), "b")
        try:
            await writer_b.replace_all([service("b")], cluster_record("b"))
            await writer_b.renew_lease(60_000, "token-b")
        finally:
            await writer_b.close()
        yield env
    finally:
        # The server is shared by the session: leave only the admin behind.
        await admin.execute_command("ACL", "DELUSER", *passwords)  # type: ignore[no-untyped-call]
        await admin.aclose()


@pytest.fixture
async def agent_a(users: Users) -> AsyncIterator[Redis]:
    client = users.client("agent-a")
    try:
        yield client
    finally:
        await client.aclose()


async def b_state(server: RedisServer) -> tuple[object, ...]:
    """Everything of cluster b, as the admin sees it."""
    admin = server.async_admin_client()
    try:
        return (
            await admin.hgetall(keys.records("b")),
            await admin.get(keys.cluster_record("b")),
            await admin.xrange(keys.stream("b")),
            await admin.get(keys.lease("b")),
            await admin.smembers(keys.MEMBERS),
        )
    finally:
        await admin.aclose()


async def test_agent_writes_its_own_keys(users: Users) -> None:
    writer = RedisWriter.from_url(users.url("agent-a"), "a")
    reader = RedisReader.from_url(users.url("agent-a"))
    try:
        await writer.join(cluster_record("a"))
        await writer.publish(service("a", "x"))
        await writer.publish(service("a", "y"))
        assert await writer.withdraw(RecordRef(Kind.SERVICE, "demo", "y")) is not None
        assert await writer.withdraw(RecordRef(Kind.SERVICE, "demo", "y")) is None
        for record in samples.every_kind("a"):  # every kind of record, under a's prefix
            await writer.publish(record)
        assert await writer.renew_lease(60_000, "token-a") is True
        snap = await reader.snapshot("a")
        assert snap.records["service/demo/x"] == encode_service(service("a", "x"))
        assert len(snap.records) == 1 + len(samples.every_kind("a"))
        await writer.replace_all([service("a", "z")], cluster_record("a"))
        await writer.release_lease()
        assert await reader.members() == {"a", "b"}
        assert await reader.live_leases(["a", "b"]) == {"b"}
    finally:
        await writer.close()
        await reader.close()


# Every way agent a could change b's records, or every cluster's at once.
FORBIDDEN_TO_AGENT_A = {
    "hset b records": ("HSET", keys.records("b"), "service/demo/echo", "{}"),
    "hdel b records": ("HDEL", keys.records("b"), "service/demo/echo"),
    "xadd b stream": ("XADD", keys.stream("b"), "*", "op", "resync", "key", ""),
    "xtrim b stream": ("XTRIM", keys.stream("b"), "MAXLEN", "0"),
    "set b lease": ("SET", keys.lease("b"), "stolen"),
    "del b lease": ("DEL", keys.lease("b")),
    "set b cluster": ("SET", keys.cluster_record("b"), "{}"),
    "del b records": ("DEL", keys.records("b")),
    "srem members": ("SREM", keys.MEMBERS, "b"),
    "del members": ("DEL", keys.MEMBERS),
    "spop members": ("SPOP", keys.MEMBERS),
    "keys": ("KEYS", "*"),
    "scan": ("SCAN", "0"),
    "randomkey": ("RANDOMKEY",),
    "flushall": ("FLUSHALL",),
    "flushdb": ("FLUSHDB",),
    "eval": ("EVAL", "return 1", "0"),
    "config set": ("CONFIG", "SET", "requirepass", "x"),
    "acl setuser": ("ACL", "SETUSER", "agent-a", "+@all", "~*"),
}


@pytest.mark.parametrize("command", FORBIDDEN_TO_AGENT_A.values(), ids=FORBIDDEN_TO_AGENT_A.keys())
async def test_agent_a_cannot_change_b_or_everything(
    users: Users, agent_a: Redis, command: tuple[str, ...]
) -> None:
    before = await b_state(users.server)
    with pytest.raises(NoPermissionError):
        await agent_a.execute_command(*command)  # type: ignore[no-untyped-call]
    assert await b_state(users.server) == before


async def test_writer_with_a_credentials_cannot_write_b(users: Users) -> None:
    before = await b_state(users.server)
    writer = RedisWriter.from_url(users.url("agent-a"), "b")
    try:
        for attempt in (
            writer.publish(service("b", "evil")),
            writer.withdraw(RecordRef(Kind.SERVICE, "demo", "echo")),
            writer.publish(samples.http_route("b")),
            writer.replace_all([], cluster_record("b")),
            writer.renew_lease(60_000, "stolen"),
            writer.release_lease(),
        ):
            with pytest.raises(RegistryUnavailableError) as caught:
                await attempt
            assert isinstance(caught.value.__cause__, ResponseError)
    finally:
        await writer.close()
    assert await b_state(users.server) == before


async def test_agent_may_only_add_members(users: Users, agent_a: Redis) -> None:
    assert await agent_a.sadd(keys.MEMBERS, "a") == 1
    assert await agent_a.smembers(keys.MEMBERS) == {b"a", b"b"}


@pytest.mark.parametrize("user", ["agent-a", HUB])
async def test_agent_and_hub_read_every_cluster(users: Users, user: str) -> None:
    reader = RedisReader.from_url(users.url(user))
    try:
        assert await reader.members() == {"b"}
        snap = await reader.snapshot("b")
        assert dict(snap.records) == {"service/demo/echo": encode_service(service("b"))}
        assert snap.record is not None and snap.position != START
        entries = await reader.read({"b": START, "a": START}, block_ms=0)
        assert [(e.cluster, e.op) for e in entries] == [("b", Op.RESYNC)]
        assert (await reader.stream_states(["b"]))["b"].last_id == snap.position
        assert await reader.live_leases(["a", "b"]) == {"b"}
        assert (await reader.cluster_records(["b"]))["b"] == snap.record
    finally:
        await reader.close()


FORBIDDEN_TO_HUB = {
    "hset": ("HSET", keys.records("b"), "service/demo/echo", "{}"),
    "xadd": ("XADD", keys.stream("b"), "*", "op", "resync", "key", ""),
    "set": ("SET", keys.lease("b"), "x"),
    "del": ("DEL", keys.cluster_record("b")),
    "sadd": ("SADD", keys.MEMBERS, "c"),
    "keys": ("KEYS", "*"),
    "scan": ("SCAN", "0"),
    "flushall": ("FLUSHALL",),
    "flushdb": ("FLUSHDB",),
}


@pytest.mark.parametrize("command", FORBIDDEN_TO_HUB.values(), ids=FORBIDDEN_TO_HUB.keys())
async def test_hub_cannot_write(users: Users, command: tuple[str, ...]) -> None:
    before = await b_state(users.server)
    hub = users.client(HUB)
    try:
        with pytest.raises(NoPermissionError):
            await hub.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        await hub.aclose()
    assert await b_state(users.server) == before


async def test_hub_writer_is_refused(users: Users) -> None:
    writer = RedisWriter.from_url(users.url(HUB), "b")
    try:
        with pytest.raises(RegistryUnavailableError):
            await writer.publish(service("b", "evil"))
    finally:
        await writer.close()


async def test_only_the_hub_writes_its_state_and_agents_read_it(users: Users) -> None:
    hub = RedisHubState.from_url(users.url(HUB))
    agent = RedisHubState.from_url(users.url("agent-a"))
    try:
        await hub.put("a", "hub-1", b'{"state": 1}')
        assert await agent.states("a") == {"hub-1": b'{"state": 1}'}
        assert await agent.states("b") == {}
        with pytest.raises(RegistryUnavailableError):
            await agent.put("a", "forged", b"{}")  # an agent cannot claim what Envoys did
        # A replica deletes another's report once it is stale: it may read them all.
        await hub.put("b", "hub-2", b'{"state": 2}')
        assert await hub.every_state() == {
            ("a", "hub-1"): b'{"state": 1}',
            ("b", "hub-2"): b'{"state": 2}',
        }
        await hub.drop("b", "hub-2")
        await hub.drop("a", "hub-1")
        assert await agent.states("a") == {}
        assert await hub.every_state() == {}
    finally:
        await hub.close()
        await agent.close()


async def test_applying_rules_again_replaces_the_password(users: Users) -> None:
    admin = users.server.async_admin_client()
    old = users.client("agent-a")
    new_password = secrets.token_urlsafe(16)
    try:
        await apply_users(admin, [agent_user_rules("a", new_password)])
        with pytest.raises(AuthenticationError):
            await old.ping()
        new = Redis.from_url(users.server.url(agent_user("a"), new_password))
        try:
            assert await new.ping()
            # The rules themselves are unchanged: still no writing b.
            with pytest.raises(NoPermissionError):
                await new.set(keys.lease("b"), "x")
        finally:
            await new.aclose()
    finally:
        await old.aclose()
        await admin.aclose()


def test_rules_refuse_ids_that_would_widen_the_key_pattern() -> None:
    for bad in ("*", "a*", "[ab]", "a:b", "A", "", "a b"):
        with pytest.raises(InvalidInputError):
            agent_user_rules(bad, "pw")
    with pytest.raises(InvalidInputError):
        agent_user_rules("a", "")
    with pytest.raises(InvalidInputError):
        hub_user_rules("hub user", "pw")


async def test_apply_users_reports_refused_rules_without_the_password(
    redis_server: RedisServer,
) -> None:
    admin = redis_server.async_admin_client()
    try:
        with pytest.raises(RegistryUnavailableError) as caught:
            await apply_users(admin, [["broken-user", ">hunter2", "+@nonsense"]])
        assert "hunter2" not in str(caught.value)
        assert isinstance(caught.value.__cause__, ResponseError)
    finally:
        await admin.execute_command("ACL", "DELUSER", "broken-user")  # type: ignore[no-untyped-call]
        await admin.aclose()


async def test_agent_may_only_ring_the_doorbell(users: Users, agent_a: Redis) -> None:
    """The doorbell (a Redis Cluster's change hint): agents XADD it and nothing else,
    so no agent can delete it or read-modify it for the others."""
    await agent_a.xadd(keys.DOORBELL, {"c": "a"}, maxlen=keys.DOORBELL_MAXLEN, approximate=True)
    for command in (("DEL", keys.DOORBELL), ("XTRIM", keys.DOORBELL, "MAXLEN", "0")):
        with pytest.raises(NoPermissionError):
            await agent_a.execute_command(*command)  # type: ignore[no-untyped-call]
    assert await agent_a.xlen(keys.DOORBELL) == 1  # and may read it, as readers do
