"""The registry store seam: Protocols the Redis and in-memory stores implement.

A :class:`RegistryWriter` is scoped to one cluster and used by that cluster's
agent; a :class:`RegistryReader` sees every cluster and is used by
``watcher.RegistryWatcher`` (in every agent and in the hub). Readers return
raw record bytes: decoding, and skipping bad records, happens in the watcher,
in one place.

Both implementations pass the same contract tests
(tests/integration/test_registry_contract.py). Errors of the backend are
raised as :class:`RegistryUnavailableError`, chained to the original.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from federation.errors import FederationError
from federation.registry.kinds import Record, RecordRef
from federation.registry.records import ClusterRecord

#: The position before the first entry of a stream.
START = "0-0"


class RegistryUnavailableError(FederationError):
    """The registry could not be reached or refused the operation."""


class RegistryTlsError(RegistryUnavailableError):
    """The TLS handshake with the registry failed on configuration, not on the network:
    the server's certificate did not verify, or the server refused ours.

    Retrying does not help until a certificate or a setting changes, so processes fail
    at start-up on it, and log it as an error (once) when it happens later.
    """


class Op(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"
    #: The cluster's records were replaced wholesale: reload it from a snapshot.
    RESYNC = "resync"


@dataclass(frozen=True)
class StreamEntry:
    """One change from a cluster's stream."""

    cluster: str
    id: str
    op: Op
    #: Which record changed (None for RESYNC).
    ref: RecordRef | None = None
    #: The record's bytes on UPSERT.
    record: bytes | None = None


@dataclass(frozen=True)
class ClusterSnapshot:
    """A cluster's records and stream position, read atomically together."""

    cluster: str
    #: ``<kind>/<namespace>/<name>`` (:func:`federation.registry.kinds.field`) -> bytes.
    records: Mapping[str, bytes] = field(default_factory=dict)
    #: The raw cluster record; None when the cluster has not joined (or data was lost).
    record: bytes | None = None
    #: Tail the stream after this id to see every later change exactly once.
    position: str = START


@dataclass(frozen=True)
class StreamState:
    """What a reader needs to tell whether its position is still valid."""

    exists: bool
    #: Id of the newest entry ever added (START when the stream does not exist).
    last_id: str = START
    #: Newest id removed by trimming (START when nothing was trimmed).
    max_deleted_id: str = START


def parse_id(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence) pairs."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RegistryWriter(Protocol):
    """One cluster's agent writing its own keys (and nothing else)."""

    @property
    def cluster(self) -> str: ...

    async def join(self, record: ClusterRecord) -> None:
        """Add the cluster to the members and store its cluster record."""

    async def publish(self, record: Record) -> str:
        """Store ``record`` and append an UPSERT to the stream, atomically; the entry's id
        (``<ms>-<seq>``: which ``fedctl trace`` follows the change by)."""

    async def withdraw(self, ref: RecordRef) -> str | None:
        """Remove a record and append a DELETE; the entry's id, or None (and no entry) if
        the record was absent."""

    async def replace_all(self, records: Sequence[Record], record: ClusterRecord) -> str:
        """Make the cluster's records exactly ``records`` and store ``record``; the id of
        the RESYNC entry.

        Atomic; joins the cluster and appends one RESYNC entry. Used on agent
        start and whenever the registry lost the cluster's data.
        """

    async def renew_lease(self, ttl_ms: int, token: str) -> bool:
        """Set the lease (value ``token``) to expire in ``ttl_ms``.

        Returns False when the cluster record is gone (Redis restarted
        without persistence, was flushed, or failed over to a replica that
        lacks it), or when writes this writer was told were done are gone (a
        failover to a replica that had not received them; the Redis store
        counts its transactions to see it): the caller must ``replace_all``
        its whole state.
        """

    async def release_lease(self) -> None:
        """Delete the lease on clean shutdown (records stay: fail-static)."""

    async def close(self) -> None: ...


class RegistryReader(Protocol):
    """A reader of every cluster's keys."""

    async def members(self) -> set[str]:
        """Ids of every cluster that joined."""

    async def snapshot(self, cluster: str) -> ClusterSnapshot:
        """The cluster's records, cluster record and stream position, atomically."""

    async def read(
        self, positions: Mapping[str, str], block_ms: int, count: int = 1000
    ) -> list[StreamEntry]:
        """Entries after each cluster's position, oldest first per cluster.

        Blocks up to ``block_ms`` when there are none (0: do not block).
        """

    async def stream_states(self, clusters: Iterable[str]) -> dict[str, StreamState]:
        """Each cluster's stream state, to detect trimming and going backwards."""

    async def live_leases(self, clusters: Iterable[str]) -> set[str]:
        """The clusters among ``clusters`` whose lease has not expired."""

    async def cluster_records(self, clusters: Iterable[str]) -> dict[str, bytes | None]:
        """Each cluster's raw cluster record (None when absent)."""

    async def close(self) -> None: ...
