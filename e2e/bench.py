"""Benchmarks that print figures; run with ``./e2e/dev bench [name ...]``.

``federation``: export -> import convergence (one ServiceExport created in
``a`` until its ServiceImport exists in ``b``: p50/p99 over ``--changes``
sequential changes), then ``--services`` exports created at once in ``a`` until
every one is imported in ``a``, ``b`` and ``c``, the agents' peak memory, and the
apiservers' own write rate for the same objects (:mod:`e2e.bench_ceiling`).

``env``: time to start the 3-cluster local environment with warm caches
(etcd, kube-apiservers ready, CRDs established, ClusterProperties set) and the
environment's peak memory, once with one etcd shared by all clusters and once
with one etcd per cluster, the measurement behind the harness's default.

``nodes``: warm start time and peak memory of a 2- and a 3-cluster node-tier environment
(:mod:`e2e.nodes`: every node Ready and CoreDNS Available), its teardown time, and how
long a one-pod echo Deployment takes from apply to Ready there.

``translator``, ``translator-routes``, ``fanout``, ``endpoint-ack``, ``route-ack``: the
hub's xDS side, see :mod:`e2e.bench_xds` (full translation at 250 clusters x 1,000
services and the CPU of one endpoint change; the same with 1,000 HTTPRoutes and the CPU of
one route change; 1,000 ADS streams updated after one change; an endpoint change in ``a``
and a route change in ``b`` until b's real Envoy has them).

``dns``: the clusterset.local server's queries per second and latency, directly and
through CoreDNS, beside CoreDNS answering ``cluster.local``; and the time from a change
in ``a`` to the new answer in ``b`` (:mod:`e2e.bench_dns`).

``gateways``: a Gateway applied until ``Programmed=True`` with its address, beside the
time its Envoy Deployment takes to become Available (:mod:`e2e.bench_gateways`).
``policy-translation``, ``policy-ack``: a Gateway's 1,000 routes translated with and without
a BackendTrafficPolicy each, and a policy change until the Gateway's Envoy has it
(:mod:`e2e.bench_policies`).
``patch-translation``, ``extension-ack``: the same Gateway translated with 0 and 10
EnvoyPatchPolicies, and a route change until the Gateway's Envoy has it, without and
with an extension server taking 1 ms per call (:mod:`e2e.bench_extensions`).

Benchmarks never assert on time: they print, and people compare.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence

from kubernetes.client import ApiClient, CustomObjectsApi

from e2e import (
    bench_ceiling,
    bench_dns,
    bench_extensions,
    bench_fanout,
    bench_gateways,
    bench_policies,
    bench_xds,
    pods,
)
from e2e import scenario as sc
from e2e.cluster import LocalEnvironment
from e2e.federation import Federation
from e2e.figures import percentile
from e2e.fixtures import api_client
from e2e.nodes import NodeEnvironment
from e2e.processes import rss_kib, wait_until

CLUSTERS = ("a", "b", "c")


def _env_once(etcd_per_cluster: bool) -> tuple[float, float, int]:
    """(seconds until ready, seconds to tear down, peak RSS in KiB)."""
    env = LocalEnvironment(CLUSTERS, etcd_per_cluster=etcd_per_cluster)
    began = time.monotonic()
    with env:
        ready = time.monotonic() - began
        peak = env.peak_rss_kib()
        stop_began = time.monotonic()
    return ready, time.monotonic() - stop_began, peak


def bench_env(runs: int) -> None:
    print(f"local environment: {len(CLUSTERS)} clusters, warm caches, {runs} runs per layout")
    print(f"{'layout':<20} {'start p50':>10} {'start max':>10} {'stop p50':>9} {'peak RSS':>10}")
    for label, per_cluster in (("shared etcd", False), ("etcd per cluster", True)):
        results = [_env_once(per_cluster) for _ in range(runs)]
        starts = [r[0] for r in results]
        stops = [r[1] for r in results]
        peak_mib = max(r[2] for r in results) / 1024
        print(
            f"{label:<20} {statistics.median(starts):>9.2f}s {max(starts):>9.2f}s "
            f"{statistics.median(stops):>8.2f}s {peak_mib:>8.0f}MiB"
        )
    print("peak RSS: sum over etcd and kube-apiserver processes of each one's peak (VmHWM)")


def _node_env_once(clusters: Sequence[str]) -> dict[str, float]:
    env = NodeEnvironment(clusters)
    began = time.monotonic()
    with env:
        figures = {"start": time.monotonic() - began, "nodes": env.node_seconds}
        pids = set(env.pids())
        memory_cgroup_peak = 0
        for cluster in env.node_clusters():
            pids |= cluster.cgroup.pids()
            memory_cgroup_peak += cluster.cgroup.memory_peak_bytes()
        figures["rss_mib"] = sum(rss_kib(pid, "VmHWM") for pid in pids) / 1024
        figures["cgroup_mib"] = memory_cgroup_peak / 2**20
        figures["processes"] = len(pids)
        a = env.node_clusters()[0]
        apply_began = time.monotonic()
        pods.apply(a, pods.namespace("bench"), pods.echo_deployment("bench", a.id, replicas=1))
        pods.wait_ready_pods(a, "bench", "app=echo", 1)
        figures["pod_ready"] = time.monotonic() - apply_began
        stop_began = time.monotonic()
    figures["stop"] = time.monotonic() - stop_began
    return figures


def bench_nodes(runs: int) -> None:
    print(f"node environment: warm caches, {runs} runs per size")
    print(
        f"{'clusters':<9} {'start p50':>9} {'start max':>9} {'of which nodes':>14} "
        f"{'pod apply->Ready':>16} {'stop p50':>8} {'peak RSS':>9} {'cgroup peak':>11}"
    )
    for size in (2, 3):
        results = [_node_env_once(CLUSTERS[:size]) for _ in range(runs)]

        def med(key: str, results: list[dict[str, float]] = results) -> float:
            return statistics.median(r[key] for r in results)

        print(
            f"{size:<9} {med('start'):>8.1f}s {max(r['start'] for r in results):>8.1f}s "
            f"{med('nodes'):>13.1f}s {med('pod_ready'):>15.2f}s {med('stop'):>7.1f}s "
            f"{max(r['rss_mib'] for r in results):>6.0f}MiB "
            f"{max(r['cgroup_mib'] for r in results):>8.0f}MiB"
        )
    print(
        "start: until every apiserver is ready, every node Ready and CoreDNS Available "
        "(of which nodes: after the control planes were ready)"
    )
    print(
        "peak RSS: sum of each process's peak (VmHWM) over the environment's processes and "
        "every container process, at ready; cgroup peak: the nodes' memory cgroups' "
        "max_usage (containerd, kubelet, pods, page cache included)"
    )


def _imported(client: ApiClient, ns: str, name: str) -> bool:
    return sc.get_custom(client, "serviceimports", ns, name) is not None


def _import_count(client: ApiClient, ns: str) -> int:
    result = CustomObjectsApi(client).list_namespaced_custom_object(
        sc.MCS, "v1beta1", ns, "serviceimports"
    )
    return len(result["items"])  # type: ignore[index]


def bench_federation(changes: int, services: int) -> None:
    with LocalEnvironment(CLUSTERS) as env:
        fed = Federation(env, lease_ttl=10.0, check_consistency=False)
        fed.start()
        a, b = env.cluster("a"), env.cluster("b")
        for cluster in env.clusters.values():
            sc.apply(cluster, sc.namespace("bench"), sc.namespace("bulk"))
        sc.apply(a, *(sc.service("bench", f"s{i}") for i in range(changes)))
        with api_client(a) as client_a, api_client(b) as client_b:
            exports = CustomObjectsApi(client_a)
            latencies = []
            deadline = time.monotonic() + 600  # bounded in time as well as count
            for i in range(changes):
                if time.monotonic() > deadline:
                    break
                began = time.monotonic()
                exports.create_namespaced_custom_object(
                    sc.MCS, "v1beta1", "bench", "serviceexports", sc.export("bench", f"s{i}")
                )
                wait_until(
                    functools.partial(_imported, client_b, "bench", f"s{i}"),
                    timeout=30,
                    what=f"import s{i} in b",
                    interval=0.005,
                )
                latencies.append((time.monotonic() - began) * 1000)
            print(f"export in a -> ServiceImport in b, {len(latencies)} sequential changes:")
            print(
                f"  p50 {percentile(latencies, 50):.0f} ms   p99 "
                f"{percentile(latencies, 99):.0f} ms   max {max(latencies):.0f} ms"
            )

            # Bulk: the exports exist before a's agent starts, so what is timed is
            # federation (a publishes everything, b and c import it), not how fast
            # kubectl can create 2,000 objects.
            fed.stop_agent("a")
            objects = [
                o
                for i in range(services)
                for o in (sc.service("bulk", f"s{i}"), sc.export("bulk", f"s{i}"))
            ]
            for start in range(0, len(objects), 500):
                sc.apply(a, *objects[start : start + 500])
            began = time.monotonic()
            fed.start_agent("a")
            with api_client(env.cluster("c")) as client_c:
                wait_until(
                    lambda: (
                        _import_count(client_a, "bulk") >= services
                        and _import_count(client_b, "bulk") >= services
                        and _import_count(client_c, "bulk") >= services
                    ),
                    timeout=900,
                    what=f"{services} imports in a, b and c",
                    interval=0.2,
                )
            total = time.monotonic() - began
            print(
                f"{services} exports in a, then a's agent started: all imported in a, b and c "
                f"after {total:.1f}s ({services / total:.0f} services/s into each cluster)"
            )
            for cid, handle in fed.agents.items():
                assert handle.process is not None
                peak = rss_kib(handle.process.pid, "VmHWM") / 1024
                print(f"  agent {cid}: peak RSS {peak:.0f} MiB")
            # The ceiling: the same objects written straight into all three apiservers,
            # with no agent running (an agent would delete imports nobody exports).
            for cid in CLUSTERS:
                fed.stop_agent(cid)
            for cluster in env.clusters.values():
                sc.apply(cluster, sc.namespace("ceiling"))
            rate = bench_ceiling.write_rate(
                [env.cluster(c) for c in CLUSTERS], source="bulk", target="ceiling"
            )
            print(
                f"  ceiling: the apiservers accept the same objects (derived Service, "
                f"ServiceImport, EndpointSlice, status; {bench_ceiling.IN_FLIGHT} services in "
                f"flight) at {rate:.0f} services/s into each of a, b and c at once"
            )


BENCHMARKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "env": lambda args: bench_env(args.runs),
    "nodes": lambda args: bench_nodes(args.runs),
    "federation": lambda args: bench_federation(args.changes, args.services),
    "translator": lambda args: bench_xds.bench_translator(),
    "translator-routes": lambda args: bench_xds.bench_translator_routes(),
    "fanout": lambda args: bench_fanout.bench_fanout(args.streams),
    "endpoint-ack": lambda args: bench_xds.bench_endpoint_ack(args.changes),
    "route-ack": lambda args: bench_xds.bench_route_ack(args.changes),
    "dns": lambda args: bench_dns.bench_dns(args.queries, min(args.changes, 100)),
    "gateways": lambda args: bench_gateways.bench_gateways(args.gateways),
    "policy-translation": lambda args: bench_policies.bench_policy_translation(),
    "policy-ack": lambda args: bench_policies.bench_policy_ack(args.changes),
    "patch-translation": lambda args: bench_extensions.bench_patch_translation(),
    "extension-ack": lambda args: bench_extensions.bench_extension_ack(min(args.changes, 100)),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"which to run (default all): {list(BENCHMARKS)}")
    parser.add_argument("--runs", type=int, default=3, help="env, nodes: repetitions (default 3)")
    parser.add_argument(
        "--changes",
        type=int,
        default=200,
        help="federation, endpoint-ack, route-ack, policy-ack: sequential changes (default 200)",
    )
    parser.add_argument(
        "--services",
        type=int,
        default=1000,
        help="federation: services exported at once (default 1000)",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=10_000,
        help="fanout: concurrent ADS streams, run after 1,000 (default 10000)",
    )
    parser.add_argument(
        "--queries", type=int, default=20000, help="dns: queries per server (default 20000)"
    )
    parser.add_argument(
        "--gateways", type=int, default=20, help="gateways: Gateways applied (default 20)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(BENCHMARKS)}")
    for name in args.names or list(BENCHMARKS):
        BENCHMARKS[name](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
