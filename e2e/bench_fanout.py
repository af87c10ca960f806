"""The fan-out benchmark: many ADS streams on one hub, connected as real Envoys connect.

The real ADS server runs in this process, with mTLS and the hub's limits as they ship
(at most 1,024 streams per cluster identity, 128 per connection, a million names per
identity). Clients connect as Envoys do:

* every stream is an Envoy of its own: its own channel, so its own HTTP/2 connection
  (gRPC Python shares one connection between channels to one target unless each has
  its own subchannel pool);
* the streams are spread over cluster identities (``fedctl pki`` certificates) of at
  most :data:`STREAMS_PER_IDENTITY` each, one client process per identity, so that
  each peer stays within its limits and no single client process is what gets
  measured;
* each stream subscribes to CDS, then EDS for every cluster, and ACKs every response.

Printed per run, for 1,000 streams (the scale measured before) and the scale asked for,
in the same run: the streams the hub admitted and refused, the time until every stream
had ACKed the initial state, the hub's memory per idle stream, then one
ClusterLoadAssignment change until every client process had seen every stream ACK it
(and until the hub's sync registry had every stream synced), with the hub's CPU time
meanwhile and its RSS; last, the xDS server is stopped and started again on its address
(the snapshots kept: what is timed is the Envoys reconnecting, with their back-off, and
being sent everything again, not the registry's load) until every Envoy has the whole
state again. Everything listens on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from e2e.bench_xds import NAMESPACE, rss_mib
from e2e.cluster import REPO_ROOT, free_port
from e2e.xds_resources import eds_cluster, loopback_assignment
from federation.cli import pki
from federation.pki import DEFAULT_TRUST_DOMAIN
from federation.xds.peers import CertificateGroup
from federation.xds.server import serve
from federation.xds.snapshot import CLUSTER, ENDPOINT, Snapshot, SnapshotCache
from federation.xds.status import SyncRegistry, XdsMetrics
from federation.xds.tls import TlsFiles, reloading_credentials

#: Streams per cluster identity (and client process): within the hub's 1,024 per peer.
STREAMS_PER_IDENTITY = 1000
#: The scale measured before this benchmark connected as Envoys do, run beside.
BASELINE_STREAMS = 1000
#: EDS names each stream subscribes to.
RESOURCES = 100
#: An Envoy's back-off between attempts to open its ADS stream (the bootstrap's).
RETRY_BASE = 0.25
RETRY_MAX = 5.0
#: A client process's broken streams, by gRPC status.
BROKEN: dict[str, int] = {}


def raise_open_files() -> None:
    """Every stream is a connection (a file descriptor on both sides): raise this
    process's soft limit to its hard one."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def names(count: int) -> list[str]:
    return [f"clusterset/{NAMESPACE}/s{i}/80" for i in range(count)]


# --- the client side: one process per identity ------------------------------------------


@dataclass
class Counts:
    """Envoys of this process with the initial state, the changed one, and the state
    again after the hub restarted; and streams refused before their initial state."""

    total: int
    initial: int = 0
    updated: int = 0
    resynced: int = 0
    refused: int = 0


async def _one_stream(
    stub: Any, node: dict[str, str], subscribed: list[str], on_eds: Callable[[int], None]
) -> bool:
    """One SotW ADS stream: CDS, then EDS for ``subscribed``; every response ACKed, and
    ``on_eds(n)`` told of the n-th EDS response. Whether it ended by an error."""
    call = stub.StreamAggregatedResources()
    eds = 0
    try:
        await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return False
            ack = discovery_pb2.DiscoveryRequest(
                type_url=response.type_url,
                version_info=response.version_info,
                response_nonce=response.nonce,
            )
            if response.type_url == CLUSTER:
                await call.write(ack)
                if eds == 0:
                    request = discovery_pb2.DiscoveryRequest(
                        type_url=ENDPOINT, resource_names=subscribed
                    )
                    await call.write(request)
            elif response.type_url == ENDPOINT:
                ack.resource_names.extend(subscribed)
                await call.write(ack)
                eds += 1
                on_eds(eds)
    except grpc.aio.AioRpcError as err:
        code = err.code().name
        BROKEN[code] = BROKEN.get(code, 0) + 1
        return True
    finally:
        call.cancel()


async def _envoy(
    channel: grpc.aio.Channel,
    index: int,
    subscribed: list[str],
    counts: Counts,
    changed: asyncio.Event,
) -> None:
    """One Envoy: its ADS stream, opened again when it breaks or is refused (after
    0.25 s, doubling up to 5 s, as the bootstrap's back-off), as when the hub restarts;
    every refusal is counted (``refused``)."""
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    node = {"id": f"bench-{os.getpid()}-{index}"}  # the certificate names the cluster
    opened = 0
    backoff = RETRY_BASE

    got: set[str] = set()  # this Envoy's progress: initial, updated, resynced
    first = 0  # which of its streams brought the initial state

    def on_eds(n: int) -> None:
        nonlocal first
        if "initial" not in got:
            if n == 1:
                got.add("initial")
                first = opened
                counts.initial += 1
        elif opened == first:
            if n == 2 and "updated" not in got:
                got.add("updated")
                counts.updated += 1
        elif n == 1 and "resynced" not in got:
            got.add("resynced")
            counts.resynced += 1
        changed.set()

    while True:
        opened += 1
        await _one_stream(stub, node, subscribed, on_eds)
        if "initial" not in got:
            counts.refused += 1  # refused (or broken) before the initial state: again
        await asyncio.sleep(backoff * random.uniform(0.5, 1.0))  # bounded: 5 s at most
        backoff = min(backoff * 2, RETRY_MAX)


async def _client(address: str, identity: Path, streams: int, timeout: float) -> None:
    raise_open_files()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(identity / "ca.crt").read_bytes(),
        private_key=(identity / "tls.key").read_bytes(),
        certificate_chain=(identity / "tls.crt").read_bytes(),
    )
    # Its own subchannel pool: a connection of its own, as every Envoy has.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.secure_channel(address, credentials, options) for _ in range(streams)]
    counts = Counts(streams)
    changed = asyncio.Event()
    subscribed = names(RESOURCES)
    tasks = [
        asyncio.create_task(_envoy(c, i, subscribed, counts, changed))
        for i, c in enumerate(channels)
    ]

    async def until(done: Callable[[], int]) -> None:
        while done() < streams:
            changed.clear()
            await changed.wait()

    try:
        async with asyncio.timeout(timeout):
            await until(lambda: counts.initial)
            print(f"initial {counts.initial} refused {counts.refused} {BROKEN}", flush=True)
            await until(lambda: counts.updated)
            print(f"updated {counts.updated}", flush=True)
            await until(lambda: counts.resynced)
            print(f"resynced {counts.resynced}", flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # open until the hub has looked
    except TimeoutError:
        print(f"timeout {counts} broken streams by status {BROKEN}", flush=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()


def client_main(address: str, identity: str, streams: int, timeout: float) -> None:
    """One client process: ``streams`` Envoys of the identity in directory ``identity``.

    Prints ``initial N refused M`` once every stream has the initial state (M: streams
    refused or broken before it, opened again),
    ``updated N`` once every stream has ACKed a second ClusterLoadAssignment version,
    ``resynced N`` once every Envoy has the state again on a new stream after the hub
    restarted (or ``timeout ...``); exits when its standard input closes.
    """
    asyncio.run(_client(address, Path(identity), streams, timeout))


# --- the hub side ------------------------------------------------------------------------


async def _line(proc: asyncio.subprocess.Process, timeout: float) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        return (await proc.stdout.readline()).decode().strip()


async def _all_lines(procs: list[asyncio.subprocess.Process], timeout: float) -> list[str]:
    """The next line of every client, or ``no answer`` for one silent ``timeout`` s."""

    async def one(proc: asyncio.subprocess.Process) -> str:
        try:
            return await _line(proc, timeout)
        except TimeoutError:
            return f"no answer in {timeout:g} s"

    return list(await asyncio.gather(*(one(p) for p in procs)))


def _count(lines: list[str], word: str) -> int:
    """The sum of ``<word> N`` over the clients' lines."""
    return sum(int(line.split()[1]) for line in lines if line.startswith(word + " "))


class Hub:
    """The ADS server as the hub runs it (mTLS, its limits), on one address, with a
    snapshot for each identity's cluster; started again by :meth:`restart`."""

    def __init__(self, pki_dir: Path, identities: list[str]) -> None:
        hub = pki_dir / "hub"
        self.files = TlsFiles(hub / "tls.crt", hub / "tls.key", hub / "ca.crt")
        self.identities = identities
        self.subscribed = names(RESOURCES)
        self.cache = SnapshotCache()
        snapshot = Snapshot.build(
            [
                *(eds_cluster(n) for n in self.subscribed),
                *(loopback_assignment(n, range(8080, 8090)) for n in self.subscribed),
            ]
        )
        for identity in identities:
            self.cache.set(identity, snapshot)
        self.cache.mark_ready()
        self.address = f"127.0.0.1:{free_port()}"
        self.server: grpc.aio.Server | None = None
        self.metrics = XdsMetrics()
        self.sync = SyncRegistry(self.cache.snapshot_versions)

    async def start(self) -> None:
        self.metrics = XdsMetrics()
        self.sync = SyncRegistry(self.cache.snapshot_versions)
        self.server = await serve(
            self.cache,
            self.sync,
            self.address,
            metrics=self.metrics,
            credentials=reloading_credentials(self.files),
            node_group=CertificateGroup(DEFAULT_TRUST_DOMAIN),
        )

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
            self.server = None

    def change_one_endpoint(self) -> None:
        """The first assignment's endpoints go unhealthy, in every identity's cluster."""
        first = self.subscribed[0]
        changed = {first: loopback_assignment(first, (8080,), False)}
        for identity in self.identities:
            self.cache.update(identity, ENDPOINT, changed)

    async def synced_after(self, since: float, streams: int) -> str:
        """When every one of ``streams`` streams was synced, by the hub's sync registry.

        Checked every 20 ms, not on every recorded change as ``SyncRegistry.wait_for``
        would: each check lists every stream, and with 10,000 streams ACKing, a check
        per ACK costs the hub more than what is measured."""
        sync = self.sync
        deadline = time.perf_counter() + 30
        while not (len(sync) >= streams and all(s.synced for s in sync.list())):
            if time.perf_counter() > deadline:
                synced = sum(1 for s in sync.list() if s.synced)
                return f"{synced} of {len(sync)} streams synced 30 s after"
            await asyncio.sleep(0.02)  # a bounded poll of the measurement, see above
        return f"{len(sync)} streams synced {(time.perf_counter() - since) * 1000:.0f} ms after"


async def _clients(
    hub: Hub, pki_dir: Path, streams: int, timeout: float
) -> list[asyncio.subprocess.Process]:
    """One client process per identity, :data:`STREAMS_PER_IDENTITY` streams each."""
    shares = [STREAMS_PER_IDENTITY] * (len(hub.identities) - 1)
    shares.append(streams - sum(shares))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), GRPC_VERBOSITY="ERROR")
    procs = []
    for identity, share in zip(hub.identities, shares, strict=True):
        directory = str(pki_dir / "clusters" / identity)
        code = (
            "from e2e.bench_fanout import client_main; "
            f"client_main({hub.address!r}, {directory!r}, {share}, {timeout})"
        )
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                code,
                env=env,
                cwd=str(REPO_ROOT),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
        )
    return procs


async def _stop_clients(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.stdin is not None:
            proc.stdin.close()
    for proc in procs:
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _run(streams: int, timeout: float) -> None:
    identities = [f"fanout{i}" for i in range(-(-streams // STREAMS_PER_IDENTITY))]
    with tempfile.TemporaryDirectory(prefix="fanout-pki-") as directory:
        pki_dir = Path(directory)
        pki.init(pki_dir, clusters=identities, hub_ips=["127.0.0.1"])
        hub = Hub(pki_dir, identities)
        await hub.start()
        before = rss_mib()
        procs = await _clients(hub, pki_dir, streams, timeout)
        try:
            await _measure(hub, procs, streams, before, timeout)
        finally:
            await _stop_clients(procs)
            await hub.stop()


async def _measure(
    hub: Hub, procs: list[asyncio.subprocess.Process], streams: int, before: float, timeout: float
) -> None:
    began = time.perf_counter()
    lines = await _all_lines(procs, timeout + 10)
    initial = time.perf_counter() - began
    refused = sum(hub.metrics.refusals.values())
    idle = rss_mib()
    print(
        f"  {len(procs)} client processes (one per cluster identity), one connection per "
        f"stream: {len(hub.sync)} streams admitted, {refused} refused "
        f"({dict(hub.metrics.refusals)}); every stream had the initial state after "
        f"{initial:.1f} s ({_count(lines, 'initial')} streams; "
        f"{sum(int(x.split()[3]) for x in lines if x.startswith('initial'))} streams broken "
        f"before it on the way, each opened again after the back-off)"
    )
    broken = [x.split(" ", 4)[4] for x in lines if x.startswith("initial") and x.count(" ") >= 4]
    if any(b != "{}" for b in broken):
        print(f"  their gRPC statuses, per client process: {', '.join(broken)}")
    print(
        f"  hub RSS {idle:.0f} MiB with the streams idle, {before:.0f} MiB before: "
        f"{(idle - before) * 1024 / max(1, len(hub.sync)):.0f} KiB per idle stream"
    )
    if any(not line.startswith("initial") for line in lines):
        print(f"  stopped: {lines}")
        return
    cpu = time.process_time()
    changed_at = time.perf_counter()
    hub.change_one_endpoint()
    lines = await _all_lines(procs, timeout + 10)
    elapsed = time.perf_counter() - changed_at
    cpu = time.process_time() - cpu
    print(
        f"  one ClusterLoadAssignment changed -> every stream ACKed it: {elapsed * 1000:.0f} ms "
        f"({_count(lines, 'updated')} streams; hub CPU meanwhile {cpu * 1000:.0f} ms); the "
        f"hub's sync registry: {await hub.synced_after(changed_at, streams)}"
    )
    print(f"  hub RSS {rss_mib():.0f} MiB (peak {rss_mib(peak=True):.0f} MiB)")
    if any(not line.startswith("updated") for line in lines):
        print(f"  stopped: {lines}")
        return
    await hub.stop()
    restarted = time.perf_counter()
    await hub.start()
    lines = await _all_lines(procs, timeout + 10)
    elapsed = time.perf_counter() - restarted
    synced = await hub.synced_after(restarted, streams)
    print(
        f"  xDS server restarted (its snapshots kept) -> every Envoy reconnected (back-off "
        f"{RETRY_BASE:g}-{RETRY_MAX:g} s) and had the whole state again: {elapsed:.1f} s "
        f"({_count(lines, 'resynced')} streams); the hub's sync registry: {synced}"
    )


def bench_fanout(streams: int = 10_000, timeout: float = 300.0) -> None:
    """1,000 streams, then ``streams``, in one run (see the module docstring)."""
    raise_open_files()
    for count in dict.fromkeys((BASELINE_STREAMS, streams)):
        print(f"fan-out: {count} ADS streams (SotW), {RESOURCES} clusters and assignments each")
        asyncio.run(_run(count, timeout))
