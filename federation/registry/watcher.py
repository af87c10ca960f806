"""An always-current view of every cluster's records, built from a registry reader.

Used by every agent (to keep its ServiceImports in step) and by the hub. It
loads each member cluster's snapshot together with its stream position, then
tails all streams with one blocking read, and reloads a cluster in full when:

* a RESYNC entry says its agent replaced everything;
* its stream was trimmed past our position, or went backwards (failover);
* its cluster record's epoch changed (the agent republished).

When the registry has *lost* a cluster's data (restart without persistence,
FLUSHALL) the view keeps what it had (fail-static) until the agent
republishes: the consumers never see imports vanish and come back.

Records of every kind (:mod:`federation.registry.kinds`) are kept, by cluster
and kind; consumers are told which records changed, in which cluster (:class:`Change`).
Records that fail to decode are skipped, logged and counted; the previous good
version of that record, if any, is kept.

Leases: a joined cluster whose lease has expired is *stale*. Its exports stay
in the view (fail-static: a dead agent says nothing about its pods) unless
``withdraw_stale_after`` seconds are configured, after which they are
withdrawn from :meth:`exports` until the lease comes back. A lease the registry
*lost* (with the rest of the cluster's data) is not an expired one: the
cluster becomes stale only if its agent has not republished within its own
lease TTL (from its cluster record) after the loss was noticed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from federation.metrics import Sample
from federation.registry.kinds import Kind, Record, RecordRef, decode_record, parse_field
from federation.registry.records import (
    ClusterRecord,
    ExportedService,
    InvalidRecordError,
    decode_cluster,
    split_service_key,
)
from federation.registry.store import (
    START,
    ClusterSnapshot,
    Op,
    RegistryReader,
    RegistryTlsError,
    RegistryUnavailableError,
    StreamEntry,
    parse_id,
)
from federation.retry import retry_call

log = logging.getLogger(__name__)

#: The most entries of one stream a step reads.
READ_COUNT = 1000

ServiceName = tuple[str, str]


class Change(NamedTuple):
    """A record of ``cluster`` that changed (was added, updated or removed)."""

    cluster: str
    ref: RecordRef


ChangeCallback = Callable[[set[Change]], Awaitable[None]]


def service_names(changed: Iterable[Change]) -> set[ServiceName]:
    """The exported services among changed records."""
    return {(c.ref.namespace, c.ref.name) for c in changed if c.ref.kind is Kind.SERVICE}


def changed_clusters(changed: Iterable[Change], kinds: Iterable[Kind]) -> set[str]:
    """The clusters with a changed record of one of ``kinds``."""
    wanted = frozenset(kinds)
    return {c.cluster for c in changed if c.ref.kind in wanted}


#: Stream entries remembered per record for ``fedctl trace`` (the most recent).
ENTRIES_KEPT = 50_000


@dataclass
class WatcherStats:
    """Counters exposed as metrics by the processes that run a watcher."""

    entries: int = 0
    reloads: int = 0
    bad_records: int = 0
    errors: int = 0
    #: Seconds from each applied entry's append (its stream id is the registry's clock
    #: then) to this process applying it, summed; and the last one.
    lag_seconds_sum: float = 0.0
    last_lag_seconds: float = 0.0

    def applied(self, entry_id: str, now: float) -> None:
        """Count one applied stream entry and how long it took to reach us."""
        self.entries += 1
        lag = max(0.0, now - parse_id(entry_id)[0] / 1000)
        self.lag_seconds_sum += lag
        self.last_lag_seconds = lag


@dataclass
class ClusterView:
    """What the watcher knows of one cluster: its records by kind and ``namespace/name``."""

    cluster: str
    records: dict[Kind, dict[str, Record]] = field(default_factory=dict)
    record: ClusterRecord | None = None
    position: str = START
    #: When ``position`` last moved (Unix time): the view has every entry up to it.
    read_at: float = 0.0
    #: True while the registry has lost this cluster's data and we keep the last view.
    lost: bool = False
    #: When the loss was noticed (the watcher's clock), while ``lost``.
    lost_since: float | None = None

    def of(self, kind: Kind) -> dict[str, Record]:
        """The cluster's records of ``kind`` by ``namespace/name`` (a live dict)."""
        return self.records.setdefault(kind, {})

    @property
    def services(self) -> dict[str, ExportedService]:
        return cast(dict[str, ExportedService], self.of(Kind.SERVICE))

    def changes(self) -> set[Change]:
        """Every record of the cluster, as changes (when all of them count as changed)."""
        return {
            Change(self.cluster, RecordRef(kind, *split_service_key(key)))
            for kind, records in self.records.items()
            for key in records
        }


class RegistryWatcher:
    """Keeps :attr:`views` current and reports which services changed.

    ``on_change`` gets the records that changed (in any cluster); it is also called
    (possibly with an empty set) when a member cluster joins, so that consumers that keep
    something per member (the hub's node groups) learn of a cluster that exports nothing.
    """

    def __init__(
        self,
        reader: RegistryReader,
        on_change: ChangeCallback,
        *,
        block_ms: int = 500,
        check_interval: float = 0.5,
        withdraw_stale_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        track_entries: bool = False,
    ) -> None:
        """``track_entries``: remember each record's last stream entry in
        :attr:`entries` (the hub's part of ``fedctl trace``; agents need not)."""
        self._track_entries = track_entries
        self._reader = reader
        self._on_change = on_change
        self._block_ms = block_ms
        self._check_interval = check_interval
        self._withdraw_after = withdraw_stale_after
        self._clock = clock
        self.views: dict[str, ClusterView] = {}
        self.live: set[str] = set()
        self._stale_since: dict[str, float] = {}
        self._withdrawn: set[str] = set()
        self._last_check = 0.0
        #: Since when reads of the registry fail (``clock``); None while they succeed.
        self.failing_since: float | None = None
        #: Steps begun; the last step after which the view held everything the registry
        #: had when it began (:meth:`caught_up`); whether a caller wants the checks run.
        self._steps_begun = 0
        self._caught_up_to = 0
        self._check_wanted = False
        self._stepped = asyncio.Event()
        self.loaded = asyncio.Event()
        self.stats = WatcherStats()
        #: (cluster, record ref) -> (id of the last stream entry applied for it, when it
        #: was applied, Unix time): where ``fedctl trace`` finds a change. Most recent
        #: :data:`ENTRIES_KEPT` only.
        self.entries: OrderedDict[tuple[str, RecordRef], tuple[str, float]] = OrderedDict()

    # --- queries ------------------------------------------------------------

    def exports(self, namespace: str, name: str) -> list[ExportedService]:
        """Every current export of ``namespace/name``, withdrawn clusters excluded."""
        key = f"{namespace}/{name}"
        return [
            view.services[key]
            for cluster, view in sorted(self.views.items())
            if key in view.services and cluster not in self._withdrawn
        ]

    def position(self, cluster: str) -> tuple[str, float] | None:
        """The id of the last entry of ``cluster``'s stream the view includes, and when
        it got there (Unix time); None for a cluster it does not know."""
        view = self.views.get(cluster)
        return None if view is None else (view.position, view.read_at)

    def service_names(self) -> set[ServiceName]:
        """Every exported (namespace, name) that has at least one current export."""
        return {
            split_service_key(key)
            for cluster, view in self.views.items()
            if cluster not in self._withdrawn
            for key in view.services
        }

    def stale_clusters(self) -> set[str]:
        """Joined clusters whose lease has expired."""
        return set(self._stale_since)

    def withdrawn_clusters(self) -> set[str]:
        return set(self._withdrawn)

    def withdrawn_exporters(self, namespace: str, name: str) -> list[str]:
        """Withdrawn clusters that still have a record for ``namespace/name``."""
        key = f"{namespace}/{name}"
        return sorted(c for c in self._withdrawn if key in self.views[c].services)

    def records(self, cluster: str, kind: Kind) -> dict[str, Record]:
        """``cluster``'s records of ``kind`` by ``namespace/name`` (do not modify)."""
        view = self.views.get(cluster)
        return {} if view is None else view.of(kind)

    # --- running ------------------------------------------------------------

    async def run(self) -> None:
        """Load everything, set :attr:`loaded`, then follow changes until cancelled.

        Each step (the load, then every read) is retried through
        :func:`federation.retry.retry_call` while the registry is unavailable: backoff
        with jitter up to 5 s, one log line when it starts failing and one when it
        answers again, counted as ``federation_retries_total{operation="registry-read"}``.
        The view is kept meanwhile (fail-static). A TLS misconfiguration
        (:class:`RegistryTlsError`) before the first load is raised: the process stops
        with its message instead of waiting for a certificate to change; later it is
        retried like an outage, but logged as an error.
        """
        while True:
            await retry_call(
                "registry-read",
                self._advance,
                retry_if=self._retryable,
                logger=log,
                level=lambda err: (
                    logging.ERROR if isinstance(err, RegistryTlsError) else logging.WARNING
                ),
            )

    async def _advance(self) -> None:
        if not self.loaded.is_set():
            await self._load_all()
            self.loaded.set()
        await self.step()
        self.failing_since = None

    def _retryable(self, err: BaseException) -> bool:
        if isinstance(err, RegistryTlsError) and not self.loaded.is_set():
            return False
        if isinstance(err, RegistryUnavailableError):
            self.stats.errors += 1
            if self.failing_since is None:
                self.failing_since = self._clock()
            return True
        return False

    async def load(self) -> None:
        """Load every cluster once (for callers that drive :meth:`step` themselves)."""
        await self._load_all()
        self.loaded.set()

    def failing_for(self) -> float:
        """Seconds since reads of the registry started failing; 0 while they succeed."""
        return 0.0 if self.failing_since is None else self._clock() - self.failing_since

    async def caught_up(self) -> None:
        """Return once the view holds every change the registry had when this was
        called, passed to the callback: a read that began after the call has been
        applied with the consistency checks (new members, reloads, leases), and every
        stream was read to its end (a read takes at most :data:`READ_COUNT` entries of
        each). What a hub waits for before it answers an Envoy that comes from another
        replica, which may have read further than this one so far. Waits for as long as
        reads fail: bound it with a timeout."""
        target = self._steps_begun + 1
        self._check_wanted = True
        while self._caught_up_to < target:
            stepped = self._stepped
            await stepped.wait()

    async def step(self) -> None:
        """One blocking read of all streams plus, when due, the consistency checks."""
        self._steps_begun += 1
        begun = self._steps_begun
        check, self._check_wanted = self._check_wanted, False
        try:
            if await self._read_and_apply(check):
                self._caught_up_to = max(self._caught_up_to, begun)
        except BaseException:
            self._check_wanted |= check  # still owed to a caught_up() caller
            raise
        finally:
            self._stepped.set()
            self._stepped = asyncio.Event()

    async def _read_and_apply(self, check: bool) -> bool:
        """One step; whether it read every stream to its end."""
        positions = {c: v.position for c, v in self.views.items()}
        entries = await self._reader.read(positions, self._block_ms, READ_COUNT)
        changed: set[Change] = set()
        trimmed = await self._trimmed_past({e.cluster for e in entries}, positions)
        for cluster in sorted(trimmed):
            changed |= await self._reload(cluster)
        for entry in entries:
            if entry.cluster not in trimmed:
                changed |= await self._apply(entry)
        due = self._clock() - self._last_check >= self._check_interval
        if check or due or not positions:
            changed |= await self._check()
        if changed or self.views.keys() != positions.keys():
            await self._on_change(changed)
        per_stream = Counter(e.cluster for e in entries)
        return all(n < READ_COUNT for n in per_stream.values())

    async def _trimmed_past(self, clusters: set[str], positions: dict[str, str]) -> set[str]:
        """Clusters whose stream lost entries after our position before we read them.

        Checked against the position from *before* the read: once the surviving
        entries were applied, the gap could no longer be seen.
        """
        if not clusters:
            return set()
        states = await self._reader.stream_states(sorted(clusters))
        return {
            c
            for c, state in states.items()
            if parse_id(state.max_deleted_id) > parse_id(positions[c])
        }

    async def _load_all(self) -> None:
        members = set(self.views)
        changed: set[Change] = set()
        for cluster in sorted(await self._reader.members()):
            changed |= await self._reload(cluster)
        changed |= await self._check()
        if (changed or self.views.keys() != members) and self.loaded.is_set():
            await self._on_change(changed)

    # --- applying changes ---------------------------------------------------

    def _bad(self, cluster: str, key: str, err: InvalidRecordError) -> None:
        self.stats.bad_records += 1
        log.error(
            "skipping bad registry record",
            extra={"cluster": cluster, "key": key, "error": str(err)},
        )

    def _decode(self, cluster: str, ref: RecordRef, data: bytes) -> Record | None:
        try:
            rec = decode_record(ref.kind, data)
            if rec.cluster != cluster or (rec.namespace, rec.name) != (ref.namespace, ref.name):
                raise InvalidRecordError(
                    f"record for {rec.cluster}/{rec.namespace}/{rec.name} stored under "
                    f"{cluster}/{ref.field}"
                )
            return rec
        except InvalidRecordError as err:
            self._bad(cluster, ref.field, err)
            return None

    async def _apply(self, entry: StreamEntry) -> set[Change]:
        view = self.views.get(entry.cluster)
        if view is None or parse_id(entry.id) <= parse_id(view.position):
            return set()  # already covered by a snapshot loaded after this entry
        self.stats.applied(entry.id, time.time())
        view.position, view.read_at = entry.id, time.time()
        ref = entry.ref
        if entry.op is Op.RESYNC or ref is None:
            return await self._reload(entry.cluster)
        if self._track_entries:
            self.entries[(entry.cluster, ref)] = (entry.id, time.time())
            self.entries.move_to_end((entry.cluster, ref))
            while len(self.entries) > ENTRIES_KEPT:
                self.entries.popitem(last=False)
        records = view.of(ref.kind)
        key = f"{ref.namespace}/{ref.name}"
        if entry.op is Op.DELETE:
            removed = records.pop(key, None) is not None
            return {Change(entry.cluster, ref)} if removed else set()
        rec = self._decode(entry.cluster, ref, entry.record or b"")
        if rec is None or records.get(key) == rec:
            return set()
        records[key] = rec
        return {Change(entry.cluster, ref)}

    async def _reload(self, cluster: str) -> set[Change]:
        snapshot = await self._reader.snapshot(cluster)
        self.stats.reloads += 1
        view = self.views.setdefault(cluster, ClusterView(cluster))
        if snapshot.record is None:
            # The registry lost this cluster (or it never finished joining):
            # keep what we have until its agent republishes.
            self._set_lost(view, any(view.records.values()) or view.record is not None)
            view.position, view.read_at = snapshot.position, time.time()
            return set()
        return self._replace(view, snapshot)

    def _replace(self, view: ClusterView, snapshot: ClusterSnapshot) -> set[Change]:
        records: dict[Kind, dict[str, Record]] = {}
        for field_name, data in snapshot.records.items():
            try:
                ref = parse_field(field_name)  # a bad field must not break later lookups
            except InvalidRecordError as err:
                self._bad(view.cluster, field_name, err)
                continue
            key = f"{ref.namespace}/{ref.name}"
            rec = self._decode(view.cluster, ref, data)
            if rec is None:
                rec = view.of(ref.kind).get(key)  # keep the last good version
            if rec is not None:
                records.setdefault(ref.kind, {})[key] = rec
        try:
            view.record = decode_cluster(snapshot.record or b"")
        except InvalidRecordError as err:
            self.stats.bad_records += 1
            log.error("bad cluster record", extra={"cluster": view.cluster, "error": str(err)})
        changed: set[Change] = set()
        for kind in records.keys() | view.records.keys():
            new, old = records.get(kind, {}), view.records.get(kind, {})
            changed.update(
                Change(view.cluster, RecordRef(kind, *split_service_key(k)))
                for k in new.keys() | old.keys()
                if new.get(k) != old.get(k)
            )
        view.records = records
        view.position, view.read_at = snapshot.position, time.time()
        self._set_lost(view, False)
        return changed

    # --- consistency checks -------------------------------------------------

    async def _check(self) -> set[Change]:
        self._last_check = self._clock()
        changed: set[Change] = set()
        for cluster in sorted(await self._reader.members() - set(self.views)):
            changed |= await self._reload(cluster)
        clusters = sorted(self.views)
        states = await self._reader.stream_states(clusters)
        records = await self._reader.cluster_records(clusters)
        for cluster in clusters:
            view = self.views[cluster]
            if self._needs_reload(
                view,
                states[cluster].exists,
                states[cluster].last_id,
                states[cluster].max_deleted_id,
                records[cluster],
            ):
                changed |= await self._reload(cluster)
        changed |= self._update_leases(await self._reader.live_leases(clusters))
        return changed

    def _needs_reload(
        self,
        view: ClusterView,
        exists: bool,
        last_id: str,
        max_deleted: str,
        raw_record: bytes | None,
    ) -> bool:
        position = parse_id(view.position)
        if raw_record is None:
            if not view.lost and (any(view.records.values()) or view.record is not None):
                log.warning(
                    "registry lost cluster data; keeping last view", extra={"cluster": view.cluster}
                )
                self._set_lost(view, True)
            # Tail the new stream from its start once the agent republishes.
            view.position = START
            return False
        if view.lost or view.record is None:
            return True
        try:
            epoch = decode_cluster(raw_record).epoch
        except InvalidRecordError:
            return False
        if epoch != view.record.epoch:
            return True
        if not exists or parse_id(last_id) < position:
            return True  # went backwards: failover to a replica that is behind
        return parse_id(max_deleted) > position  # trimmed past us: entries were lost

    def _set_lost(self, view: ClusterView, lost: bool) -> None:
        if lost and not view.lost:
            view.lost_since = self._clock()
        elif not lost:
            view.lost_since = None
        view.lost = lost

    def lease_ttl(self, cluster: str) -> float:
        """The lease TTL ``cluster``'s agent says it uses (0: unknown)."""
        view = self.views.get(cluster)
        return view.record.lease_ttl if view is not None and view.record is not None else 0.0

    def _lease_unknown(self, view: ClusterView, now: float) -> bool:
        """A lease key the registry lost is not an expired lease: for one TTL after the
        loss was noticed, a live agent is still republishing it."""
        return (
            view.lost
            and view.lost_since is not None
            and now - view.lost_since < self.lease_ttl(view.cluster)
        )

    def _update_leases(self, live: set[str]) -> set[Change]:
        now = self._clock()
        flipped = set()
        for cluster, view in self.views.items():
            if view.record is None and not view.lost:
                continue
            if cluster not in live and self._lease_unknown(view, now):
                continue
            if cluster in live:
                if self._stale_since.pop(cluster, None) is not None:
                    flipped.add(cluster)
                    self._withdrawn.discard(cluster)
            elif cluster not in self._stale_since:
                self._stale_since[cluster] = now
                flipped.add(cluster)
            if (
                self._withdraw_after is not None
                and cluster in self._stale_since
                and cluster not in self._withdrawn
                and now - self._stale_since[cluster] >= self._withdraw_after
            ):
                self._withdrawn.add(cluster)
                flipped.add(cluster)
        self.live = live
        return {
            Change(c, RecordRef(Kind.SERVICE, *split_service_key(k)))
            for c in flipped
            for k in self.views[c].services
        }

    def clusters(self) -> Iterable[str]:
        return sorted(self.views)


def registry_samples(watcher: RegistryWatcher) -> list[Sample]:
    """The watcher's counters as metrics, for every process that runs one."""
    stats = watcher.stats
    return [
        Sample(
            "federation_registry_stale_clusters",
            "gauge",
            "member clusters whose lease expired",
            len(watcher.stale_clusters()),
        ),
        Sample(
            "federation_registry_entries_total", "counter", "stream entries applied", stats.entries
        ),
        Sample(
            "federation_registry_lag_seconds_total",
            "counter",
            "seconds from each entry's append to the registry to its application here, "
            "summed (divided by the entries' rate: the mean lag)",
            stats.lag_seconds_sum,
        ),
        Sample(
            "federation_registry_last_lag_seconds",
            "gauge",
            "seconds from the last applied entry's append to the registry to its application "
            "(kept until the next entry)",
            stats.last_lag_seconds,
        ),
        Sample(
            "federation_registry_reloads_total",
            "counter",
            "full reloads of a cluster from a snapshot",
            stats.reloads,
        ),
        Sample(
            "federation_registry_bad_records_total",
            "counter",
            "registry records skipped because they could not be decoded",
            stats.bad_records,
        ),
        Sample(
            "federation_registry_errors_total",
            "counter",
            "registry reads that failed",
            stats.errors,
        ),
    ]
