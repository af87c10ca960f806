"""The core user story on real pods: a Deployment-backed Service exported from ``a`` is
answered, through ``b``'s Envoy (itself a pod), by one of ``a``'s pods."""

from __future__ import annotations

import json

from e2e import pods
from e2e.envoy import EnvoyClient
from e2e.federation import Federation
from e2e.nodes import NodeEnvironment
from e2e.processes import wait_until
from e2e.traffic import DEADLINE, host

NS = "story"


def test_request_through_b_envoy_is_answered_by_a_pod(
    node_env: NodeEnvironment, node_federation: Federation, envoy_b: EnvoyClient
) -> None:
    a, b = node_env.cluster("a"), node_env.cluster("b")
    pods.apply(
        a,
        pods.namespace(NS),
        pods.echo_deployment(NS, "a"),
        pods.service(NS),
        pods.service_export(NS),
    )
    a_pods = pods.wait_ready_pods(a, NS, "app=echo", 2)

    # The EndpointSlice the agent exports is the EndpointSlice controller's, with pod IPs.
    def controller_slice_ready() -> bool:
        out = a.kubectl(
            "get", "endpointslices", "-n", NS, "-l", "kubernetes.io/service-name=echo",
            "-o", "json",
        ).stdout  # fmt: skip
        addresses = {
            address
            for eps in json.loads(out)["items"]
            if eps["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by")
            == "endpointslice-controller.k8s.io"
            for endpoint in eps["endpoints"]
            if endpoint["conditions"].get("ready")
            for address in endpoint["addresses"]
        }
        return addresses == set(a_pods.values())

    wait_until(controller_slice_ready, timeout=DEADLINE, what="a's controller EndpointSlice")

    # b imports it (the namespace must exist there, as MCS requires).
    pods.apply(b, pods.namespace(NS))
    wait_until(
        lambda: b.kubectl("get", "serviceimport", "echo", "-n", NS, check=False).returncode == 0,
        timeout=DEADLINE,
        what="the ServiceImport in b",
    )

    envoy = envoy_b
    answers: list[dict[str, str]] = []

    def answered_by_a() -> bool:
        try:
            resp = envoy.request(host(NS), "/story", timeout=2)
        except OSError:
            return False
        if resp.status != 200:
            return False
        answers.append(json.loads(resp.body))
        return True

    wait_until(answered_by_a, timeout=DEADLINE, what="b's Envoy to answer for a's Service")
    answer = answers[-1]
    assert answer["cluster"] == "a"
    assert answer["pod"] in a_pods
    assert answer["path"] == "/story"
    # b's Envoy pod dialled a's pod directly, over the flat clusterset network: the pod
    # saw the Envoy pod's own address (nothing masquerades on the way).
    assert answer["client"] == pods.envoy_pod_ip(b)
    eds_hosts = envoy.host_health(f"clusterset/{NS}/echo/80")
    assert eds_hosts, envoy.admin("/clusters")
    assert {address.rsplit(":", 1)[0] for address in eds_hosts} == set(a_pods.values())
