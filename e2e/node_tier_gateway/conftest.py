"""The package fixture of the Gateway API conformance tests on the node tier.

Federation installed with Helm (:func:`e2e.helm_install.install`) on node clusters ``a``
(the hub and an agent) and ``b`` (an agent): ``c`` plays no part in the suite, which
drives ``b`` alone. In ``b``: the suite's images, our GatewayClass (``federation``, our
controller name), and a LoadBalancer controller (:mod:`e2e.load_balancer`) that gives
each Gateway's Service an address on the fabric that ``b``'s node answers for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from e2e import images, pods, toolchain
from e2e.gateways import gateway_class
from e2e.helm_install import Installed, install
from e2e.load_balancer import LoadBalancerController, cluster_pools
from e2e.nodes import NodeCluster, NodeEnvironment
from e2e.processes import ProcessGroup
from e2e.redis_server import RedisServer

#: The hub's cluster and the cluster under test.
CLUSTERS = ("a", "b")
UNDER_TEST = "b"


@dataclass
class GatewayConformanceEnv:
    installed: Installed
    cluster: NodeCluster
    load_balancer: LoadBalancerController
    tools: toolchain.GatewayConformanceTools


@pytest.fixture(scope="package")
def conformance_env() -> Iterator[GatewayConformanceEnv]:
    tools = toolchain.ensure_gateway_conformance()  # before anything starts
    group = ProcessGroup()
    try:
        with (
            NodeEnvironment(CLUSTERS, federation_crds=False) as env,
            RedisServer(group) as redis,
        ):
            images.check_gateway_conformance_images(env.built_images)
            installed = install(env, redis, clusters=CLUSTERS)
            cluster = env.cluster(UNDER_TEST)
            cluster.load_images(images.GATEWAY_CONFORMANCE_IMAGES)
            pools = cluster_pools(env.cluster_ids)
            with LoadBalancerController(cluster, pools[UNDER_TEST]) as load_balancer:
                pods.apply(cluster, gateway_class())
                yield GatewayConformanceEnv(installed, cluster, load_balancer, tools)
    finally:
        group.stop_all()
