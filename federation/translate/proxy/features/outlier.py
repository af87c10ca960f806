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
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import outlier_detection_pb2
from google.protobuf import duration_pb2

from federation.translate.inputs import TranslateOptions
from federation.translate.proxy.features.base import ClusterSource, Feature


def patch_cluster(ir: ClusterSource, out: Any, options: TranslateOptions) -> None:
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


FEATURE = Feature("outlier-detection", patch_cluster=patch_cluster)
