"""Shorthands for tests: both translation stages of the clusterset, from ImportViews.

Each goes through the production functions the hub calls (``service_ir`` and
``service_cluster`` of the first stage, ``node_config`` and the cluster and listener
builders of the second), so what a test checks is what the hub serves.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from federation.registry.records import ServicePort
from federation.translate.clusterset import (
    clusterset_listener,
    service_cluster,
    service_ir,
)
from federation.translate.inputs import ImportView, TranslateOptions
from federation.translate.ir import ClustersetIR, NodeGroupIR
from federation.translate.proxy import (
    XdsResources,
    node_config,
    render_clusterset_routes,
)
from federation.translate.proxy.clusters import ClaVariant, assignment, assignments, variant_for
from federation.translate.proxy.clusters import cluster as render_cluster
from federation.translate.proxy.listeners import DEFAULT_SECRET_DIR, listener

OPTIONS = TranslateOptions()


def clusterset(views: Iterable[ImportView]) -> ClustersetIR:
    """The first stage over ``views``, sorted as the hub serves them."""
    ordered = sorted(views, key=lambda v: (v.namespace, v.name))
    return ClustersetIR(tuple(service_ir(v) for v in ordered))


def build_node_config(
    views: Iterable[ImportView],
    viewer: str | None,
    listener_address: tuple[str, int] | None,
    options: TranslateOptions = OPTIONS,
) -> XdsResources[Any]:
    """Everything the Envoys of ``viewer`` get; no clusterset listener when
    ``listener_address`` is None."""
    own = None if listener_address is None else clusterset_listener(*listener_address)
    host = "127.0.0.1" if listener_address is None else listener_address[0]
    return node_config(clusterset(views), NodeGroupIR(viewer, own), host, options)


def build_cluster(view: ImportView, port: ServicePort, options: TranslateOptions = OPTIONS) -> Any:
    return render_cluster(service_cluster(view, port), options)


def build_cla(
    view: ImportView, port: ServicePort, viewer: str | None, options: TranslateOptions = OPTIONS
) -> Any:
    return assignment(service_cluster(view, port), cla_variant(view, viewer, options), options)


def build_cla_variants(
    view: ImportView, port: ServicePort, options: TranslateOptions = OPTIONS
) -> dict[ClaVariant, Any]:
    return assignments(service_cluster(view, port), options)


def cla_variant(
    view: ImportView, viewer: str | None, options: TranslateOptions = OPTIONS
) -> ClaVariant:
    """The variant ``viewer`` gets of every port of ``view`` (they share exporters)."""
    return variant_for(service_ir(view).exporters, viewer, options)


def build_route_config(views: Iterable[ImportView]) -> Any:
    return render_clusterset_routes(service_ir(v) for v in views)


def build_listener(host: str, port: int) -> Any:
    return listener(clusterset_listener(host, port), host, DEFAULT_SECRET_DIR)
