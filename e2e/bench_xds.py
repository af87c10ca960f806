"""Benchmarks of the hub's xDS side; they print figures, never assert on time.

``bench_translator``: a full build of every node group's snapshot with
:class:`federation.hub.snapshots.SnapshotBuilder` for a large in-memory clusterset
(250 clusters, 1,000 services each exported from 3 of them, ~250k endpoints), the number of
distinct ClusterLoadAssignments built, peak RSS, then the hub CPU time of one endpoint change
(which must be an endpoint-only push).

``bench_translator_routes``: the same clusterset with 1,000 HTTPRoutes added (four per
cluster, on one Gateway each, to ServiceImports of the clusterset): the full build of every
node group with its Gateway configuration, and the hub CPU of one route change.

``bench_endpoint_ack``: end to end on the local environment (clusters ``a`` and ``b``, hub,
b's Envoy): the ready flag of an EndpointSlice in ``a`` flips, and the time until b's Envoy
shows the new health of the host (admin ``/clusters``) is printed as p50/p99/max.

``bench_route_ack``: end to end (clusters ``a`` and ``b``, hub, b's Envoy): an HTTPRoute of a
Gateway in ``b`` changes its path, and the time from the apiserver's answer to the PATCH
(the write is committed by then) until b's Gateway serves the new path is printed as
p50/p99/max, with the PATCH's own duration beside it.

Every load loop is bounded in count and in time, and everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
import time
from typing import Any

from kubernetes.client import CustomObjectsApi

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.cluster import LocalCluster, LocalEnvironment, free_port
from e2e.federation import Federation
from e2e.figures import percentile
from e2e.fixtures import api_client
from e2e.processes import rss_kib, wait_until
from federation.hub.core import freeze_loaded_heap
from federation.hub.snapshots import SnapshotBuilder, SnapshotOptions
from federation.node_groups import gateway_group, parse_group
from federation.registry import gatewayapi as g
from federation.registry.kinds import Record
from federation.registry.records import (
    Endpoint,
    EndpointPort,
    EndpointSet,
    ExportedService,
    ServicePort,
    ServiceType,
)
from federation.registry.watcher import ServiceName
from federation.translate.gateway import resolve
from federation.translate.gateway.inputs import cluster_inputs
from federation.translate.inputs import ImportView, TranslateOptions
from federation.xds.snapshot import ENDPOINT, SnapshotCache

NAMESPACE = "bench"
CREATED = "2026-01-01T00:00:00Z"


def rss_mib(*, peak: bool = False) -> float:
    """This process's resident memory (or its peak so far) in MiB."""
    return rss_kib(os.getpid(), "VmHWM" if peak else "VmRSS") / 1024


# --- translator ------------------------------------------------------------------------


def _ipv4(index: int) -> str:
    value = (10 << 24) + index
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def _export(cluster: str, service: int, first: int, count: int) -> ExportedService:
    endpoints = tuple(
        Endpoint(addresses=(_ipv4(first + k),), ready=True, serving=True, terminating=False)
        for k in range(count)
    )
    return ExportedService(
        cluster=cluster,
        namespace=NAMESPACE,
        name=f"s{service}",
        type=ServiceType.CLUSTER_SET_IP,
        ports=(ServicePort("http", "TCP", 80),),
        created=CREATED,
        generation=1,
        endpoints=(
            EndpointSet(
                name=f"s{service}-{cluster}",
                address_type="IPv4",
                ports=(EndpointPort("http", "TCP", 8080),),
                endpoints=endpoints,
            ),
        ),
    )


def synthetic_clusterset(
    clusters: int, services: int, exporters: int, endpoints_per_export: int
) -> tuple[list[str], dict[ServiceName, list[ExportedService]]]:
    """Cluster ids, and each service's exports (from ``exporters`` clusters, round-robin)."""
    if exporters > clusters:
        raise ValueError(f"{exporters} exporters per service but only {clusters} clusters")
    ids = [f"c{i:03d}" for i in range(clusters)]
    exports: dict[ServiceName, list[ExportedService]] = {}
    index = 0
    for s in range(services):
        chosen = [ids[(s * exporters + j) % clusters] for j in range(exporters)]
        records = []
        for cluster in chosen:
            records.append(_export(cluster, s, index * endpoints_per_export, endpoints_per_export))
            index += 1
        exports[(NAMESPACE, f"s{s}")] = records
    return ids, exports


def _flip_first_endpoint(record: ExportedService) -> ExportedService:
    (slice_,) = record.endpoints
    first = slice_.endpoints[0]
    flipped = dataclasses.replace(first, ready=not first.ready)
    new_slice = dataclasses.replace(slice_, endpoints=(flipped, *slice_.endpoints[1:]))
    return dataclasses.replace(record, endpoints=(new_slice,), generation=record.generation + 1)


def bench_translator(
    clusters: int = 250,
    services: int = 1000,
    exporters: int = 3,
    endpoints_per_export: int = 83,
) -> None:
    """Full build of every node group's snapshot, then single endpoint changes."""
    ids, exports = synthetic_clusterset(clusters, services, exporters, endpoints_per_export)
    total = sum(len(e.endpoints[0].endpoints) for es in exports.values() for e in es)
    print(
        f"translator: {clusters} clusters, {services} services x {exporters} exporters, "
        f"{total} endpoints"
    )
    cache = SnapshotCache()
    builder = SnapshotBuilder(
        cache, SnapshotOptions(translate=TranslateOptions(), listener_addresses={})
    )
    groups = set(ids)

    wall, cpu = time.perf_counter(), time.process_time()
    views = {key: ImportView.of(records) for key, records in exports.items()}
    builder.update(views, groups=groups)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    freeze_loaded_heap()  # as the hub does once it is loaded
    distinct: set[tuple[str, str]] = set()
    per_group = 0
    for group in ids:
        snapshot = cache.get(group)
        assert snapshot is not None
        clas = snapshot.of(ENDPOINT)
        per_group = max(per_group, len(clas))
        distinct.update((r.name, r.version) for r in clas.values())
    print(
        f"  full build ({len(ids)} node groups): {wall:.2f} s wall, {cpu:.2f} s CPU; "
        f"{len(distinct)} distinct ClusterLoadAssignments "
        f"({len(distinct) / max(services, 1):.2f} per service, "
        f"{per_group} per node group); peak RSS {rss_mib(peak=True):.0f} MiB"
    )

    # One endpoint change at a time: flip one endpoint's ready flag of one export.
    key = (NAMESPACE, "s0")
    current = list(exports[key])
    cpu_times: list[float] = []
    wall_times: list[float] = []
    endpoint_only = 0
    full_before = builder.full_pushes
    deadline = time.monotonic() + 60
    for _ in range(20):
        if time.monotonic() > deadline:
            break
        current[0] = _flip_first_endpoint(current[0])
        view = ImportView.of(current)
        pushes = builder.endpoint_pushes
        wall, cpu = time.perf_counter(), time.process_time()
        builder.update({key: view}, groups=groups)
        wall_times.append(time.perf_counter() - wall)
        cpu_times.append(time.process_time() - cpu)
        endpoint_only += builder.endpoint_pushes - pushes
    print(
        f"  one endpoint change, {len(cpu_times)} changes: hub CPU median "
        f"{statistics.median(cpu_times) * 1000:.2f} ms, max {max(cpu_times) * 1000:.2f} ms "
        f"(wall median {statistics.median(wall_times) * 1000:.2f} ms); endpoint-only pushes "
        f"{endpoint_only}/{len(cpu_times)}, full pushes {builder.full_pushes - full_before}"
    )
    print(f"  peak RSS {rss_mib(peak=True):.0f} MiB")


def _gateway_records(ids: list[str], services: int, per_cluster: int) -> dict[str, list[Record]]:
    """Per cluster: a Gateway and ``per_cluster`` HTTPRoutes to ServiceImports."""
    out: dict[str, list[Record]] = {}
    for c, cluster in enumerate(ids):
        records: list[Record] = [
            g.GatewayRecord(
                cluster,
                NAMESPACE,
                "gw",
                g.GatewaySpec("federation", (g.Listener("http", 8080, "HTTP"),)),
            )
        ]
        for r in range(per_cluster):
            records.append(
                synthetic_route(cluster, f"r{r}", (c * per_cluster + r) % services, "/api")
            )
        out[cluster] = records
    return out


def synthetic_route(cluster: str, name: str, service: int, path: str) -> g.HTTPRouteRecord:
    return g.HTTPRouteRecord(
        cluster,
        NAMESPACE,
        name,
        g.HTTPRouteSpec(
            parent_refs=(g.ParentReference("gw"),),
            hostnames=(f"{name}.example.com",),
            rules=(
                g.HTTPRouteRule(
                    matches=(g.HTTPRouteMatch(path=g.PathMatch("PathPrefix", path)),),
                    backend_refs=(
                        g.HTTPBackendRef(
                            f"s{service}",
                            group="multicluster.x-k8s.io",
                            kind="ServiceImport",
                            port=80,
                        ),
                    ),
                ),
            ),
        ),
    )


def bench_translator_routes(
    clusters: int = 250,
    services: int = 1000,
    exporters: int = 3,
    endpoints_per_export: int = 83,
    routes: int = 1000,
) -> None:
    """Full build with 1,000 HTTPRoutes on top of the translator case, then route changes."""
    ids, exports = synthetic_clusterset(clusters, services, exporters, endpoints_per_export)
    per_cluster = max(routes // clusters, 1)
    gateways = _gateway_records(ids, services, per_cluster)
    print(
        f"translator with routes: {clusters} clusters, {services} services x {exporters} "
        f"exporters, {per_cluster * clusters} HTTPRoutes ({per_cluster} per cluster)"
    )
    cache = SnapshotCache()
    builder = SnapshotBuilder(
        cache, SnapshotOptions(translate=TranslateOptions(), listener_addresses={})
    )

    def resolver(group: str) -> Any:
        parsed = parse_group(group)
        if parsed.gateway is None:
            return None
        inputs = cluster_inputs(
            parsed.cluster, gateways.get(parsed.cluster, ()), builder.merged_imports()
        )
        return resolve(inputs).gateway(*parsed.gateway)

    groups = set(ids) | {gateway_group(c, NAMESPACE, "gw") for c in ids}
    wall, cpu = time.perf_counter(), time.process_time()
    views = {key: ImportView.of(records) for key, records in exports.items()}
    builder.update(views, groups, groups, resolver)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"  full build with Gateways ({len(groups)} node groups): {wall:.2f} s wall, "
        f"{cpu:.2f} s CPU; peak RSS {rss_mib(peak=True):.0f} MiB"
    )
    freeze_loaded_heap()
    cpu_times: list[float] = []
    gateway_pushes = builder.gateway_pushes
    cluster = ids[0]
    group = gateway_group(cluster, NAMESPACE, "gw")
    for i in range(20):
        gateways[cluster][1] = synthetic_route(cluster, "r0", 0, f"/api{i}")
        cpu = time.process_time()
        builder.update({}, groups, {group}, resolver)
        cpu_times.append(time.process_time() - cpu)
    print(
        f"  one route change, {len(cpu_times)} changes: hub CPU median "
        f"{statistics.median(cpu_times) * 1000:.2f} ms, max {max(cpu_times) * 1000:.2f} ms; "
        f"pushes to that group only: {builder.gateway_pushes - gateway_pushes}/{len(cpu_times)}"
    )


# --- endpoint change -> Envoy ------------------------------------------------------------


def _envoy_health(admin: str, cluster: str) -> str | None:
    """``healthy``/``unhealthy`` of the first host of ``cluster`` in Envoy's ``/clusters``."""
    prefix = f"{cluster}::"
    for line in admin.splitlines():
        if line.startswith(prefix) and "::health_flags::" in line:
            flags = line.rsplit("::health_flags::", 1)[1]
            return "healthy" if flags == "healthy" else "unhealthy"
    return None


def bench_endpoint_ack(changes: int = 200) -> None:
    """Flip an EndpointSlice's ready flag in ``a`` until b's Envoy shows it; p50/p99/max."""
    with LocalEnvironment(("a", "b")) as env:
        fed = Federation(env, check_consistency=False)
        fed.start()
        fed.start_hub()
        fed.wait_hub_ready()
        envoy = fed.start_envoy("b")
        a = env.cluster("a")
        for cluster in env.clusters.values():
            sc.apply(cluster, sc.namespace(NAMESPACE))
        cluster_name = f"clusterset/{NAMESPACE}/echo/80"
        sc.apply(
            a,
            sc.service(NAMESPACE, "echo"),
            sc.endpoint_slice(a, NAMESPACE, "echo", [7], ready=True),
            sc.export(NAMESPACE, "echo"),
        )

        def health() -> str | None:
            try:
                return _envoy_health(envoy.admin("/clusters"), cluster_name)
            except OSError:
                return None

        def has_health(want: str) -> bool:
            return health() == want

        wait_until(lambda: health() == "healthy", timeout=60, what=f"{cluster_name} in b's Envoy")
        latencies: list[float] = []
        applies: list[float] = []  # of which kubectl apply
        ready = True
        deadline = time.monotonic() + 600
        for _ in range(changes):
            if time.monotonic() > deadline:
                break
            ready = not ready
            want = "healthy" if ready else "unhealthy"
            began = time.monotonic()
            sc.apply(a, sc.endpoint_slice(a, NAMESPACE, "echo", [7], ready=ready))
            applies.append((time.monotonic() - began) * 1000)
            wait_until(
                functools.partial(has_health, want),
                timeout=30,
                what=f"{cluster_name} {want} in b's Envoy",
                interval=0.005,
            )
            latencies.append((time.monotonic() - began) * 1000)
        print(
            f"endpoint ready flip in a -> b's Envoy has it, {len(latencies)} sequential changes "
            "(includes kubectl apply):"
        )
        print(
            f"  p50 {percentile(latencies, 50):.0f} ms   p99 {percentile(latencies, 99):.0f} ms"
            f"   max {max(latencies):.0f} ms"
        )
        print(f"  of which kubectl apply: p50 {percentile(applies, 50):.0f} ms")


def exported_echo(env: LocalEnvironment) -> Federation:
    """The federation of ``env`` (clusters ``a`` and ``b``) started, its hub ready, and
    ``bench/echo`` exported from ``a`` with one backend."""
    fed = Federation(env, check_consistency=False)
    fed.start()
    fed.start_hub()
    fed.wait_hub_ready()
    a = env.cluster("a")
    for cluster in env.clusters.values():
        sc.apply(cluster, sc.namespace(NAMESPACE))
    fed.start_backend("a", 7)
    sc.apply(
        a,
        sc.service(NAMESPACE, "echo"),
        sc.endpoint_slice(a, NAMESPACE, "echo", [7]),
        sc.export(NAMESPACE, "echo"),
    )
    return fed


def echo_route(path: str) -> dict[str, Any]:
    """HTTPRoute ``api`` of Gateway ``gw``: ``path`` to ServiceImport echo."""
    rule = {"matches": [gw.prefix(path)], "backendRefs": [gw.backend("echo")]}
    return gw.http_route(NAMESPACE, "api", "gw", [rule])


def route_changes(
    b: LocalCluster, address: str, changes: int, first: int = 1
) -> tuple[list[float], list[float]]:
    """PATCH route ``api``'s path to ``/v<first>``, ``/v<first+1>``, ... (``changes``
    times, at most 10 minutes) and wait until the Gateway at ``address`` serves each: the
    milliseconds from the apiserver's answer, and those of the PATCHes."""
    latencies: list[float] = []
    patches: list[float] = []
    deadline = time.monotonic() + 600
    with api_client(b) as client:
        api = CustomObjectsApi(client)
        for i in range(first, first + changes):
            if time.monotonic() > deadline:
                break
            path = f"/v{i}"
            began = time.monotonic()
            api.patch_namespaced_custom_object(
                "gateway.networking.k8s.io",
                "v1",
                NAMESPACE,
                "httproutes",
                "api",
                {"spec": {"rules": echo_route(path)["spec"]["rules"]}},
            )
            written = time.monotonic()
            patches.append((written - began) * 1000)
            wait_until(
                functools.partial(_serves, address, path),
                timeout=30,
                what=f"{path} at b's Gateway",
                interval=0.002,
            )
            latencies.append((time.monotonic() - written) * 1000)
    return latencies, patches


def routed_gateway(env: LocalEnvironment) -> tuple[Federation, LocalCluster, str]:
    """:func:`exported_echo`, then Gateway ``gw`` in ``b`` with route ``api`` at ``/v0``,
    served by its own Envoy: the federation, ``b`` and the Gateway's address."""
    fed = exported_echo(env)
    b = env.cluster("b")
    host = b.envoy_listener.rpartition(":")[0]
    port = free_port(host)
    address = f"{host}:{port}"
    gw.apply(b, gw.gateway_class(), gw.gateway(NAMESPACE, "gw", port), echo_route("/v0"))
    fed.start_gateway_envoy("b", NAMESPACE, "gw")  # the Gateway's own Envoy
    gw.wait_for_status(address, "/v0", 200)
    return fed, b, address


def bench_route_ack(changes: int = 200) -> None:
    """Change an HTTPRoute's path in ``b`` until b's Gateway serves it; p50/p99/max."""
    with LocalEnvironment(("a", "b")) as env:
        _, b, address = routed_gateway(env)
        latencies, patches = route_changes(b, address, changes)
        print(
            f"route change in b (PATCH of an HTTPRoute) -> b's Gateway serves it, "
            f"{len(latencies)} sequential changes, from the apiserver's answer:"
        )
        print(
            f"  p50 {percentile(latencies, 50):.0f} ms   p99 {percentile(latencies, 99):.0f} ms"
            f"   max {max(latencies):.0f} ms   (the PATCH itself: p50 "
            f"{percentile(patches, 50):.0f} ms)"
        )


def _serves(address: str, path: str) -> bool:
    reply = gw.try_request(address, path, timeout=2)
    return reply is not None and reply.status == 200
