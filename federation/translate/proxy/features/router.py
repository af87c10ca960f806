"""Envoy's router, the last HTTP filter of every listener: it sends the request upstream."""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.extensions.filters.http.router.v3 import router_pb2

from federation.translate.ir import ListenerIR
from federation.translate.proxy.common import http_filter
from federation.translate.proxy.features.base import Feature

ROUTER_FILTER = "envoy.filters.http.router"


def _http_filter(listener: ListenerIR) -> Any:
    return http_filter(ROUTER_FILTER, router_pb2.Router())


FEATURE = Feature("router", http_filter=_http_filter)
