"""Installed with Helm on node clusters a, b and c: every pod Ready, every gateway Envoy
synced, an exported Deployment-backed Service imported and answered across clusters;
clusterset.local resolved by pods through the CoreDNS block the chart's hooks add (a
headless StatefulSet exported from a and c, resolved in b);
a hub upgrade under load with zero failed requests, a rollback, and an uninstall that
leaves nothing of the release behind."""

from __future__ import annotations

import functools
import json
import time
import urllib.request

from e2e import pods
from e2e.federation import fedctl
from e2e.helm_install import (
    CHARTS,
    CLUSTERS,
    HUB_CLUSTER,
    NS,
    Installed,
    helm,
    json_of,
)
from e2e.nodes import NodeCluster
from e2e.processes import HarnessError, wait_until
from e2e.toolchain import ENVOY_GATEWAY_CRDS
from e2e.traffic import DEADLINE, Loop, Outcome, host
from federation.dns import coredns

APP = "helm-story"
#: The hub pods' HTTP port (the chart's http.port).
HUB_HTTP_PORT = 18080
RELEASES = ("federation-crds", "federation-hub", "federation-agent")


def _gateway_address(cluster: NodeCluster) -> str:
    ip = next(iter(pods.wait_ready_pods(
        cluster, NS, "app.kubernetes.io/component=gateway", 1
    ).values()))  # fmt: skip
    return cluster.forward_to_pod(ip, 10080, name="gateway")


def _request(address: str, hostname: str) -> Outcome:
    req = urllib.request.Request(f"http://{address}/", headers={"Host": hostname})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return Outcome(str(json.loads(resp.read())["cluster"]))
    except OSError as err:
        return Outcome(None, f"{type(err).__name__}: {err}")


def _imported(cluster: NodeCluster) -> bool:
    return cluster.kubectl("get", "serviceimport", "echo", "-n", APP, check=False).returncode == 0


def test_every_pod_is_ready(installed: Installed) -> None:
    for cluster_id in CLUSTERS:
        cluster = installed.env.cluster(cluster_id)
        listed = json_of(cluster, "get", "pods", "-n", NS)
        items = listed["items"]
        assert isinstance(items, list)
        names = sorted(p["metadata"]["labels"]["app.kubernetes.io/component"] for p in items)
        # The hub chart's default: two replicas.
        assert names == (["agent", "gateway", "hub", "hub"] if cluster_id == HUB_CLUSTER else
                         ["agent", "gateway"])  # fmt: skip
        for p in items:
            ready = {c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"]
            assert ready == "True", (cluster_id, p["metadata"]["name"])


def test_proxy_status_shows_every_gateway_synced(installed: Installed) -> None:
    """Through the Service's node port one replica answers, with its own Envoys only: an
    operator gives every hub pod (``--hub`` each) and sees every Envoy once."""
    hub = installed.env.cluster(HUB_CLUSTER)
    ips = pods.wait_ready_pods(hub, NS, "app.kubernetes.io/component=hub", 2)
    urls = []
    for ip in sorted(ips.values()):
        urls += ["--hub", f"http://{hub.forward_to_pod(ip, HUB_HTTP_PORT, name='hub-http')}"]
    shown: list[str] = []

    def synced() -> bool:
        done = fedctl("proxy-status", *urls, timeout=30)
        shown[:] = [done.stdout + done.stderr]
        rows = [line.split() for line in done.stdout.splitlines()[1:] if line.strip()]
        return done.returncode == 0 and sorted((r[2], r[-1]) for r in rows if len(r) > 3) == [
            (c, "yes") for c in CLUSTERS
        ]

    wait_until(synced, timeout=DEADLINE, what="fedctl proxy-status: every gateway synced")
    assert shown[0].splitlines()[0].split()[:2] == ["HUB", "NODE"], shown[0]
    assert all(f" {c} " in shown[0] for c in CLUSTERS), shown[0]
    print(f"\n{shown[0]}")


def test_an_export_in_a_is_imported_and_answered_through_b(installed: Installed) -> None:
    _export_from_a_answered_through_b(installed)


def _export_from_a_answered_through_b(installed: Installed) -> None:
    """a's echo Deployment exported, imported in b and c, answered through b's gateway."""
    env = installed.env
    a = env.cluster("a")
    pods.apply(a, pods.namespace(APP), pods.echo_deployment(APP, "a"), pods.service(APP),
               pods.service_export(APP))  # fmt: skip
    a_pods = pods.wait_ready_pods(a, APP, "app=echo", 2)
    for cluster_id in ("b", "c"):
        cluster = env.cluster(cluster_id)
        pods.apply(cluster, pods.namespace(APP))
        wait_until(
            functools.partial(_imported, cluster),
            timeout=DEADLINE,
            what=f"the ServiceImport in {cluster_id}",
        )
    gateway = _gateway_address(env.cluster("b"))
    answers: list[str] = []

    def answered() -> bool:
        try:
            req = urllib.request.Request(f"http://{gateway}/", headers={"Host": host(APP)})
            with urllib.request.urlopen(req, timeout=2) as resp:
                answers.append(json.loads(resp.read())["pod"])
                return True
        except OSError:
            return False

    wait_until(answered, timeout=DEADLINE, what="b's gateway to answer for a's Service")
    assert answers[-1] in a_pods


def test_pods_resolve_clusterset_names_through_the_charts_coredns_block(
    installed: Installed,
) -> None:
    """The chart's hook pointed CoreDNS at the agent's DNS Service: a pod in b resolves
    a's export to b's ClusterSetIP."""
    b = installed.env.cluster("b")
    service_ip = json_of(b, "get", "service", "federation-agent-dns", "-n", NS)["spec"]
    assert f"forward . {service_ip['clusterIP']}\n" in _corefile(b)  # type: ignore[index]
    if not _imported(b):
        _export_from_a_answered_through_b(installed)
    pods.apply(b, pods.client_pod(APP))
    pods.wait_ready_pods(b, APP, "app=client", 1)
    ips = json_of(b, "get", "serviceimport", "echo", "-n", APP)["spec"]["ips"]  # type: ignore[index]
    name = f"echo.{APP}.svc.clusterset.local"
    wait_until(
        lambda: pods.resolve_in_pod(b, APP, "client", name) == ips[0],
        timeout=DEADLINE * 2, interval=1, what=f"{name} in b's pod",
    )  # fmt: skip


def test_a_pod_in_b_resolves_a_statefulset_exported_from_a_and_c(installed: Installed) -> None:
    """Through the chart's DNS Service (UDP, as CoreDNS forwards in production): every
    ready endpoint of both exporters, each pod by hostname and cluster, SRV per pod."""
    env, ns = installed.env, "helm-dns"
    zone = f"{ns}.svc.clusterset.local"
    for cluster_id in CLUSTERS:
        pods.apply(env.cluster(cluster_id), pods.namespace(ns))
    for cluster_id, replicas in (("a", 2), ("c", 1)):
        pods.apply(
            env.cluster(cluster_id),
            pods.statefulset(ns, cluster_id, replicas),
            pods.headless_service(ns),
            pods.service_export(ns, "db"),
        )
    b = env.cluster("b")
    pods.apply(b, pods.client_pod(ns))
    db_a = pods.wait_ready_pods(env.cluster("a"), ns, "app=db", 2)
    db_c = pods.wait_ready_pods(env.cluster("c"), ns, "app=db", 1)
    pods.wait_ready_pods(b, ns, "app=client", 1)
    expected = {
        f"db.{zone} A": sorted([*db_a.values(), *db_c.values()]),
        f"db-0.a.db.{zone} A": [db_a["db-0"]],
        f"db-1.a.db.{zone} A": [db_a["db-1"]],
        f"db-0.c.db.{zone} A": [db_c["db-0"]],
        f"_http._tcp.db.{zone} SRV": sorted(
            f"0 33 80 {host}.db.{zone}." for host in ("db-0.a", "db-1.a", "db-0.c")
        ),
    }
    questions = [(q.rsplit(" ", 1)[0], q.rsplit(" ", 1)[1]) for q in expected]
    last: dict[str, object] = {}

    def answered() -> bool:
        nonlocal last
        last = pods.resolve_all_in_pod(b, ns, questions)
        return last == expected

    try:
        wait_until(answered, timeout=DEADLINE * 3, interval=1, what=f"db.{zone} in b's pod")
    except HarnessError as err:
        raise AssertionError(f"{err}\nanswers: {last}\nexpected: {expected}") from err


def _corefile(cluster: NodeCluster) -> str:
    data = json_of(cluster, "get", "configmap", "coredns", "-n", "kube-system")["data"]
    return str(data["Corefile"])  # type: ignore[index]


def test_a_hub_upgrade_and_rollback_fail_no_request(installed: Installed) -> None:
    env = installed.env
    hub = env.cluster(HUB_CLUSTER)
    _export_from_a_answered_through_b(installed)  # the same Service (idempotent)
    gateway = _gateway_address(env.cluster("b"))

    def hub_pod() -> str:
        return hub.kubectl("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=hub",
                           "-o", "jsonpath={.items[*].metadata.uid}").stdout  # fmt: skip

    before = hub_pod()
    with Loop(None, count=3000, seconds=240, probe=lambda: _request(gateway, host(APP))) as loop:
        loop.wait_for(20)
        helm(hub, "upgrade", "federation-hub", str(CHARTS / "federation-hub"), "-n", NS,
             *installed.hub_values("logLevel=DEBUG"), "--wait")  # fmt: skip
        upgraded = hub_pod()
        assert upgraded != before, "the upgrade did not roll the hub"
        helm(hub, "rollback", "federation-hub", "1", "-n", NS, "--wait")
        assert hub_pod() not in (before, upgraded)
        since = time.monotonic()
        loop.wait_for(20, since=since)
    assert loop.results, "no request was made"
    assert not loop.failed, loop.failed[:5]
    assert set(loop.served()) == {"a"}
    args = json_of(hub, "get", "deployment", "federation-hub", "-n", NS)
    container = args["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
    assert "--log-level=INFO" in container["args"]


def test_uninstall_leaves_nothing_of_the_release_but_the_crds(installed: Installed) -> None:
    """Last in this module: it removes what the other tests use."""
    for cluster_id in CLUSTERS:
        cluster = installed.env.cluster(cluster_id)
        releases = ["federation-agent"] + (["federation-hub"] if cluster_id == HUB_CLUSTER else [])
        for release in releases:
            helm(cluster, "uninstall", release, "-n", NS, "--wait")
        helm(cluster, "uninstall", "federation-crds", "--wait")
        kinds = cluster.kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
        # Pods of a deleted Deployment take their grace period to go.
        seen: list[list[str]] = [[]]
        try:
            wait_until(
                functools.partial(_only_crds_left, cluster, kinds, seen),
                timeout=DEADLINE * 3,
                what=f"only the CRDs left of the releases in {cluster_id}",
            )
        except HarnessError as err:
            left, gone = sorted(set(seen[0]) - set(CRDS)), sorted(set(CRDS) - set(seen[0]))
            raise AssertionError(f"{err}; left: {left}; CRDs not kept: {gone}") from err
        # The pre-delete hook took CoreDNS's clusterset.local block out, and only it.
        corefile = _corefile(cluster)
        assert coredns.BEGIN not in corefile and "kubernetes cluster.local" in corefile


CRDS = sorted(
    f"customresourcedefinition.apiextensions.k8s.io/{crd}"
    for crd in ("clusterproperties.about.k8s.io", "serviceexports.multicluster.x-k8s.io",
                "serviceimports.multicluster.x-k8s.io",
                "failoverpolicies.policy.federation.io",
                # Envoy Gateway's policy CRDs, which the CRD chart installs too.
                *(f"{plural}.gateway.envoyproxy.io" for plural in ENVOY_GATEWAY_CRDS))
)  # fmt: skip


def _only_crds_left(cluster: NodeCluster, kinds: list[str], seen: list[list[str]]) -> bool:
    """Whether the CRDs (kept by their resource policy) are all that is left of the
    releases, of every kind the cluster lists; what is left goes into ``seen``."""
    left = cluster.kubectl(
        "get", ",".join(k for k in kinds if not k.startswith("events")), "-A",
        "-l", f"app.kubernetes.io/instance in ({','.join(RELEASES)})", "-o", "name",
    ).stdout.split()  # fmt: skip
    seen[:] = [sorted(left)]
    return sorted(left) == CRDS
