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
meanwhile and its RSS. Everything listens on 127.0.0.1 and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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
    """Streams of this process with the initial state, and with the changed one."""

    total: int
    initial: int = 0
    updated: int = 0
    failed: int = 0


async def _stream(
    channel: grpc.aio.Channel,
    index: int,
    subscribed: list[str],
    counts: Counts,
    changed: asyncio.Event,
) -> None:
    """One Envoy's SotW ADS stream: CDS, then EDS for ``subscribed``; ACK everything."""
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    call = stub.StreamAggregatedResources()
    node = {"id": f"bench-{os.getpid()}-{index}"}  # the certificate names the cluster
    eds = 0
    try:
        await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
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
                if eds == 1:
                    counts.initial += 1
                elif eds == 2:
                    counts.updated += 1
                if counts.updated == counts.total or counts.initial == counts.total:
                    changed.set()
    except grpc.aio.AioRpcError:
        counts.failed += 1
        changed.set()
    finally:
        call.cancel()


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
        asyncio.create_task(_stream(c, i, subscribed, counts, changed))
        for i, c in enumerate(channels)
    ]
    try:
        async with asyncio.timeout(timeout):
            while counts.initial + counts.failed < streams:
                changed.clear()
                await changed.wait()
            print(f"initial {counts.initial} failed {counts.failed}", flush=True)
            while counts.updated + counts.failed < streams:
                changed.clear()
                await changed.wait()
            print(f"updated {counts.updated}", flush=True)
            await asyncio.to_thread(sys.stdin.readline)  # open until the hub has looked
    except TimeoutError:
        print(f"timeout initial={counts.initial} updated={counts.updated}", flush=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()


def client_main(address: str, identity: str, streams: int, timeout: float) -> None:
    """One client process: ``streams`` Envoys of the identity in directory ``identity``.

    Prints ``initial N failed M`` once every stream has the initial state (or failed),
    then ``updated N`` once every stream has ACKed a second ClusterLoadAssignment
    version (or ``timeout ...``); exits when its standard input closes.
    """
    asyncio.run(_client(address, Path(identity), streams, timeout))


# --- the hub side ------------------------------------------------------------------------


async def _line(proc: asyncio.subprocess.Process, timeout: float) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        return (await proc.stdout.readline()).decode().strip()


async def _all_lines(procs: list[asyncio.subprocess.Process], timeout: float) -> list[str]:
    return list(await asyncio.gather(*(_line(p, timeout) for p in procs)))


def _count(lines: list[str], word: str) -> int:
    """The sum of ``<word> N`` over the clients' lines."""
    return sum(int(line.split()[1]) for line in lines if line.startswith(word + " "))


async def _run(streams: int, timeout: float) -> None:
    identities = [f"fanout{i}" for i in range(-(-streams // STREAMS_PER_IDENTITY))]
    with tempfile.TemporaryDirectory(prefix="fanout-pki-") as directory:
        root = Path(directory)
        pki.init(root, clusters=identities, hub_ips=["127.0.0.1"])
        hub = root / "hub"
        files = TlsFiles(hub / "tls.crt", hub / "tls.key", hub / "ca.crt")
        cache = SnapshotCache()
        metrics = XdsMetrics()
        sync = SyncRegistry(cache.snapshot_versions)
        subscribed = names(RESOURCES)
        snapshot = Snapshot.build(
            [
                *(eds_cluster(n) for n in subscribed),
                *(loopback_assignment(n, range(8080, 8090)) for n in subscribed),
            ]
        )
        for identity in identities:
            cache.set(identity, snapshot)
        cache.mark_ready()
        address = f"127.0.0.1:{free_port()}"
        server = await serve(
            cache,
            sync,
            address,
            metrics=metrics,
            credentials=reloading_credentials(files),
            node_group=CertificateGroup(DEFAULT_TRUST_DOMAIN),
        )
        before = rss_mib()
        procs = []
        try:
            shares = [STREAMS_PER_IDENTITY] * (len(identities) - 1)
            shares.append(streams - sum(shares))
            env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
            for identity, share in zip(identities, shares, strict=True):
                code = (
                    "from e2e.bench_fanout import client_main; "
                    f"client_main({address!r}, {str(root / 'clusters' / identity)!r}, "
                    f"{share}, {timeout})"
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
            began = time.perf_counter()
            lines = await _all_lines(procs, timeout + 10)
            initial = time.perf_counter() - began
            refused = sum(metrics.refusals.values())
            idle = rss_mib()
            print(
                f"  {len(identities)} client processes (one per cluster identity), one "
                f"connection per stream: {len(sync)} streams admitted, {refused} refused "
                f"({dict(metrics.refusals)}); every stream had the initial state after "
                f"{initial:.1f} s ({_count(lines, 'initial')} streams, client lines {lines[:2]}...)"
            )
            print(
                f"  hub RSS {idle:.0f} MiB with the streams idle, {before:.0f} MiB before: "
                f"{(idle - before) * 1024 / max(1, len(sync)):.0f} KiB per idle stream"
            )
            if any(not line.startswith("initial") for line in lines):
                return
            cpu = time.process_time()
            changed_at = time.perf_counter()
            changed = {subscribed[0]: loopback_assignment(subscribed[0], (8080,), False)}
            for identity in identities:  # one endpoint, seen by every cluster's Envoys
                cache.update(identity, ENDPOINT, changed)
            lines = await _all_lines(procs, timeout + 10)
            elapsed = time.perf_counter() - changed_at
            cpu = time.process_time() - cpu
            print(
                f"  one ClusterLoadAssignment changed -> every stream ACKed it: "
                f"{elapsed * 1000:.0f} ms ({_count(lines, 'updated')} streams; hub CPU "
                f"meanwhile {cpu * 1000:.0f} ms)"
            )
            try:
                async with asyncio.timeout(10):
                    await sync.wait_for(lambda: all(s.synced for s in sync.list()))
                print(
                    f"  the hub's sync registry: {len(sync)} streams synced "
                    f"{(time.perf_counter() - changed_at) * 1000:.0f} ms after the change"
                )
            except TimeoutError:
                print("  the hub's sync registry: not every stream synced within 10 s")
            print(f"  hub RSS {rss_mib():.0f} MiB (peak {rss_mib(peak=True):.0f} MiB)")
        finally:
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
            await server.stop(None)


def bench_fanout(streams: int = 10_000, timeout: float = 300.0) -> None:
    """1,000 streams, then ``streams``, in one run (see the module docstring)."""
    raise_open_files()
    for count in dict.fromkeys((BASELINE_STREAMS, streams)):
        print(f"fan-out: {count} ADS streams (SotW), {RESOURCES} clusters and assignments each")
        asyncio.run(_run(count, timeout))
