"""What the hub publishes to the agents: which Gateway configuration each cluster's
Envoys have applied.

The hub is the only process that sees the Envoys' ACKs and NACKs, and each cluster's
agent is the only writer of that cluster's objects; so the hub writes, per member cluster,
what its Envoys applied of each Gateway, and the agent turns that into the Gateway's
``Programmed`` condition. The hub writes only under its own prefix
(``fed:v2:{_hub}:``, which no cluster id can name: ids have no underscore), with a Redis
user allowed to write nothing else; agents read it like the rest of the registry.

One hash, ``fed:v2:{_hub}:programmed``, with a field ``<cluster>/<hub id>`` per hub
replica, so that replicas never overwrite each other; a value is opaque bytes here
(:mod:`federation.hub.programmed` has its codec). Both stores pass one contract test.
"""

from __future__ import annotations

from typing import Any, Protocol

from federation.registry import keys
from federation.registry.redis_store import unavailable
from federation.registry.topology import RegistryClient, client_from_url


class HubStateWriter(Protocol):
    async def put(self, cluster: str, hub_id: str, data: bytes) -> None:
        """Store this hub replica's state for ``cluster``."""

    async def drop(self, cluster: str, hub_id: str) -> None:
        """Forget a hub replica's state for ``cluster`` (the cluster left, the replica
        stopped, or its state is too old to count)."""

    async def every_state(self) -> dict[tuple[str, str], bytes]:
        """Every hub replica's state for every cluster, by (cluster, hub id)."""


class HubStateReader(Protocol):
    async def states(self, cluster: str) -> dict[str, bytes]:
        """Every hub replica's state for ``cluster``, by hub id."""


def _field(cluster: str, hub_id: str) -> str:
    return f"{cluster}/{hub_id}"


class RedisHubState:
    """Both sides on Redis: the hub writes with its own user, agents read with theirs."""

    def __init__(self, client: RegistryClient, *, owns_client: bool = False) -> None:
        self._client = client
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisHubState:
        return cls(client_from_url(url, options), owns_client=True)

    async def put(self, cluster: str, hub_id: str, data: bytes) -> None:
        with unavailable(f"hub state of {cluster}", self._client):
            await self._client.hset(keys.programmed(), _field(cluster, hub_id), data)

    async def drop(self, cluster: str, hub_id: str) -> None:
        with unavailable(f"hub state of {cluster}", self._client):
            await self._client.hdel(keys.programmed(), _field(cluster, hub_id))

    async def states(self, cluster: str) -> dict[str, bytes]:
        every = await self._every_state(f"hub state of {cluster}")
        return {hub_id: data for (c, hub_id), data in every.items() if c == cluster}

    async def every_state(self) -> dict[tuple[str, str], bytes]:
        return await self._every_state("hub states")

    async def _every_state(self, what: str) -> dict[tuple[str, str], bytes]:
        with unavailable(what, self._client):
            raw = await self._client.hgetall(keys.programmed())
        out = {}
        for field, value in (raw or {}).items():
            name = field.decode(errors="replace") if isinstance(field, bytes) else field
            cluster, sep, hub_id = name.partition("/")
            if sep:
                out[cluster, hub_id] = value if isinstance(value, bytes) else value.encode()
        return out

    async def close(self) -> None:
        if self._owns_client:
            with unavailable("close", self._client):
                await self._client.aclose()


class MemoryHubState:
    """Both sides in memory, for unit tests of the hub and the agent."""

    def __init__(self) -> None:
        self._fields: dict[str, bytes] = {}

    async def put(self, cluster: str, hub_id: str, data: bytes) -> None:
        self._fields[_field(cluster, hub_id)] = data

    async def drop(self, cluster: str, hub_id: str) -> None:
        self._fields.pop(_field(cluster, hub_id), None)

    async def states(self, cluster: str) -> dict[str, bytes]:
        prefix = f"{cluster}/"
        return {k[len(prefix) :]: v for k, v in self._fields.items() if k.startswith(prefix)}

    async def every_state(self) -> dict[tuple[str, str], bytes]:
        out = {}
        for name, data in self._fields.items():
            cluster, _, hub_id = name.partition("/")
            out[cluster, hub_id] = data
        return out
