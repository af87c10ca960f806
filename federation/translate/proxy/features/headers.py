"""Header modifiers (``RequestHeaderModifier``, ``ResponseHeaderModifier``), on a route and
on each of its weighted backends: ``set`` overwrites, ``add`` appends, ``remove`` removes.

Values are literal in Gateway API, while Envoy reads ``%`` in a header value as the start
of a substitution command (``%REQ(x)%``, ``%HOSTNAME%``): every ``%`` is written ``%%``,
which Envoy turns back into one ``%``."""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2

from federation.translate.ir import HeaderModIR, RouteIR
from federation.translate.proxy.features.base import Feature

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD


def literal(value: str) -> str:
    """``value`` as Envoy must be given it to send it unchanged."""
    return value.replace("%", "%%")


def _headers_to_add(mod: HeaderModIR) -> list[base_pb2.HeaderValueOption]:
    options = [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=h.name, value=literal(h.value)),
            append_action=_OVERWRITE,
        )
        for h in mod.set
    ]
    options += [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=h.name, value=literal(h.value)),
            append_action=_APPEND,
        )
        for h in mod.add
    ]
    return options


def apply_headers(target: Any, request: HeaderModIR | None, response: HeaderModIR | None) -> None:
    """Header modifiers onto a Route or a ClusterWeight (same field names)."""
    if request is not None:
        target.request_headers_to_add.extend(_headers_to_add(request))
        target.request_headers_to_remove.extend(request.remove)
    if response is not None:
        target.response_headers_to_add.extend(_headers_to_add(response))
        target.response_headers_to_remove.extend(response.remove)


def patch_route(ir: RouteIR, out: Any) -> None:
    if out.HasField("route") and out.route.HasField("weighted_clusters"):
        # The core builds one weighted entry per backend, in the backends' order.
        for entry, backend in zip(out.route.weighted_clusters.clusters, ir.backends, strict=True):
            apply_headers(entry, backend.request_headers, backend.response_headers)
    apply_headers(out, ir.request_headers, ir.response_headers)


FEATURE = Feature("headers", patch_route=patch_route)
