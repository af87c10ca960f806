"""``dns``: the clusterset.local server against CoreDNS, and how fast a change is answered.

On two apiserver-tier clusters with their agents, and one real CoreDNS on loopback (the
binary the node tier runs) whose Corefile has our forwarding block (with ``cache 5``) and
Kubernetes' own ``kubernetes cluster.local`` plugin reading ``b``'s apiserver:

* queries per second and p50/p99 latency of one name asked repeatedly over UDP, by a
  bounded number of concurrent clients: the agent directly, through CoreDNS and its
  cache, and CoreDNS answering ``kubernetes.default.svc.cluster.local`` itself (the
  ceiling: what a cluster's DNS does for its own names on this machine); and the agent
  asked a new name every time (NXDOMAIN), which no kept response answers;
* the time from a ServiceExport created (or deleted) in ``a`` until ``b``'s agent
  answers the new name (or NXDOMAIN), p50/p99 over ``--changes`` changes, beside the
  time until ``b``'s ServiceImport exists (or is gone), which the answer follows.

Every address is on loopback; every load is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
from kubernetes.client import ApiClient

from e2e import scenario as sc
from e2e import toolchain
from e2e.cluster import LocalCluster, LocalEnvironment, free_port
from e2e.federation import Federation
from e2e.figures import percentile
from e2e.fixtures import api_client
from e2e.processes import wait_until

NS = "dnsbench"
CONCURRENCY = 16
#: No load runs longer than this, whatever the count.
LOAD_DEADLINE = 120.0


async def _client(
    address: tuple[str, int], wires: Sequence[bytes], count: int, out: list[float]
) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(address)
        for i in range(count):
            began = time.perf_counter()
            await loop.sock_sendall(sock, wires[i % len(wires)])
            await asyncio.wait_for(loop.sock_recv(sock, 65535), 2)
            out.append(time.perf_counter() - began)


def load(
    address: tuple[str, int], names: Sequence[str], queries: int
) -> tuple[float, float, float]:
    """(queries per second, p50 ms, p99 ms) of ``queries`` A questions, for ``names`` in
    turn; the clients share them out, so that no two ask the same one at once."""
    wires = [dns.message.make_query(name, "A").to_wire() for name in names]
    latencies: list[float] = []

    async def run() -> float:
        began = time.perf_counter()
        per = queries // CONCURRENCY
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    _client(address, wires[i::CONCURRENCY] or wires, per, latencies)
                    for i in range(CONCURRENCY)
                )
            ),
            LOAD_DEADLINE,
        )
        return time.perf_counter() - began

    elapsed = asyncio.run(run())
    return (
        len(latencies) / elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
    )


def _ask(address: tuple[str, int], name: str) -> int:
    """The rcode of an A question for ``name``, or -1 without an answer."""
    query = dns.message.make_query(name, "A")
    try:
        reply = dns.query.udp(query, address[0], port=address[1], timeout=1)
    except dns.exception.Timeout:
        return -1
    return int(reply.rcode())


def _answers(address: tuple[str, int], name: str, rcode: int) -> bool:
    return _ask(address, name) == rcode


def _imported(client: ApiClient, present: bool) -> bool:
    return (sc.get_custom(client, "serviceimports", NS, "moving") is not None) == present


def _corefile(directory: Path, port: int, agent: str, kubeconfig: Path) -> Path:
    path = directory / "Corefile"
    path.write_text(
        f"cluster.local:{port} {{\n"
        f"    kubernetes cluster.local {{\n        kubeconfig {kubeconfig}\n    }}\n"
        "    cache 30\n}\n"
        f"clusterset.local:{port} {{\n    cache 5\n    forward . {agent}\n}}\n"
    )
    return path


def _since(began: float, condition: Callable[[], bool], what: str) -> float:
    """Seconds from ``began`` until ``condition`` holds (polled every 2 ms, 30 s at most)."""
    wait_until(condition, timeout=30, interval=0.002, what=what)
    return time.monotonic() - began


def bench_dns(queries: int, changes: int) -> None:
    coredns = toolchain.locate_nodes().coredns
    with LocalEnvironment(("a", "b")) as env:
        fed = Federation(env, lease_ttl=10.0, check_consistency=False)
        fed.start()
        a, b = env.cluster("a"), env.cluster("b")
        for cluster in (a, b):
            sc.apply(cluster, sc.namespace(NS))
        sc.apply(a, sc.service(NS, "echo"), sc.endpoint_slice(a, NS, "echo", [10, 11]))
        sc.apply(a, sc.export(NS, "echo"))
        agent_host, _, agent_port = fed.agent_dns_address("b").rpartition(":")
        agent = (agent_host, int(agent_port))
        name = f"echo.{NS}.svc.clusterset.local."
        wait_until(lambda: _ask(agent, name) == dns.rcode.NOERROR, timeout=30, what="echo in b")

        port = free_port()
        corefile = _corefile(env.workdir, port, fed.agent_dns_address("b"), b.kubeconfig)
        env.group.start(
            "coredns", [str(coredns), "-conf", str(corefile)], env.workdir / "coredns.log"
        )
        server = ("127.0.0.1", port)
        own = "kubernetes.default.svc.cluster.local."
        wait_until(lambda: _ask(server, own) == dns.rcode.NOERROR, timeout=30, what="CoreDNS")

        print(f"dns: {queries} A queries, {CONCURRENCY} concurrent UDP clients, one name")
        print(f"{'server':<44} {'qps':>8} {'p50 ms':>8} {'p99 ms':>8}")
        # Questions never asked before: no response the agent keeps answers them.
        fresh = [f"n{i}.{NS}.svc.clusterset.local." for i in range(queries + queries // 10)]
        for label, address, names in (
            ("agent, directly", agent, [name]),
            ("agent, directly, every question new", agent, fresh),
            ("agent through CoreDNS (cache 5)", server, [name]),
            ("CoreDNS cluster.local (the ceiling)", server, [own]),
        ):
            load(address, names[queries:] or names, queries // 10)  # warm up
            qps, p50, p99 = load(address, names[:queries], queries)
            print(f"{label:<44} {qps:>8.0f} {p50:>8.2f} {p99:>8.2f}")

        with api_client(b) as client:
            _changes(a, client, agent, changes)


def _changes(a: LocalCluster, client: ApiClient, agent: tuple[str, int], changes: int) -> None:
    """Export and withdraw ``moving`` in ``a`` ``changes`` times; print how long until
    ``b``'s agent answers accordingly, and until b's ServiceImport follows."""
    answered: list[float] = []
    imported: list[float] = []
    name = f"moving.{NS}.svc.clusterset.local."
    sc.apply(a, sc.service(NS, "moving"), sc.endpoint_slice(a, NS, "moving", [12]))
    for i in range(changes):
        present = i % 2 == 0
        began = time.monotonic()
        if present:
            sc.apply(a, sc.export(NS, "moving"))
        else:
            sc.delete(a, "serviceexport", NS, "moving")
        want = dns.rcode.NOERROR if present else dns.rcode.NXDOMAIN
        answered.append(_since(began, functools.partial(_answers, agent, name, want), "the answer"))
        imported.append(
            _since(began, functools.partial(_imported, client, present), "the ServiceImport")
        )
    print(f"change in a -> b's answer, {changes} changes (export created or deleted):")
    # Negative: b's agent answered before b's ServiceImport was seen through the apiserver.
    after = [dns_at - import_at for dns_at, import_at in zip(answered, imported, strict=True)]
    for label, values in (
        ("new DNS answer in b", answered),
        ("ServiceImport in b", imported),
        ("answer - ServiceImport", after),
    ):
        print(
            f"  {label:<24} p50 {percentile(values, 50) * 1000:7.1f} ms   "
            f"p99 {percentile(values, 99) * 1000:7.1f} ms"
        )
