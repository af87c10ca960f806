"""The upstream HTTP protocol: HTTP/2 to backends whose port says so (``h2c``, gRPC);
otherwise Envoy's default, HTTP/1.1."""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from federation.translate.inputs import TranslateOptions
from federation.translate.proxy.features.base import ClusterSource, Feature

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def patch_cluster(ir: ClusterSource, out: Any, options: TranslateOptions) -> None:
    if ir.http2:
        h2 = http_protocol_options_pb2.HttpProtocolOptions(
            explicit_http_config={"http2_protocol_options": {}}
        )
        out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(h2, deterministic=True)


FEATURE = Feature("upstream-http", patch_cluster=patch_cluster)
