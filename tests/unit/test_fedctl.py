"""fedctl: bootstrap input checks and the proxy-status table."""

import re

import pytest

from federation.cli.bootstrap import BootstrapOptions, BootstrapTls, bootstrap
from federation.cli.fedctl import render_proxy_status
from federation.errors import InvalidInputError
from federation.xds.status import SyncRegistry

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def test_bootstrap_names_the_node_by_cluster_and_reaches_the_hub_over_ads() -> None:
    config = bootstrap(
        BootstrapOptions(
            cluster="b", xds_address="127.0.0.1:18000", delta=True, insecure_plaintext=True
        )
    )
    assert config["node"] == {"id": "envoy-b", "cluster": "b", "locality": {"zone": "b"}}
    assert config["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_a_gateways_envoy_names_its_gateway_in_the_node_metadata() -> None:
    options = BootstrapOptions(
        cluster="b", xds_address="127.0.0.1:18000", insecure_plaintext=True, gateway="shop/gw"
    )
    assert bootstrap(options)["node"] == {
        "id": "envoy-b-shop-gw",
        "cluster": "b",
        "locality": {"zone": "b"},
        "metadata": {"federation.gateway": "shop/gw"},
    }
    for bad in ("shop", "shop/gw/x", "Shop/gw"):
        with pytest.raises(InvalidInputError, match="--gateway"):
            bootstrap(
                BootstrapOptions(
                    cluster="b", xds_address="127.0.0.1:1", insecure_plaintext=True, gateway=bad
                )
            )


@pytest.mark.parametrize(
    ("cluster", "xds", "fragment"),
    [("Bad_Id", "127.0.0.1:1", "invalid cluster id"), ("a", "nohost", "--xds must be HOST:PORT")],
)
def test_bootstrap_rejects_bad_input(cluster: str, xds: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        bootstrap(BootstrapOptions(cluster=cluster, xds_address=xds, insecure_plaintext=True))


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
    header = ["NODE", "GROUP", "PROTOCOL", "CDS", "EDS", "SDS", "LDS", "RDS", "SYNCED"]
    assert lines[0].split() == header
    assert lines[1].split() == ["envoy-a", "a", "sotw", "synced", "synced", "-", "-", "-", "yes"]
    assert lines[2].split() == ["envoy-b", "b", "delta", "nacked", "stale", "-", "-", "-", "NO"]
    assert lines[3] == "envoy-b Cluster NACKed version v7: bad cluster"


def test_proxy_status_of_several_replicas_says_which_serves_each_envoy() -> None:
    entry = {"protocol": "sotw", "synced": True, "types": {CDS: {"state": "synced"}}}
    proxies = [
        {**entry, "node_id": "envoy-b", "group": "b", "hub": "http://hub-1:18080"},
        {**entry, "node_id": "envoy-a", "group": "a", "hub": "http://hub-0:18080"},
    ]
    lines = render_proxy_status(proxies, hub_column=True).splitlines()
    assert lines[0].split()[:3] == ["HUB", "NODE", "GROUP"]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["http://hub-0:18080", "envoy-a"],
        ["http://hub-1:18080", "envoy-b"],
    ]


def test_proxy_status_says_when_nothing_is_connected() -> None:
    assert "(no Envoy connected)" in render_proxy_status([])


def _xds_cluster(xds: str) -> dict[str, object]:
    (cluster,) = bootstrap(BootstrapOptions(cluster="a", xds_address=xds, insecure_plaintext=True))[
        "static_resources"
    ]["clusters"]
    return cluster  # type: ignore[no-any-return]


def test_a_hub_given_by_name_is_resolved_by_dns_and_one_given_by_ip_is_static() -> None:
    """Envoy refuses a host name in a STATIC cluster: in a pod the hub is a Service name.
    A name is resolved in both families into one host that Envoy connects to with happy
    eyeballs, so it works whichever family the hub listens on."""
    by_name = _xds_cluster("federation-hub.federation.svc:18000")
    assert (by_name["type"], by_name["dns_lookup_family"]) == ("LOGICAL_DNS", "ALL")
    for by_ip in (_xds_cluster("10.96.0.10:18000"), _xds_cluster("[fd00::10]:18000")):
        assert by_ip["type"] == "STATIC"
        assert "dns_lookup_family" not in by_ip


def test_the_hub_connection_is_kept_alive() -> None:
    options = _xds_cluster("127.0.0.1:18000")["typed_extension_protocol_options"]
    (http,) = options.values()  # type: ignore[attr-defined]
    keepalive = http["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"]
    assert keepalive == {"interval": "15s", "timeout": "5s"}


def test_bootstrap_needs_tls_or_an_explicit_insecure_flag() -> None:
    with pytest.raises(InvalidInputError, match="--insecure-plaintext"):
        bootstrap(BootstrapOptions(cluster="a", xds_address="127.0.0.1:1"))
    tls = BootstrapTls("/c/tls.crt", "/c/tls.key", "/c/ca.crt")
    with pytest.raises(InvalidInputError, match="contradicts"):
        bootstrap(
            BootstrapOptions(
                cluster="a", xds_address="127.0.0.1:1", tls=tls, insecure_plaintext=True
            )
        )


def test_bootstrap_presents_the_cluster_certificate_and_pins_the_hub_identity() -> None:
    tls = BootstrapTls("/c/tls.crt", "/c/tls.key", "/c/ca.crt", trust_domain="example.org")
    config = bootstrap(BootstrapOptions(cluster="a", xds_address="hub.fed.svc:18000", tls=tls))
    (cluster,) = config["static_resources"]["clusters"]
    socket = cluster["transport_socket"]["typed_config"]
    assert socket["sni"] == "hub.fed.svc"
    common = socket["common_tls_context"]
    assert common["alpn_protocols"] == ["h2"]
    assert common["tls_certificates"] == [
        {"certificate_chain": {"filename": "/c/tls.crt"}, "private_key": {"filename": "/c/tls.key"}}
    ]
    validation = common["validation_context"]
    assert validation["trusted_ca"] == {"filename": "/c/ca.crt"}
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://example.org/hub"}}
    ]


def test_a_gateways_bootstrap_reaches_its_agent_with_the_clusters_certificate() -> None:
    tls = BootstrapTls(
        "/c/tls.crt", "/c/tls.key", "/c/ca.crt", trust_domain="example.org", agent_server_name="ag"
    )
    options = BootstrapOptions(
        cluster="a",
        xds_address="hub.fed.svc:18000",
        tls=tls,
        gateway="shop/gw",
        agent_address="agent.fed.svc:18443",
    )
    _, agent = bootstrap(options)["static_resources"]["clusters"]
    assert agent["name"] == "federation-agent" and agent["type"] == "LOGICAL_DNS"
    socket = agent["transport_socket"]["typed_config"]
    assert socket["sni"] == "ag"
    common = socket["common_tls_context"]
    assert common["tls_certificates"][0]["certificate_chain"] == {"filename": "/c/tls.crt"}
    # The agent, not the hub nor another cluster's agent.
    assert common["validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "URI", "matcher": {"exact": "spiffe://example.org/cluster/a/agent"}}
    ]
    shared = BootstrapOptions(cluster="a", xds_address="h:1", tls=tls, agent_address="x:1")
    with pytest.raises(InvalidInputError, match="--agent-address is for a Gateway's Envoys"):
        bootstrap(shared)


def test_proxy_status_shows_refused_and_unknown_nodes_with_their_reason() -> None:
    refused = [
        {
            "node_id": "envoy-x",
            "group": "x",
            "peer": "ipv4:127.0.0.1",
            "synced": False,
            "types": {},
            "refused": {
                "reason": "unknown-cluster",
                "code": "NOT_FOUND",
                "message": "'x' is no member cluster",
                "count": 3,
            },
        },
        {
            "node_id": "envoy-a",
            "group": "a",
            "peer": "spiffe://federation.local/cluster/b",
            "synced": False,
            "types": {},
            "refused": {
                "reason": "identity-mismatch",
                "code": "PERMISSION_DENIED",
                "message": "node.cluster 'a' disagrees",
                "count": 1,
            },
        },
    ]
    lines = render_proxy_status(refused).splitlines()
    assert lines[1].split() == ["envoy-a", "a", "-", "-", "-", "-", "-", "-", "REFUSED"]
    assert lines[2].split() == ["envoy-x", "x", "-", "-", "-", "-", "-", "-", "UNKNOWN"]
    assert (
        "envoy-a from spiffe://federation.local/cluster/b refused 1x "
        "(identity-mismatch, PERMISSION_DENIED): node.cluster 'a' disagrees" in lines
    )
    assert "envoy-x from ipv4:127.0.0.1 refused 3x (unknown-cluster, NOT_FOUND): " in "\n".join(
        lines
    )


def test_a_node_served_after_a_refusal_is_no_longer_shown_as_refused() -> None:
    sync = SyncRegistry()
    sync.refuse("ipv4:10.0.0.1", "envoy-b", "b", "unknown-cluster", "NOT_FOUND", "no b yet")
    sync.refuse("ipv4:10.0.0.1", "envoy-c", "c", "unknown-cluster", "NOT_FOUND", "no c yet")
    sync.admitted(sync.open("envoy-b", "b", "sotw"))
    assert [(r.node_id, r.group) for r in sync.refused()] == [("envoy-c", "c")]


def test_hub_replicas_listed_by_ip_are_priorities_that_fail_over() -> None:
    """Without a Service in front, an Envoy prefers the first replica listed and moves to
    the next once one fails (outlier detection ejects it after one failure)."""
    cluster = _xds_cluster("127.0.0.2:18000,127.0.0.3:18001,[::1]:18002")
    assert cluster["type"] == "STATIC"
    endpoints = cluster["load_assignment"]["endpoints"]  # type: ignore[index]
    assert [
        (e["priority"], e["lb_endpoints"][0]["endpoint"]["address"]["socket_address"])
        for e in endpoints
    ] == [
        (0, {"address": "127.0.0.2", "port_value": 18000}),
        (1, {"address": "127.0.0.3", "port_value": 18001}),
        (2, {"address": "::1", "port_value": 18002}),
    ]
    detection = cluster["outlier_detection"]
    assert detection["consecutive_5xx"] == 1  # type: ignore[index]
    assert detection["max_ejection_percent"] == 100  # type: ignore[index]
    assert "outlier_detection" not in _xds_cluster("127.0.0.2:18000")


@pytest.mark.parametrize(
    ("xds", "fragment"),
    [
        ("hub.fed.svc:18000,127.0.0.2:18000", "a name (hub.fed.svc) is given alone"),
        ("127.0.0.2:18000,127.0.0.2:18000", "lists a hub replica twice"),
        ("127.0.0.2:18000,", "--xds must be HOST:PORT"),
    ],
)
def test_hub_replica_lists_refuse_names_and_repeats(xds: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(fragment)):
        _xds_cluster(xds)
