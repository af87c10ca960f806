"""Network namespaces of a node-tier environment: one per node, and a fabric between them.

Used by :mod:`e2e.nodes`. Nothing here touches the host's own network namespace: every
interface, address, route and iptables rule lives in a namespace this module created,
so private ranges are used only there. Layout for clusters ``a`` (index 1) and ``b``::

    fabric namespace:  bridge fabric0 ── veth n1 ─┬─ eth0 10.250.0.11/24  node namespace of a
                                      └─ veth n2 ─┼─ eth0 10.250.0.12/24  node namespace of b

Each node namespace also holds its cluster's pod bridge (made by the CNI bridge plugin)
and kube-proxy's rules. With *flat* routing on (the default; a switch, so that a later
east-west gateway mode can turn it off) every node routes each other cluster's pod range
to that cluster's node, so pods of different clusters reach each other directly.

Namespaces are named by :mod:`e2e.owners`: :func:`sweep_stale` removes those whose owner
is gone (a harness killed with SIGKILL cannot clean up after itself).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e import owners
from e2e.processes import HarnessError

NETNS_DIR = Path("/run/netns")
NODE_SUBNET = "10.250.0"

#: Per-namespace sysctls a node needs: forwarding for pods, bridged traffic through
#: iptables for Services whose client and endpoint share the pod bridge.
NODE_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    "net.bridge.bridge-nf-call-iptables": "1",
    "net.ipv4.conf.all.rp_filter": "0",
}


def run(argv: Sequence[str], *, what: str = "", timeout: float = 60) -> str:
    """Run a command; its stdout, or a :class:`HarnessError` with its message."""
    label = f"{what}: " if what else ""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{label}`{' '.join(argv)}` timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise HarnessError(f"{label}`{' '.join(argv)}` failed: {proc.stderr.strip()}")
    return proc.stdout


def ip(*args: str, netns: str | None = None) -> str:
    """Run iproute2's ``ip`` (inside ``netns`` when given); raise with its message."""
    return run(["ip", *(["-n", netns] if netns else []), *args], timeout=30)


def in_netns(netns: str, *argv: str) -> list[str]:
    """``argv`` run inside ``netns``.

    ``nsenter --net`` and not ``ip netns exec``: the latter also remounts /sys, and runc
    then finds no cgroup hierarchy under it.
    """
    return ["nsenter", f"--net={NETNS_DIR / netns}", "--", *argv]


def sysctl_in(netns: str, values: dict[str, str]) -> None:
    for key, value in values.items():
        path = "/proc/sys/" + key.replace(".", "/")
        hint = (
            " (is the br_netfilter module loaded? modprobe br_netfilter)" if "bridge" in key else ""
        )
        run(
            in_netns(netns, "sh", "-c", f"echo {value} > {path}"),
            what=f"setting {key} in {netns}{hint}",
            timeout=10,
        )


def list_namespaces() -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.glob(owners.PREFIX + "*"))


def delete(name: str) -> None:
    ip("netns", "delete", name)


def sweep_stale() -> list[str]:
    """Delete the namespaces of environments whose owning process is gone."""
    removed = []
    for name in owners.dead(list_namespaces()):
        with contextlib.suppress(HarnessError):  # another environment swept it first
            delete(name)
        if name not in list_namespaces():
            removed.append(name)
    return removed


@dataclass(frozen=True)
class NodeNetwork:
    """Where one cluster's node sits on the fabric."""

    index: int
    netns: str
    #: The node's address on the fabric; the apiserver and kubelet listen here.
    node_ip: str
    #: The cluster's pod range; this node's pods get addresses from ``pod_subnet``.
    pod_cidr: str
    pod_subnet: str


@dataclass
class Fabric:
    """The namespaces of one environment. Create with :meth:`create`, remove with
    :meth:`destroy` (also after a partial create)."""

    #: ``<owner pid>-<n>``, see :mod:`e2e.owners`.
    token: str = field(default_factory=owners.new_token)
    flat: bool = True
    nodes: dict[str, NodeNetwork] = field(default_factory=dict)
    _created: list[str] = field(default_factory=list)

    def name(self, suffix: str) -> str:
        return f"{owners.PREFIX}{self.token}-{suffix}"

    @property
    def fabric_netns(self) -> str:
        return self.name("fabric")

    def _add(self, name: str) -> None:
        ip("netns", "add", name)
        self._created.append(name)
        ip("link", "set", "lo", "up", netns=name)

    def create(self, clusters: Sequence[tuple[str, int, str, str]]) -> None:
        """``clusters``: (id, index, pod CIDR, this node's pod subnet) per cluster."""
        self._add(self.fabric_netns)
        ip("link", "add", "fabric0", "type", "bridge", netns=self.fabric_netns)
        ip("link", "set", "fabric0", "up", netns=self.fabric_netns)
        for cluster_id, index, pod_cidr, pod_subnet in clusters:
            netns = self.name(cluster_id)
            self._add(netns)
            node = NodeNetwork(index, netns, f"{NODE_SUBNET}.{10 + index}", pod_cidr, pod_subnet)
            port = f"n{index}"
            ip(
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns,
                netns=self.fabric_netns,
            )  # fmt: skip
            ip("link", "set", port, "master", "fabric0", "up", netns=self.fabric_netns)
            ip("addr", "add", f"{node.node_ip}/24", "dev", "eth0", netns=netns)
            ip("link", "set", "eth0", "up", netns=netns)
            sysctl_in(netns, NODE_SYSCTLS)
            self.nodes[cluster_id] = node
        if self.flat:
            self.route_pods_flat()

    def route_pods_flat(self) -> None:
        """Route every cluster's pod range to its node from every other node."""
        for node, other in self._pairs():
            ip("route", "replace", other.pod_cidr, "via", other.node_ip, netns=node.netns)

    def set_flat(self, flat: bool) -> None:
        """Turn flat pod routing on or off for the running environment."""
        if flat:
            self.route_pods_flat()
        else:
            for node, other in self._pairs():
                with contextlib.suppress(HarnessError):  # already gone
                    ip("route", "delete", other.pod_cidr, netns=node.netns)
        self.flat = flat

    def _pairs(self) -> list[tuple[NodeNetwork, NodeNetwork]]:
        nodes = list(self.nodes.values())
        return [(n, o) for n in nodes for o in nodes if o is not n]

    def netns_path(self, cluster_id: str) -> Path:
        return NETNS_DIR / self.nodes[cluster_id].netns

    def destroy(self) -> None:
        """Delete every namespace this fabric made; their interfaces go with them."""
        errors = []
        for name in reversed(self._created):
            try:
                ip("netns", "delete", name)
            except HarnessError as err:
                errors.append(str(err))
        self._created.clear()
        if errors:
            raise HarnessError("; ".join(errors))
