"""Outlier detection (passive health checking), on by default
(``TranslateOptions.outlier_detection``).

Fail-static keeps a dead cluster's endpoints, so Envoy itself must stop using them: 5
consecutive connection failures (refused, timed out, reset: errors of Envoy's own side,
split from the HTTP responses a backend gives) eject a host; checked every 5 s (Envoy's
default is 10 s) for 30 s at first. Up to 100 %, not Envoy's 10 %: a whole cluster may be
gone, and its hosts must all leave so that the traffic moves to the next priority
instead of still trying the dead ones.

A backend that answers, even with a 5xx, is alive and is not ejected: an application's
own errors (a route's ``retry`` may retry them) would otherwise take a single-replica
Service out of rotation for 30 s and answer every request 503 meanwhile.

A BackendTrafficPolicy's ``healthCheck.passive`` replaces all of this for its clusters.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import outlier_detection_pb2
from google.protobuf import duration_pb2

from federation.translate.inputs import TranslateOptions
from federation.translate.ir import OutlierIR
from federation.translate.proxy.common import duration_ms
from federation.translate.proxy.features.base import ClusterSource, Feature


def patch_cluster(ir: ClusterSource, out: Any, options: TranslateOptions) -> None:
    own = None if ir.policy is None else ir.policy.outlier
    if own is not None:
        out.outlier_detection.CopyFrom(_passive(own))
        return
    if not options.outlier_detection:
        return
    out.outlier_detection.CopyFrom(
        outlier_detection_pb2.OutlierDetection(
            split_external_local_origin_errors=True,
            consecutive_local_origin_failure={"value": 5},
            enforcing_consecutive_local_origin_failure={"value": 100},
            enforcing_consecutive_5xx={"value": 0},
            enforcing_consecutive_gateway_failure={"value": 0},
            interval=duration_pb2.Duration(seconds=5),
            base_ejection_time=duration_pb2.Duration(seconds=30),
            max_ejection_percent={"value": 100},
        )
    )


def _passive(own: OutlierIR) -> Any:
    """A BackendTrafficPolicy's ``healthCheck.passive``, as Envoy Gateway builds it: an
    error count it sets is enforced at 100 %; what it leaves out keeps Envoy's default."""
    out = outlier_detection_pb2.OutlierDetection()
    if own.interval_ms is not None:
        out.interval.CopyFrom(duration_ms(own.interval_ms))
    if own.base_ejection_ms is not None:
        out.base_ejection_time.CopyFrom(duration_ms(own.base_ejection_ms))
    if own.max_ejection_percent:
        out.max_ejection_percent.value = own.max_ejection_percent
    if own.consecutive_5xx is not None:
        out.consecutive_5xx.value = own.consecutive_5xx
    if own.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = own.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = 100
    if own.consecutive_local_origin_failures is not None:
        out.consecutive_local_origin_failure.value = own.consecutive_local_origin_failures
    if own.split_external_local_origin_errors is not None:
        out.split_external_local_origin_errors = own.split_external_local_origin_errors
    if own.failure_percentage_threshold is not None:
        out.failure_percentage_threshold.value = own.failure_percentage_threshold
        out.enforcing_failure_percentage.value = 100
    if own.always_eject_one is not None:
        out.always_eject_one_host.value = own.always_eject_one
    return out


FEATURE = Feature("outlier-detection", patch_cluster=patch_cluster)
