"""Command line for the local multi-cluster environment.

``python -m e2e demo`` is what the README's run command (``./e2e/dev demo``)
executes; ``python -m e2e up`` starts bare clusters for manual work. Both keep
running until Ctrl-C (or SIGTERM) unless ``--exit`` is given, and always stop
every process they started.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from e2e import demo
from e2e.cluster import LocalEnvironment
from e2e.nodes import NodeEnvironment
from e2e.processes import HarnessError
from e2e.toolchain import ToolchainError


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_access(env: LocalEnvironment) -> None:
    print("\nReach each cluster with kubectl:")
    for cluster in env.clusters.values():
        print(
            f"  cluster {cluster.id}: kubectl --kubeconfig {cluster.kubeconfig} "
            "get serviceimports -A"
        )
    print(f"  (kubectl is {next(iter(env.clusters.values())).tools.kubectl})")


def _wait_for_interrupt() -> None:
    print("\nRunning. Press Ctrl-C to stop and remove everything.", flush=True)
    while True:
        signal.pause()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("up", "start member clusters and print how to reach them"),
        ("demo", "start 3 clusters and export an example service from cluster a"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--exit", action="store_true", help="stop once set up (for scripts)")
        p.add_argument("--workdir", type=Path, help="keep state here instead of a temp dir")
        p.add_argument(
            "--etcd-per-cluster", action="store_true", help="one etcd per cluster (default: shared)"
        )
    sub.choices["up"].add_argument(
        "--clusters", default="a,b,c", help="comma-separated cluster ids (default a,b,c)"
    )
    sub.choices["up"].add_argument(
        "--nodes",
        action="store_true",
        help="the node tier: a kubelet, containerd, kube-proxy and CoreDNS per cluster "
        "(needs root)",
    )
    args = parser.parse_args(argv)
    # Explicit for SIGINT too: a shell starting us in the background ignores it.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    ids = ["a", "b", "c"] if args.command == "demo" else args.clusters.split(",")
    nodes = args.command == "up" and args.nodes
    began = time.monotonic()
    try:
        what = (
            "control plane, node, kube-proxy and CoreDNS in a network namespace each"
            if nodes
            else "etcd + kube-apiserver each on loopback"
        )
        print(f"==> starting clusters {', '.join(ids)} ({what})", flush=True)
        env: LocalEnvironment
        if nodes:
            env = NodeEnvironment(ids, workdir=args.workdir, keep_workdir=args.workdir is not None)
        else:
            env = LocalEnvironment(
                ids,
                etcd_per_cluster=args.etcd_per_cluster,
                workdir=args.workdir,
                keep_workdir=args.workdir is not None,
            )
        with env:
            print(
                f"==> {len(ids)} clusters ready in {time.monotonic() - began:.1f}s "
                f"(state in {env.workdir})",
                flush=True,
            )
            if args.command == "demo":
                demo.run(env)
            _print_access(env)
            if not args.exit:
                _wait_for_interrupt()
    except KeyboardInterrupt:
        print("\n==> stopped; every process is gone", flush=True)
    except (HarnessError, ToolchainError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
