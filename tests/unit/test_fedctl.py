"""fedctl: bootstrap input checks and the proxy-status table."""

import pytest

from federation.cli.bootstrap import BootstrapOptions, bootstrap
from federation.cli.fedctl import render_proxy_status
from federation.errors import InvalidInputError

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def test_bootstrap_names_the_node_by_cluster_and_reaches_the_hub_over_ads() -> None:
    config = bootstrap(BootstrapOptions(cluster="b", xds_address="127.0.0.1:18000", delta=True))
    assert config["node"] == {"id": "envoy-b", "cluster": "b"}
    assert config["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("cluster", "xds", "fragment"),
    [("Bad_Id", "127.0.0.1:1", "invalid cluster id"), ("a", "nohost", "--xds must be HOST:PORT")],
)
def test_bootstrap_rejects_bad_input(cluster: str, xds: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        bootstrap(BootstrapOptions(cluster=cluster, xds_address=xds))


def test_proxy_status_shows_every_envoy_and_the_nack_message() -> None:
    proxies = [
        {
            "node_id": "envoy-a",
            "group": "a",
            "protocol": "sotw",
            "synced": True,
            "types": {CDS: {"state": "synced"}, EDS: {"state": "synced"}},
        },
        {
            "node_id": "envoy-b",
            "group": "b",
            "protocol": "delta",
            "synced": False,
            "types": {
                CDS: {"state": "nacked", "last_nack": {"version": "v7", "message": "bad cluster"}},
                EDS: {"state": "stale"},
            },
        },
    ]
    lines = render_proxy_status(proxies).splitlines()
    assert lines[0].split() == ["NODE", "CLUSTER", "PROTOCOL", "CDS", "EDS", "LDS", "RDS", "SYNCED"]
    assert lines[1].split() == ["envoy-a", "a", "sotw", "synced", "synced", "-", "-", "yes"]
    assert lines[2].split() == ["envoy-b", "b", "delta", "nacked", "stale", "-", "-", "NO"]
    assert lines[3] == "envoy-b Cluster NACKed version v7: bad cluster"


def test_proxy_status_says_when_nothing_is_connected() -> None:
    assert "(no Envoy connected)" in render_proxy_status([])


def _xds_cluster(xds: str) -> dict[str, object]:
    (cluster,) = bootstrap(BootstrapOptions(cluster="a", xds_address=xds))["static_resources"][
        "clusters"
    ]
    return cluster  # type: ignore[no-any-return]


def test_a_hub_given_by_name_is_resolved_by_dns_and_one_given_by_ip_is_static() -> None:
    """Envoy refuses a host name in a STATIC cluster: in a pod the hub is a Service name."""
    assert _xds_cluster("federation-hub.federation.svc:18000")["type"] == "STRICT_DNS"
    assert _xds_cluster("10.96.0.10:18000")["type"] == "STATIC"
    assert _xds_cluster("[fd00::10]:18000")["type"] == "STATIC"


def test_the_hub_connection_is_kept_alive() -> None:
    options = _xds_cluster("127.0.0.1:18000")["typed_extension_protocol_options"]
    (http,) = options.values()  # type: ignore[attr-defined]
    keepalive = http["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"]
    assert keepalive == {"interval": "15s", "timeout": "5s"}
