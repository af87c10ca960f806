"""The second stage's output is accepted by the real Envoy (``--mode validate``).

Golden files prove the translator writes what we meant; this proves Envoy 1.40 takes it:
the IR of every case of ``tests/golden/proxy`` (inputs) and ``tests/golden/gateway``
(outputs of the first stage) is built with :func:`node_config`, beside the clusterset
listener, and loaded by Envoy in validation mode, with the route configurations inlined
into their listeners and the certificate Secrets made static ones that the listeners name
(there is no xDS server to send them), and real certificate files where a listener
terminates TLS. A field Envoy rejects here would be a NACK of the whole listener.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format

from e2e import toolchain
from e2e.pki import CertificateAuthority
from federation.cli.bootstrap import agent_cluster
from federation.registry.codec import from_json
from federation.translate.clusterset import clusterset_listener
from federation.translate.ir import ClustersetIR, GatewayIR, NodeGroupIR
from federation.translate.proxy import node_config
from tests import golden_files
from tests.unit import test_translate_golden as translate_golden
from tests.unit.test_gateway_golden import CASES as GATEWAY_CASES
from tests.unit.test_gateway_golden import GOLDEN as GATEWAY_GOLDEN
from tests.unit.test_proxy_golden import CASES, GOLDEN

#: (IR document, listener host) of every golden case, by name.
IRS = {
    **{
        f"proxy/{c}": (yaml.safe_load((GOLDEN / f"{c}.in.yaml").read_text())["ir"], "127.0.0.1")
        for c in CASES
    },
    # Each Gateway of a stage-1 golden output, as its own Envoys get it.
    **{
        f"gateway/{c}/{g['namespace']}/{g['name']}": (g, "0.0.0.0")
        for c in GATEWAY_CASES
        for g in yaml.safe_load((GATEWAY_GOLDEN / f"{c}.out.yaml").read_text())["gateways"]
    },
}

pytestmark = pytest.mark.integration

TYPE = "type.googleapis.com/envoy.extensions."
HCM = TYPE + "filters.network.http_connection_manager.v3.HttpConnectionManager"
DOWNSTREAM_TLS = TYPE + "transport_sockets.tls.v3.DownstreamTlsContext"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _json(message: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        json_format.MessageToJson(message, preserving_proto_field_name=True)
    )
    return data


def _inline_routes(listener: dict[str, Any], routes: dict[str, Any]) -> None:
    for chain in listener["filter_chains"]:
        for f in chain["filters"]:
            config = f["typed_config"]
            if config.get("@type") == HCM and "rds" in config:
                inline = dict(routes[config.pop("rds")["route_config_name"]])
                # The clusters arrive over xDS in production; only their names matter here.
                inline["validate_clusters"] = False
                config["route_config"] = inline


def _static_secrets(listener: dict[str, Any], secrets: dict[str, Any]) -> None:
    """Make the listener's SDS references name static Secrets (an SDS config without a
    config source does), after checking that each names one of ``secrets``."""
    for chain in listener["filter_chains"]:
        config = chain.get("transport_socket", {}).get("typed_config", {})
        if config.get("@type") != DOWNSTREAM_TLS:
            continue
        for sds in config["common_tls_context"].get("tls_certificate_sds_secret_configs", []):
            assert sds["name"] in secrets, f"{sds['name']} is no Secret of the node group"
            assert "ads" in sds.pop("sds_config")


def _certificates(ir: GatewayIR, secret_dir: Path) -> None:
    ca = CertificateAuthority("validate-ca")
    for listener in ir.listeners:
        for chain in listener.tls:
            for cert in chain.certificates:
                directory = secret_dir / cert.namespace / cert.name
                directory.mkdir(parents=True, exist_ok=True)
                ca.serving("127.0.0.1").write(directory, "tls")


def _assert_envoy_accepts(bootstrap: dict[str, Any], tmp_path: Path) -> None:
    """Envoy loads ``bootstrap`` in validation mode."""
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(bootstrap))
    proc = subprocess.run(
        [str(toolchain.locate().envoy), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.parametrize("case", sorted(IRS))
def test_real_envoy_accepts_the_gateway_config(case: str, tmp_path: Path) -> None:
    document, host = IRS[case]
    ir = from_json(GatewayIR, document)
    secrets = tmp_path / "secrets"
    _certificates(ir, secrets)
    # A cluster's shared Envoys have the clusterset listener; a Gateway's own do not.
    shared = clusterset_listener(host, 10080) if case.startswith("proxy/") else None
    group = NodeGroupIR(ir.cluster, shared, ir)
    resources = node_config(ClustersetIR(), group, host, secret_dir=str(secrets))
    routes = {name: _json(r) for name, r in resources.routes.items()}
    listeners = [_json(listener) for listener in resources.listeners.values()]
    for listener in listeners:
        _inline_routes(listener, routes)
        _static_secrets(listener, resources.secrets)
    bootstrap = {
        "node": {"id": "validate", "cluster": ir.cluster},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds"}}],
            }
        },
        "static_resources": {
            "secrets": [_json(s) for s in resources.secrets.values()],
            "listeners": listeners,
            "clusters": [
                {
                    "name": "xds",
                    "type": "STATIC",
                    "typed_extension_protocol_options": {
                        HTTP_OPTIONS: {
                            "@type": "type.googleapis.com/" + HTTP_OPTIONS,
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "xds",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": 1,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                },
                # Where a Gateway's Envoys discover their basic auth and API key filters.
                agent_cluster(ir.cluster, "127.0.0.1:1", None),
                *(_json(c) for c in resources.clusters.values()),
            ],
        },
    }
    _assert_envoy_accepts(bootstrap, tmp_path)


def test_every_case_is_validated() -> None:
    """Every proxy case, and every stage-1 case with at least one Gateway."""
    covered = {name.rsplit("/", 2)[0] if name.startswith("gateway/") else name for name in IRS}
    wanted = {f"proxy/{c}" for c in golden_files.cases(GOLDEN)}
    wanted |= {f"gateway/{c}" for c in golden_files.cases(GATEWAY_GOLDEN)}
    assert covered == wanted


def test_real_envoy_accepts_what_the_agent_serves_for_credentials(tmp_path: Path) -> None:
    """The basic auth and API key configurations an agent serves over ECDS (built from a
    policy and its Secrets as the agent does) load in Envoy: a NACK there would leave
    the routes refusing every request."""
    import base64
    import hashlib

    from agents.credentials import SecretData, policy_credentials
    from federation.registry import policies as p

    sha = base64.b64encode(hashlib.sha1(b"pw").digest()).decode()
    spec = {
        "basicAuth": {"users": {"name": "users"}, "forwardUsernameHeader": "x-user"},
        "apiKeyAuth": {
            "credentialRefs": [{"name": "keys"}],
            "extractFrom": [
                {"headers": ["x-api-key", "x-key"]},
                {"params": ["api_key"]},
                {"cookies": ["key"]},
            ],
            "forwardClientIDHeader": "x-client-id",
            "sanitize": True,
        },
    }
    record = p.SecurityPolicyRecord("b", "shop", "auth", from_json(p.SecurityPolicySpec, spec))
    secrets = {
        ("shop", "users"): SecretData(data={".htpasswd": f"# team\nalice:{{SHA}}{sha}\n"}),
        ("shop", "keys"): SecretData(data={"alice": "k1", "bob": "k2"}),
    }
    configs = policy_credentials(record, [], secrets).configs
    assert len(configs) == 2
    filters = []
    for name, config in sorted(configs.items()):
        typed = _json(config)
        typed["@type"] = "type.googleapis.com/" + config.DESCRIPTOR.full_name
        filters.append({"name": name, "typed_config": typed})
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    filters.append({"name": "envoy.filters.http.router", "typed_config": {"@type": router}})
    hcm = {
        "@type": HCM,
        "stat_prefix": "credentials",
        "http_filters": filters,
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"]}]},
    }
    listener = {
        "name": "credentials",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }
    _assert_envoy_accepts({"static_resources": {"listeners": [listener]}}, tmp_path)


@pytest.mark.parametrize("case", translate_golden.CASES)
def test_real_envoy_accepts_the_clusterset_config(case: str, tmp_path: Path) -> None:
    """Every clusterset golden (``tests/golden/translate``), as its viewer's Envoys get
    it, with each EDS cluster made static with the assignment it would be sent: the
    priorities and locality weights of local first and of FailoverPolicies included."""
    loaded = translate_golden.load_case(case)
    resources = translate_golden.build(loaded, loaded.records)
    clusters = []
    for name, message in resources.clusters.items():
        cluster = _json(message)
        cluster.pop("eds_cluster_config", None)
        cluster["type"] = "STATIC"
        cluster["load_assignment"] = _json(resources.endpoints[name])
        clusters.append(cluster)
    routes = {name: _json(r) for name, r in resources.routes.items()}
    listeners = [_json(listener) for listener in resources.listeners.values()]
    for listener in listeners:
        _inline_routes(listener, routes)
    bootstrap = {"static_resources": {"listeners": listeners, "clusters": clusters}}
    _assert_envoy_accepts(bootstrap, tmp_path)
