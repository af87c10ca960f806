"""The shape of a second-stage feature; see :mod:`federation.translate.proxy.features`."""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from federation.translate import names
from federation.translate.inputs import TranslateOptions
from federation.translate.ir import ClusterPolicyIR, ListenerIR, RouteIR


class ClusterSource(Protocol):
    """What a cluster feature reads of a cluster's IR (a clusterset, a local or a policy
    cluster): ``policy`` holds a BackendTrafficPolicy's settings, None the defaults."""

    @property
    def name(self) -> str: ...

    @property
    def http2(self) -> bool: ...

    @property
    def policy(self) -> ClusterPolicyIR | None: ...


def serves_policies(listener: ListenerIR) -> bool:
    """Whether routes of ``listener`` may carry a BackendTrafficPolicy's faults or rate
    limits: a Gateway's listeners, not the clusterset listener (whose routes are the
    services' own), which is spared those filters."""
    return listener.name != names.LISTENER_NAME


def listener_routes(listener: ListenerIR) -> Iterator[RouteIR]:
    """Every route of ``listener``: of its plain virtual hosts and of its TLS chains'."""
    hosts = [*listener.virtual_hosts, *(h for c in listener.tls for h in c.virtual_hosts)]
    for host in hosts:
        yield from host.routes


@dataclass(frozen=True)
class Feature:
    """One feature's hooks; see the package docstring. ``name`` is for errors and docs.
    A feature with one HTTP filter per something (a policy) gives ``http_filters``,
    which returns them in order, instead of ``http_filter``."""

    name: str
    http_filter: Callable[[ListenerIR], Any | None] | None = None
    http_filters: Callable[[ListenerIR], list[Any]] | None = None
    patch_route: Callable[[RouteIR, Any], None] | None = None
    patch_cluster: Callable[[ClusterSource, Any, TranslateOptions], None] | None = None
