"""A Gateway's access log as its parameters say (``accessLog``, Envoy Gateway's
``telemetry.accessLog`` shape), on a real Envoy: JSON lines of our fields on its standard
output, and the same requests sent to an OpenTelemetry collector (a small OTLP/gRPC
server on loopback, :mod:`e2e.otel_collector`); settings that cannot be used are refused
by name while the Envoy keeps logging as before.

On the shared three-cluster environment: a Gateway in ``b`` with a route to a
ServiceImport exported by ``a``. Backend host ids are 110 and up.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.federation import Federation
from e2e.otel_collector import Collector
from e2e.processes import wait_until
from e2e.test_gateway_api import CLUSTER_B, fed, gateway_address
from e2e.traffic import DEADLINE, export_with_backends

__all__ = ["fed"]


pytestmark = pytest.mark.integration


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "alog")


def parameters(ns: str, access_log: Any) -> dict[str, Any]:
    """The Gateway's parameters ConfigMap, holding ``access_log``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"namespace": ns, "name": "logging"},
        "data": {
            "accessLog": access_log if isinstance(access_log, str) else yaml.safe_dump(access_log)
        },
    }


def accepted(fed: Federation, ns: str) -> tuple[str, str, str]:
    """The Gateway's Accepted condition: status, reason and message."""
    obj = gw.get_yaml(fed.env.cluster(CLUSTER_B), "gateway", ns, "gw")
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Accepted":
            return c["status"], c["reason"], c.get("message", "")
    return "", "", ""


def test_a_gateways_access_log_goes_to_a_file_and_a_collector_as_its_parameters_say(
    fed: Federation, ns: str
) -> None:
    export_with_backends(fed, "a", ns, [110], start=True)
    b = fed.env.cluster(CLUSTER_B)
    address = gateway_address(fed)
    fields = {
        "path": "%REQ(:PATH)%",
        "code": "%RESPONSE_CODE%",
        "source_cluster": "%CEL(upstream.locality.sub_zone)%",
    }
    with Collector() as collector:
        settings = {
            "settings": [
                {
                    "format": {"type": "JSON", "json": fields},
                    "sinks": [
                        {"type": "File", "file": {"path": "/dev/stdout"}},
                        {
                            "type": "OpenTelemetry",
                            "openTelemetry": {
                                "host": collector.host,
                                "port": collector.port,
                                "resourceAttributes": {"service.name": "edge"},
                            },
                        },
                    ],
                }
            ]
        }
        gateway = gw.gateway(ns, "gw", int(address.rpartition(":")[2]))
        ref = {"group": "", "kind": "ConfigMap", "name": "logging"}
        gateway["spec"]["infrastructure"] = {"parametersRef": ref}
        gw.apply(b, parameters(ns, settings), gateway)
        envoy = fed.start_gateway_envoy(CLUSTER_B, ns, "gw")
        rule = {"matches": [gw.prefix("/api")], "backendRefs": [gw.backend("echo")]}
        gw.apply(b, gw.http_route(ns, "api", "gw", [rule]))
        gw.wait_for_status(address, "/api/ready", 200)

        path = f"/api/{uuid.uuid4().hex}"
        assert gw.request(address, path).status == 200
        logged: list[dict[str, Any]] = []

        def in_file() -> bool:
            logged[:] = [e for e in envoy.json_lines() if e.get("path") == path]
            return bool(logged)

        wait_until(in_file, timeout=DEADLINE, what=f"{path} on the Envoy's standard output")
        # Our fields only: the default line (response_code, route, ...) is replaced.
        assert logged == [{"path": path, "code": 200, "source_cluster": "a"}]

        def sent() -> bool:
            return any(r.attributes.get("path") == path for r in collector.records())

        wait_until(sent, timeout=DEADLINE, what=f"{path} at the collector")
        (record,) = [r for r in collector.records() if r.attributes.get("path") == path]
        print(f"\nfile: {logged[0]}\ncollector: {record}")
        assert record.attributes["source_cluster"] == "a"
        assert record.resource["k8s.cluster.name"] == "b"
        assert record.resource["service.name"] == "edge"

        # Settings that cannot be used: refused by name, and the Envoy keeps its log.
        bad = {"settings": [{"matches": ["response.code >= 500"], **settings["settings"][0]}]}
        gw.apply(b, parameters(ns, bad))
        wait_until(
            lambda: accepted(fed, ns)[:2] == ("False", "InvalidParameters"),
            timeout=DEADLINE,
            what="the Gateway to refuse the parameters",
        )
        assert "accessLog.settings[0].matches" in accepted(fed, ns)[2], accepted(fed, ns)
        paths = [f"/api/after-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
        codes = [gw.request(address, p).status for p in paths]
        assert codes == [200] * 20
        wait_until(
            lambda: {e.get("path") for e in envoy.json_lines()} >= set(paths),
            timeout=DEADLINE,
            what="the requests after the refusal in the log",
        )
