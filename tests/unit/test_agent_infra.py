"""The infra manager's objects for a Gateway's own Envoys (agents.infra, pure parts)."""

from __future__ import annotations

from typing import Any

import pytest

from agents import infra_objects as infra
from agents.infra_objects import InfraSettings, InvalidParameters, Parameters, parse_parameters

SETTINGS = InfraSettings(
    cluster="b",
    envoy_image="federation.local/envoy:1.40.0",
    bootstrap_image="federation.local/federation:dev",
    hub_address="hub.federation-system:18000",
    hub_tls_secret="federation-xds-tls",
)
XDS_TLS = {"tls.crt": "Y3J0", "tls.key": "a2V5", "ca.crt": "Y2E="}


def gateway(**spec: Any) -> dict[str, Any]:
    listeners = [
        {"name": "http", "port": 80, "protocol": "HTTP"},
        {"name": "alt", "port": 8080, "protocol": "HTTP"},
        {
            "name": "https",
            "port": 443,
            "protocol": "HTTPS",
            "tls": {"certificateRefs": [{"name": "shop-cert"}, {"name": "x", "namespace": "o"}]},
        },
        {"name": "https-2", "port": 443, "protocol": "HTTPS", "hostname": "a.example.com"},
    ]
    return {
        "metadata": {"name": "gw", "namespace": "shop", "uid": "u-1"},
        "spec": {"gatewayClassName": "federation", "listeners": listeners, **spec},
    }


def by_kind(objects: list[tuple[Any, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for _, obj in objects}


def test_a_gateway_gets_its_own_envoys_owned_by_it() -> None:
    objects = by_kind(infra.desired_objects(gateway(), SETTINGS, Parameters(), XDS_TLS))
    assert set(objects) == {"ServiceAccount", "Secret", "Service", "Deployment"}  # 1 replica
    for obj in objects.values():
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "Gateway",
            "gw",
            "u-1",
            True,
        )
        assert obj["metadata"]["namespace"] == "shop"
        assert obj["metadata"]["name"].startswith("gw-envoy")
    service = objects["Service"]["spec"]
    assert service["type"] == "LoadBalancer"
    ports = [(p["port"], p["targetPort"]) for p in service["ports"]]
    # Exactly the listener ports; those below 1024 bound above it by the Envoy.
    assert ports == [(80, 10080), (443, 10443), (8080, 8080)]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (envoy,) = pod["containers"]
    assert [p["containerPort"] for p in envoy["ports"]] == [19001, 10080, 10443, 8080]
    # Ready once configured, whatever its listeners: the readiness listener, not a port.
    assert envoy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 19001}
    assert envoy["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    args = pod["initContainers"][0]["args"]
    assert "--gateway=shop/gw" in args and "--cluster=b" in args
    assert "--ready=0.0.0.0:19001" in args and "--admin=127.0.0.1:19000" in args
    assert "--xds=hub.federation-system:18000" in args
    mounts = {m["mountPath"] for m in envoy["volumeMounts"]}
    # The listener's own-namespace certificate, where the hub's config says Envoy reads it.
    assert "/etc/federation/secrets/shop/shop-cert" in mounts
    assert not any("/o/" in m for m in mounts)  # another namespace's, not granted: none
    assert objects["Secret"]["data"] == XDS_TLS


def test_a_granted_certificate_of_another_namespace_is_copied_and_mounted_as_itself() -> None:
    granted = {("o", "x"): {"tls.crt": "Yw==", "tls.key": "aw==", "ca.crt": "no"}}
    objects = infra.desired_objects(gateway(), SETTINGS, Parameters(), XDS_TLS, granted)
    secrets = {o["metadata"]["name"]: o for kind, o in objects if o["kind"] == "Secret"}
    copy = infra.copy_name("gw", "o", "x")
    assert secrets[copy]["data"] == {"tls.crt": "Yw==", "tls.key": "aw=="}  # no more
    assert secrets[copy]["metadata"]["annotations"][infra.COPY_OF] == "o/x"
    pod = by_kind(objects)["Deployment"]["spec"]["template"]["spec"]
    volume = next(
        v["name"] for v in pod["volumes"] if v.get("secret", {}).get("secretName") == copy
    )
    (envoy,) = pod["containers"]
    (mount,) = [m for m in envoy["volumeMounts"] if m["name"] == volume]
    # Mounted where the hub's configuration says: the original's namespace and name.
    assert mount["mountPath"] == "/etc/federation/secrets/o/x"


def test_more_replicas_get_a_disruption_budget_and_parameters_apply() -> None:
    params = parse_parameters(
        {"replicas": "3", "serviceType": "ClusterIP", "serviceAnnotations": "a: b"},
        "cm",
        Parameters(),
    )
    spec = gateway(infrastructure={"labels": {"team": "shop"}, "annotations": {"x": "y"}})
    objects = by_kind(infra.desired_objects(spec, SETTINGS, params, XDS_TLS))
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert objects["Deployment"]["spec"]["replicas"] == 3
    assert objects["Service"]["spec"]["type"] == "ClusterIP"
    assert objects["Service"]["metadata"]["annotations"] == {"x": "y", "a": "b"}
    template = objects["Deployment"]["spec"]["template"]["metadata"]
    assert template["labels"]["team"] == "shop" and template["annotations"]["x"] == "y"
    # Prometheus scrapes Envoy's metrics from the ready port.
    assert {k: v for k, v in template["annotations"].items() if k.startswith("prometheus")} == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "19001",
        "prometheus.io/path": "/stats/prometheus",
    }
    # A renewed xDS certificate rolls the pods: its digest is on the template.
    assert infra.XDS_TLS_CHECKSUM in template["annotations"]


def test_plain_text_hub_needs_no_secret_copy() -> None:
    settings = InfraSettings("b", "e", "f", "hub:1")
    objects = by_kind(infra.desired_objects(gateway(), settings, Parameters()))
    assert "Secret" not in objects
    args = objects["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert "--insecure-plaintext" in args
    assert not [a for a in args if a.startswith("--agent-address")]


def test_envoys_are_told_where_their_agent_serves_credentials() -> None:
    settings = InfraSettings("b", "e", "f", "hub:1", agent_address="agent.sys.svc:18443")
    objects = by_kind(infra.desired_objects(gateway(), settings, Parameters()))
    args = objects["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert "--agent-address=agent.sys.svc:18443" in args
    assert "--source-cluster-stats" not in args


def test_source_cluster_stats_reach_the_envoys_bootstrap_when_asked() -> None:
    settings = InfraSettings("b", "e", "f", "hub:1", source_cluster_stats=True)
    objects = by_kind(infra.desired_objects(gateway(), settings, Parameters()))
    args = objects["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]["args"]
    assert "--source-cluster-stats" in args


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"replicas": "many"}, "replicas"),
        ({"serviceType": "ExternalName"}, "serviceType"),
        ({"serviceAnnotations": "[1, 2]"}, "serviceAnnotations"),
        ({"resources": "cpu: 1"}, "resources"),
        ({"colour": "blue"}, "colour"),
        ({"accessLog": "settings: [{sinks: []}]"}, r"accessLog\.settings\[0\]: sinks"),
        (
            {"accessLog": "settings: [{matches: [x], sinks: [{type: File, file: {path: /a}}]}]"},
            r"not supported: accessLog\.settings\[0\]\.matches",
        ),
        (
            {"accessLog": "settings: [{sinks: [{type: ALS}]}]"},
            r"accessLog\.settings\[0\]\.sinks\[0\]\.type: 'ALS' is not one of",
        ),
        (
            {"accessLog": "settings: [{sinks: [{type: OpenTelemetry, openTelemetry: {port: 1}}]}]"},
            r"openTelemetry\.host: required",
        ),
        ({"accessLog": "disable: [yes"}, "accessLog is not YAML"),
    ],
)
def test_bad_parameters_are_refused_by_name(data: dict[str, str], named: str) -> None:
    with pytest.raises(InvalidParameters, match=named):
        parse_parameters(data, "ConfigMap shop/params", Parameters())


def test_access_log_parameters_follow_envoy_gateways_shape() -> None:
    data = {
        "accessLog": """
settings:
  - format: {type: JSON, json: {path: "%REQ(:PATH)%"}}
    sinks:
      - {type: File, file: {path: /dev/stdout}}
      - type: OpenTelemetry
        openTelemetry: {host: otel.monitoring.svc, port: 4317, resources: {a: b}}
"""
    }
    log = parse_parameters(data, "ConfigMap shop/params", Parameters()).access_log
    assert log is not None and not log.disable
    (setting,) = log.settings
    assert setting.format is not None and setting.format.json == (("path", "%REQ(:PATH)%"),)
    file_sink, otel_sink = setting.sinks
    assert file_sink.file is not None and file_sink.file.path == "/dev/stdout"
    otel = otel_sink.open_telemetry
    assert otel is not None and (otel.host, otel.port, otel.attributes) == (
        "otel.monitoring.svc",
        4317,
        (("a", "b"),),
    )
    assert parse_parameters({}, "x", Parameters()).access_log is None


def test_long_names_fit_a_dns_label_and_a_label_value() -> None:
    long = "g" * 80
    name = infra.object_name(long)
    assert len(name) <= 63 and name.endswith("-envoy")
    assert infra.object_name(long) != infra.object_name("g" * 81)
    assert len(infra.gateway_label(long)) <= 63


def test_addresses_come_from_the_load_balancer_else_the_cluster_ips() -> None:
    service: dict[str, Any] = {"spec": {"clusterIP": "10.96.0.9", "clusterIPs": ["10.96.0.9"]}}
    assert infra.gateway_addresses(service) == [{"type": "IPAddress", "value": "10.96.0.9"}]
    service["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "h"}]}}
    assert infra.gateway_addresses(service) == [
        {"type": "IPAddress", "value": "192.0.2.1"},
        {"type": "Hostname", "value": "h"},
    ]
    assert infra.gateway_addresses(None) == []


@pytest.mark.parametrize(
    ("addresses", "service_type", "named"),
    [
        ([{"type": "Hostname", "value": "gw.example.com"}], "LoadBalancer", "type Hostname"),
        ([{"value": "not-an-ip"}], "LoadBalancer", "not an IP address"),
        ([{"value": "192.0.2.1"}, {"value": "192.0.2.2"}], "LoadBalancer", "one address"),
        ([{"value": "192.0.2.1"}], "ClusterIP", "type ClusterIP"),
    ],
)
def test_addresses_a_service_cannot_carry_are_refused_by_name(
    addresses: list[dict[str, str]], service_type: str, named: str
) -> None:
    params = Parameters(service_type=service_type)
    problem = infra.address_problem(gateway(addresses=addresses), params)
    assert problem is not None and named in problem


def test_a_requested_address_becomes_the_services_load_balancer_ip() -> None:
    spec = gateway(addresses=[{"type": "IPAddress", "value": "192.0.2.7"}])
    assert infra.address_problem(spec, Parameters()) is None
    objects = by_kind(infra.desired_objects(spec, SETTINGS, Parameters(), XDS_TLS))
    assert objects["Service"]["spec"]["loadBalancerIP"] == "192.0.2.7"
    assert (
        "loadBalancerIP"
        not in by_kind(infra.desired_objects(gateway(), SETTINGS, Parameters(), XDS_TLS))[
            "Service"
        ]["spec"]
    )


def test_what_the_infra_manager_knows_overrides_the_gateways_conditions() -> None:
    from agents.infra import GatewayInfra

    assert GatewayInfra().conditions() == []
    found = GatewayInfra(invalid_parameters="bad replicas", problem="422").conditions()
    assert [(c.type, c.status.value, c.reason) for c in found] == [
        ("Accepted", "False", "InvalidParameters"),
        ("Programmed", "False", "Invalid"),
    ]
    assert "cannot be provisioned: 422" in found[1].message
