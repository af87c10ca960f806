"""Benchmarks that print figures; run with ``./e2e/dev bench [name ...]``.

``env``: time to start the 3-cluster local environment with warm caches
(etcd, kube-apiservers ready, CRDs established, ClusterProperties set) and the
environment's peak memory, once with one etcd shared by all clusters and once
with one etcd per cluster, the measurement behind the harness's default.

Benchmarks never assert on time: they print, and people compare.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence

from e2e.cluster import LocalEnvironment

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


BENCHMARKS: dict[str, Callable[[argparse.Namespace], None]] = {
    "env": lambda args: bench_env(args.runs),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"which to run (default all): {list(BENCHMARKS)}")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {list(BENCHMARKS)}")
    for name in args.names or list(BENCHMARKS):
        BENCHMARKS[name](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
