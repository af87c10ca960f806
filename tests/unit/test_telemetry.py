"""Telemetry's pure parts: the bootstrap's tags for per-source-cluster statistics, the
registry lag a watcher counts, and the access loggers a Gateway's settings become."""

from __future__ import annotations

import dataclasses
import re

import pytest

from federation.cli.bootstrap import BootstrapOptions, bootstrap, stats_config
from federation.registry.telemetry import parse_access_log
from federation.registry.watcher import WatcherStats
from federation.translate.gateway.telemetry import CLUSTER_ATTRIBUTE, access_loggers
from federation.translate.ir import ListenerIR
from federation.translate.proxy.access_log import otel_clusters


def _tags(cluster: str, stat: str) -> dict[str, str]:
    """What Envoy's tag extraction makes of ``stat`` with the bootstrap's tags: each
    regex's second group is the value (Envoy uses ECMAScript regexes; these need
    nothing Python reads differently)."""
    out = {}
    for tag in stats_config(cluster)["stats_tags"]:
        found = re.search(tag["regex"], stat)
        if found:
            out[tag["tag_name"]] = found.group(2)
    return out


@pytest.mark.parametrize(
    ("own", "source"), [("b", "a"), ("eu.west-1", "us.east.2"), ("a", "a"), ("x-1", "y")]
)
def test_zone_stats_are_tagged_with_both_clusters_whatever_their_dots(
    own: str, source: str
) -> None:
    stat = f"cluster.clusterset/shop/web/80.zone.{own}.{source}.upstream_rq_2xx"
    assert _tags(own, stat) == {"local_cluster": own, "source_cluster": source}
    # Another cluster's stat names are not the Envoy's own: nothing is tagged wrongly.
    assert "source_cluster" not in _tags(own + "x", stat)


def test_the_registry_lag_is_the_time_from_an_entry_id_to_its_application() -> None:
    stats = WatcherStats()
    stats.applied("1000000-0", now=1001.5)  # appended at 1000.000 s
    stats.applied("1002000-3", now=1002.25)
    assert stats.entries == 2
    assert stats.last_lag_seconds == pytest.approx(0.25)
    assert stats.lag_seconds_sum == pytest.approx(1.75)
    stats.applied("2000000-0", now=1999.0)  # another clock ahead: never negative
    assert stats.last_lag_seconds == 0.0


def test_otel_collectors_get_one_cluster_each_named_without_dots_for_stats() -> None:
    settings = parse_access_log(
        """
settings:
  - format: {type: Text, text: "%REQ(:PATH)%"}
    sinks:
      - {type: OpenTelemetry, openTelemetry: {host: otel.monitoring.svc}}
      - {type: OpenTelemetry, openTelemetry: {host: 10.0.0.9, port: 4318, resources: {a: b}}}
      - {type: File, file: {path: /dev/stderr}}
""",
        "ConfigMap shop/p",
    )
    loggers = access_loggers(settings, "b")
    assert loggers is not None and len(loggers) == 3
    text, ip, file = loggers
    assert text.text == "%REQ(:PATH)%" and text.resources == ((CLUSTER_ATTRIBUTE, "b"),)
    assert dict(ip.resources) == {"a": "b", CLUSTER_ATTRIBUTE: "b"}
    assert (file.file, file.otel_host) == ("/dev/stderr", None)
    listeners = [ListenerIR(f"gateway/{p}", p, access_logs=loggers) for p in (80, 81)]
    clusters = {n: c for li in listeners for n, c in otel_clusters(li).items()}
    assert sorted(clusters) == [
        "accesslog/otel/10.0.0.9/4318",
        "accesslog/otel/otel.monitoring.svc/4317",
    ]
    by_dns = clusters["accesslog/otel/otel.monitoring.svc/4317"]
    assert by_dns.alt_stat_name == "accesslog/otel/otel_monitoring_svc/4317"
    assert by_dns.type == by_dns.STRICT_DNS
    assert clusters["accesslog/otel/10.0.0.9/4318"].type == by_dns.STATIC


def test_disabled_and_absent_settings() -> None:
    assert access_loggers(None, "b") is None
    assert access_loggers(parse_access_log("disable: true", "w"), "b") == ()
    assert access_loggers(parse_access_log("{}", "w"), "b") is None


def test_the_tags_are_opt_in_since_envoy_pays_for_them_on_every_statistic() -> None:
    options = BootstrapOptions(cluster="b", xds_address="127.0.0.1:1", insecure_plaintext=True)
    assert "stats_config" not in bootstrap(options)
    assert bootstrap(options)["node"]["locality"] == {"zone": "b"}  # the zone stats stay
    tagged = bootstrap(dataclasses.replace(options, source_cluster_stats=True))
    assert tagged["stats_config"] == stats_config("b")
