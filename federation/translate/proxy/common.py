"""Small Envoy building blocks shared by the second stage's modules.

Called by :mod:`federation.translate.proxy` and its ``features``; pure.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import duration_pb2

HCM_FILTER = "envoy.filters.network.http_connection_manager"


def ads() -> Any:
    """A config source that says: over the ADS stream this Envoy already has."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def duration_ms(ms: int) -> Any:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def http_filter(name: str, config: Any) -> Any:
    """An HTTP filter of a connection manager, its typed config packed deterministically."""
    out = hcm_pb2.HttpFilter(name=name)
    out.typed_config.Pack(config, deterministic=True)
    return out
