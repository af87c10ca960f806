"""The hub chart's Grafana dashboard reads metrics that really exist.

The dashboard JSON is taken from the ConfigMap ``helm template`` renders from the hub
chart. Every query's metric names, and the labels it groups or filters by, are checked
against what the shared three-cluster environment's hub, b's agent, b's Envoy and a
Gateway's Envoy in b (with ``--source-cluster-stats``) expose (``/metrics``,
``/stats/prometheus``) after each served a request from a's pod (the Gateway's route
under a BackendTrafficPolicy with ``routeStatName``, for the per-route panels): a
renamed metric or label fails here, not on a user's empty panel.
"""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from e2e import gateways as gw
from e2e import scenario as sc
from e2e import toolchain
from e2e.cluster import REPO_ROOT
from e2e.federation import Federation, prometheus_values
from e2e.processes import wait_until
from e2e.test_gateway_api import CLUSTER_B, fed, gateway_address
from e2e.test_security_policy import envoy_gateway_policy
from e2e.traffic import DEADLINE, export_with_backend, host, wait_served_by

pytestmark = pytest.mark.integration

HUB_CHART = REPO_ROOT / "charts" / "federation-hub"
#: Labels Prometheus adds to every scraped sample.
SCRAPE_LABELS = {"instance", "job"}
#: PromQL words that are not metric names.
PROMQL_WORDS = {"sum", "max", "min", "avg", "rate", "irate", "increase", "histogram_quantile"}
_SELECTOR = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_GROUPING = re.compile(r"\bby\s*\(([^)]*)\)")
_MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'(\w+)="')


__all__ = ["fed"]


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "dash")


def dashboard() -> dict[str, Any]:
    """The dashboard as the hub chart ships it (its ConfigMap, rendered by helm)."""
    done = subprocess.run(
        [
            str(toolchain.locate_helm()), "template", "t", str(HUB_CHART),
            "--set", "registry.existingSecret=hub-registry",
            "--show-only", "templates/dashboard.yaml",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (config_map,) = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    parsed: dict[str, Any] = json.loads(config_map["data"]["federation.json"])
    return parsed


def queries(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def used(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names ``expr`` uses."""
    labels = {m for s in _SELECTOR.findall(expr) for m in _MATCHER.findall(s)}
    labels |= {label.strip() for g in _GROUPING.findall(expr) for label in g.split(",")}
    bare = _GROUPING.sub(" ", _SELECTOR.sub(" ", expr))
    names = {n for n in _NAME.findall(bare) if n not in PROMQL_WORDS and not n.isdigit()}
    return names, labels - {""}


def exported(*texts: str) -> dict[str, set[str]]:
    """Metric name -> the label names its samples carry, over Prometheus expositions."""
    found: dict[str, set[str]] = {}
    for text in texts:
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name = _NAME.match(line)
            assert name is not None, line
            found.setdefault(name.group(), set()).update(_LABEL.findall(line[name.end() :]))
    return found


def test_every_dashboard_query_names_metrics_and_labels_that_are_exported(
    fed: Federation, ns: str
) -> None:
    fed.start_backend("a", 16)
    export_with_backend(fed, "a", ns, 16)
    envoy = fed.envoys["b"]
    wait_served_by(envoy, host(ns), "a")
    assert envoy.request(host(ns), "/dashboard").status == 200
    # The Gateway's Envoy tags its statistics per source cluster (--source-cluster-stats).
    b = fed.env.cluster(CLUSTER_B)
    address = gateway_address(fed)
    gw.apply(b, gw.gateway(ns, "gw", int(address.rpartition(":")[2])))
    fed.start_gateway_envoy(CLUSTER_B, ns, "gw", source_cluster_stats=True)
    rule = {"matches": [gw.prefix("/api")], "backendRefs": [gw.backend("echo")]}
    pattern = "%ROUTE_KIND%/%ROUTE_NAMESPACE%/%ROUTE_NAME%"
    gw.apply(
        b,
        gw.http_route(ns, "api", "gw", [rule]),
        envoy_gateway_policy(
            "BackendTrafficPolicy", ns, "stats", "HTTPRoute", "api",
            telemetry={"metrics": {"routeStatName": pattern}},
        ),
    )  # fmt: skip
    gateway_envoy = fed.gateway_envoys[CLUSTER_B, ns, "gw"]
    route = f"httproute/{ns}/api"

    def counted_per_route() -> bool:
        gw.try_request(address, "/api/dashboard")
        return f'envoy_route="{route}"' in gateway_envoy.admin("/stats/prometheus")

    wait_until(counted_per_route, timeout=DEADLINE, what=f"the Gateway's Envoy to count {route}")
    # Its requests were answered by a's pod: counted per source cluster.
    from_a = {"local_cluster": "b", "source_cluster": "a", "envoy_response_code_class": "2"}
    stats = gateway_envoy.admin("/stats/prometheus")
    (answered,) = prometheus_values(stats, "envoy_cluster_zone_upstream_rq_xx", from_a)
    assert answered >= 1, stats
    metrics = exported(
        fed.hub_http("/metrics"),
        fed.metrics("b"),
        envoy.admin("/stats/prometheus"),
        gateway_envoy.admin("/stats/prometheus"),
    )
    exprs = queries(dashboard())
    assert len(exprs) >= 10, exprs
    problems = []
    checked: set[str] = set()
    for expr in exprs:
        names, labels = used(expr)
        assert names, expr
        for name in sorted(names - metrics.keys()):
            problems.append(f"{name} is exported by none of hub, agent, Envoy: {expr}")
        have = set().union(*(metrics.get(n, set()) for n in names)) | SCRAPE_LABELS
        for label in sorted(labels - have):
            problems.append(f"no sample of {sorted(names)} has label {label}: {expr}")
        checked |= names
    assert not problems, "\n".join(problems)
    print(f"\n{len(exprs)} dashboard queries, {len(checked)} metrics, all exported")
