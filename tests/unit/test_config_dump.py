"""``fedctl config-dump``: the hub's payload decoded with envoy-data-plane, pinned by golden
files (``tests/golden/config_dump``; ``--update-golden`` rewrites them), and the
comparison with an Envoy's admin view."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2

from federation.cli import config_dump as cd
from federation.debug_payloads import ConfigDump
from federation.errors import InvalidInputError
from federation.hub.config_dump import payload
from federation.translate.inputs import ImportView
from federation.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Resource,
    Snapshot,
    SnapshotCache,
)
from tests import golden_files
from tests.samples import service
from tests.translation import build_node_config

GOLDEN = golden_files.ROOT / "config_dump"


def hub_payload() -> ConfigDump:
    """What the hub answers for cluster b serving a's and b's ``demo/echo``."""
    config = build_node_config(
        [ImportView.of([service("a"), service("b")])], "b", ("127.0.0.1", 10080)
    )
    resources = [
        Resource.of(message, name)
        for kind in (config.clusters, config.endpoints, config.listeners, config.routes)
        for name, message in kind.items()
    ]
    cache = SnapshotCache()
    cache.set("b", Snapshot.build(resources))
    cache.mark_ready()
    found = payload(cache, "b")
    assert found is not None
    return found


def envoy_config_dump(dump: cd.Dump) -> dict[str, Any]:
    """An Envoy admin ``/config_dump`` holding exactly ``dump``'s resources."""

    def of(type_url: str) -> list[dict[str, Any]]:
        return [
            {"@type": type_url, **copy.deepcopy(s.resource or {})} for s in dump.resources[type_url]
        ]

    admin = "type.googleapis.com/envoy.admin.v3."
    return {
        "configs": [
            {"@type": admin + "BootstrapConfigDump", "bootstrap": {"node": {"id": "envoy-b"}}},
            {"@type": admin + "ClustersConfigDump",
             "dynamic_active_clusters": [{"cluster": c} for c in of(CLUSTER)]},
            {"@type": admin + "ListenersConfigDump",
             "dynamic_listeners": [{"name": c["name"], "active_state": {"listener": c}}
                                   for c in of(LISTENER)]},
            {"@type": admin + "RoutesConfigDump",
             "dynamic_route_configs": [{"route_config": c} for c in of(ROUTE)]},
            {"@type": admin + "EndpointsConfigDump",
             "dynamic_endpoint_configs": [{"endpoint_config": c} for c in of(ENDPOINT)]},
        ]
    }  # fmt: skip


def test_the_dump_uses_envoys_field_names(update_golden: bool) -> None:
    dump = cd.dump_of(hub_payload())
    assert dump.errors == []
    golden_files.check(GOLDEN, "dump", cd.render(dump), update_golden)
    assert json.loads(cd.render(dump, "json"))["cluster"] == "b"


def test_a_type_filter_keeps_only_that_type() -> None:
    dump = cd.dump_of(hub_payload(), cd.types_of(["routes"]))
    assert list(dump.resources) == [ROUTE]
    with pytest.raises(InvalidInputError, match="--type tlsroutes"):
        cd.types_of(["tlsroutes"])


def test_a_malformed_resource_is_reported_with_its_field_path() -> None:
    found = hub_payload()
    broken = cluster_pb2.Cluster(name="broken")
    broken.transport_socket.name = "tls"
    broken.transport_socket.typed_config.type_url = "type.googleapis.com/example.Nothing"
    broken.transport_socket.typed_config.value = b"\x01"
    found["resources"][CLUSTER].append(
        {
            "name": "broken",
            "version": "v",
            "body": base64.b64encode(broken.SerializeToString()).decode(),
        }
    )
    dump = cd.dump_of(found)
    (error,) = dump.errors
    assert error.name == "broken"
    assert error.path == "Cluster.transport_socket.typed_config"
    assert "example.Nothing" in error.reason
    assert "field: Cluster.transport_socket.typed_config" in cd.render(dump)


def test_an_envoy_that_holds_the_same_shows_no_difference() -> None:
    dump = cd.dump_of(hub_payload())
    envoy = cd.envoy_resources(envoy_config_dump(dump))
    comparison = cd.compare(dump, envoy, None)
    assert not comparison.differs
    assert comparison.same == {"clusters": 1, "endpoints": 1, "listeners": 1, "routes": 1}


def test_a_difference_is_a_diff_with_the_nack_message(update_golden: bool) -> None:
    dump = cd.dump_of(hub_payload())
    admin_view = envoy_config_dump(dump)
    listeners = admin_view["configs"][2]["dynamic_listeners"]
    listeners[0]["active_state"]["listener"]["address"]["socket_address"]["port_value"] = 9999
    listeners[0]["error_state"] = {"details": "cannot bind 127.0.0.1:10080: Address in use"}
    proxy = {
        "node_id": "envoy-b",
        "types": {
            LISTENER: {
                "state": "nacked",
                "last_nack": {
                    "version": "abc",
                    "at": "2026-11-27T00:00:00.000Z",
                    "message": "Error adding/updating listener(s) clusterset-http",
                },
            }
        },
    }
    comparison = cd.compare(dump, cd.envoy_resources(admin_view), proxy)
    assert comparison.differs
    text = cd.render_comparison(comparison, cd.envoy_resources(admin_view), "127.0.0.1:9901")
    golden_files.check(GOLDEN, "diff", text, update_golden)
    assert "-    port_value: 10080\n+    port_value: 9999\n" in text
    assert "NACKed by envoy-b" in text and "Address in use" in text


def test_endpoints_compare_as_envoy_applied_them() -> None:
    """Envoy's admin fills in defaults and drops empty localities: equal content, equal."""
    served = {
        "cluster_name": "c",
        "endpoints": [
            {"locality": {"sub_zone": "a"}, "load_balancing_weight": 1},
            {
                "locality": {"sub_zone": "b"},
                "lb_endpoints": [{"endpoint": {"address": {"socket_address": {"port_value": 1}}}}],
            },
        ],
    }
    shown = {
        "cluster_name": "c",
        "endpoints": [
            {
                "locality": {"sub_zone": "b"},
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {"socket_address": {"port_value": 1}},
                            "health_check_config": {},
                        },
                        "load_balancing_weight": 1,
                    }
                ],
            }
        ],
        "policy": {"overprovisioning_factor": 140},
    }
    assert cd.as_applied(ENDPOINT, served) == cd.as_applied(ENDPOINT, shown)
    assert cd.as_applied(ENDPOINT, served) != cd.as_applied(
        ENDPOINT, {**shown, "policy": {"overprovisioning_factor": 100}}
    )
    assert cd.as_applied(CLUSTER, {"name": "x"}) == {"name": "x"}
