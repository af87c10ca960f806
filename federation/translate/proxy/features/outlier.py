"""Outlier detection (passive health checking), on by default
(``TranslateOptions.outlier_detection``).

Fail-static keeps a dead cluster's endpoints, so Envoy itself must stop using them: 5
consecutive 5xx (connect failures count, since local-origin errors are not split out)
eject a host; checked every 5 s (Envoy's default is 10 s) for 30 s at first. Up to 100 %,
not Envoy's 10 %: a whole cluster may be gone, and its hosts must all leave so that the
traffic moves to the next priority instead of still trying the dead ones.
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
            consecutive_5xx={"value": 5},
            interval=duration_pb2.Duration(seconds=5),
            base_ejection_time=duration_pb2.Duration(seconds=30),
            max_ejection_percent={"value": 100},
        )
    )


FEATURE = Feature("outlier-detection", patch_cluster=patch_cluster)
