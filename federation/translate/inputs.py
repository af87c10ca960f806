"""Typed inputs of the translator: the imports to translate and the options.

The hub's snapshot builder makes an :class:`ImportView` per ServiceImport
from its model of the registry and passes it, with one
:class:`TranslateOptions` built from the hub's flags in ``main()``, to
:mod:`federation.translate.clusterset` and :mod:`federation.translate.proxy`.
Everything here is a frozen, hashable value, validated when built: a bad flag fails at start with
:class:`~federation.errors.InvalidInputError`, never halfway through a push.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from federation.errors import InvalidInputError
from federation.identity import parse_cluster_id
from federation.model.imports import MergedImport, merge_exports
from federation.registry.records import ExportedService
from federation.translate.ir import ClusterPolicyIR, FailoverIR

#: The address families an Envoy node group can be given endpoints of.
IP_FAMILIES = ("IPv4", "IPv6")
DEFAULT_IP_FAMILY = "IPv4"

#: Largest locality weight accepted. Envoy requires the weights of one priority
#: level to sum to at most 2**32 - 1; this bound keeps that true for any
#: clusterset of up to 4,000 clusters.
MAX_CLUSTER_WEIGHT = 1_000_000


@dataclass(frozen=True)
class ImportView:
    """One ServiceImport as the translator sees it.

    ``merged`` is its MCS merge, ``exports`` the current exports behind it
    (one per cluster of ``merged.clusters``, kept sorted by cluster), and
    ``stale`` the clusters whose lease expired: their endpoints are kept
    (fail-static: a dead agent says nothing about its pods) and flagged.
    ``stale`` may name clusters that do not export this Service; they are
    ignored. ``policy``: the cluster settings of the BackendTrafficPolicy that applies to
    the ServiceImport clusterset-wide (its exporters', see
    :mod:`federation.translate.gateway.service_policies`), None for the defaults.
    """

    merged: MergedImport
    exports: tuple[ExportedService, ...]
    stale: frozenset[str] = frozenset()
    policy: ClusterPolicyIR | None = None
    #: The FailoverPolicies that apply to the ServiceImport, one per viewing cluster
    #: (:mod:`federation.translate.failover`), sorted by viewer.
    failover: tuple[FailoverIR, ...] = ()

    def __post_init__(self) -> None:
        exports = tuple(sorted(self.exports, key=lambda e: e.cluster))
        wrong = sorted(
            f"{e.cluster}:{e.namespace}/{e.name}"
            for e in exports
            if (e.namespace, e.name) != (self.merged.namespace, self.merged.name)
        )
        if wrong:
            raise InvalidInputError(
                f"exports of other Services in the view of "
                f"{self.merged.namespace}/{self.merged.name}: {', '.join(wrong)}"
            )
        clusters = tuple(e.cluster for e in exports)
        if clusters != self.merged.clusters:
            raise InvalidInputError(
                f"the view of {self.merged.namespace}/{self.merged.name} has exports from "
                f"{list(clusters)} but its merge is of {list(self.merged.clusters)}"
            )
        object.__setattr__(self, "exports", exports)
        object.__setattr__(self, "stale", frozenset(self.stale))

    @classmethod
    def of(
        cls,
        exports: Sequence[ExportedService],
        stale: Iterable[str] = (),
        policy: ClusterPolicyIR | None = None,
        failover: Iterable[FailoverIR] = (),
    ) -> ImportView:
        """Merge ``exports`` (all of one Service) and view them; see :func:`merge_exports`."""
        ordered = tuple(sorted(failover, key=lambda f: f.viewer))
        return cls(merge_exports(exports), tuple(exports), frozenset(stale), policy, ordered)

    @property
    def namespace(self) -> str:
        return self.merged.namespace

    @property
    def name(self) -> str:
        return self.merged.name


# --- address maps ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    family: socket.AddressFamily
    source: int
    mask: int
    target: int


_BITS = {socket.AF_INET: 32, socket.AF_INET6: 128}


def _network(cidr: str, what: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as err:
        raise InvalidInputError(f"address map {what} {cidr!r} is not a valid CIDR: {err}") from err


def _rule(source: str, target: str) -> _Rule:
    src, dst = _network(source, "source"), _network(target, "target")
    if src.version != dst.version:
        raise InvalidInputError(
            f"address map {source} -> {target} mixes IPv{src.version} and IPv{dst.version}"
        )
    if src.prefixlen != dst.prefixlen:
        raise InvalidInputError(
            f"address map {source} -> {target}: prefix lengths differ "
            f"(/{src.prefixlen} and /{dst.prefixlen}); a map keeps the host part, "
            "so both sides need the same length"
        )
    family = socket.AF_INET if src.version == 4 else socket.AF_INET6
    return _Rule(family, int(src.network_address), int(src.netmask), int(dst.network_address))


@dataclass(frozen=True)
class AddressMap:
    """Prefix translation of one source cluster's endpoint addresses.

    Each rule ``(source CIDR, target CIDR)`` replaces the network part of an
    address in ``source`` by ``target``'s and keeps the host part, so both
    sides must have the same prefix length. Addresses outside every rule are
    unchanged. Why it exists: the apiserver refuses loopback addresses in
    EndpointSlices, so a test cluster's slices hold addresses such as
    ``10.201.0.7`` and the hub maps them to ``127.1.0.7``, where the test
    backend really listens.

    Source ranges must not overlap, so the rules' order does not matter; they
    are kept sorted.
    """

    rules: tuple[tuple[str, str], ...]
    _parsed: tuple[_Rule, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        rules = tuple(sorted((str(s), str(t)) for s, t in self.rules))
        parsed = tuple(_rule(s, t) for s, t in rules)
        sources = [_network(s, "source") for s, _ in rules]
        for i, a in enumerate(sources):
            for b in sources[i + 1 :]:
                if a.version == b.version and a.overlaps(b):
                    raise InvalidInputError(f"address map sources {a} and {b} overlap")
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "_parsed", parsed)

    def translate(self, address: str) -> str:
        """``address`` with its prefix translated; unchanged when no rule (or no IP) matches."""
        if not self._parsed:
            return address
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            packed = socket.inet_pton(family, address)
        except OSError:
            return address
        ip = int.from_bytes(packed, "big")
        for rule in self._parsed:
            if rule.family == family and ip & rule.mask == rule.source:
                hostbits = ip & ~rule.mask & ((1 << _BITS[family]) - 1)
                return socket.inet_ntop(family, (rule.target | hostbits).to_bytes(len(packed)))
        return address


def parse_address_map_flag(value: str) -> tuple[str, tuple[str, str]]:
    """Parse ``CLUSTER=SOURCE_CIDR=TARGET_CIDR`` (a hub flag) into ``(cluster, rule)``.

    Example: ``a=10.201.0.0/16=127.1.0.0/16``. Raises InvalidInputError.
    """
    parts = value.split("=")
    if len(parts) != 3:
        raise InvalidInputError(
            f"address map {value!r} must be CLUSTER=SOURCE_CIDR=TARGET_CIDR, "
            "for example a=10.201.0.0/16=127.1.0.0/16"
        )
    cluster, source, target = (p.strip() for p in parts)
    parse_cluster_id(cluster)
    _rule(source, target)
    return cluster, (source, target)


def address_maps_from_flags(values: Iterable[str]) -> dict[str, AddressMap]:
    """The per-cluster address maps of repeated ``CLUSTER=SOURCE=TARGET`` flags."""
    rules: dict[str, list[tuple[str, str]]] = {}
    for value in values:
        cluster, rule = parse_address_map_flag(value)
        rules.setdefault(cluster, []).append(rule)
    return {cluster: AddressMap(tuple(rules[cluster])) for cluster in sorted(rules)}


# --- options ---------------------------------------------------------------------------


def _no_weights() -> Mapping[str, int]:
    return MappingProxyType({})


def _no_maps() -> Mapping[str, AddressMap]:
    return MappingProxyType({})


def _no_families() -> Mapping[str, str]:
    return MappingProxyType({})


def _check_family(family: object, what: str) -> None:
    if family not in IP_FAMILIES:
        raise InvalidInputError(f"{what} must be one of {', '.join(IP_FAMILIES)}, got {family!r}")


def ip_families_from_flags(values: Iterable[str]) -> tuple[dict[str, str], str]:
    """Per-cluster IP families and the default from repeated ``[CLUSTER=]IPv4|IPv6`` flags.

    Example: ``--ip-family IPv6 --ip-family a=IPv4``: cluster ``a``'s Envoys get IPv4
    endpoints, every other cluster's IPv6. Raises InvalidInputError.
    """
    per_cluster: dict[str, str] = {}
    default = DEFAULT_IP_FAMILY
    for value in values:
        cluster, sep, family = value.partition("=")
        if not sep:
            family = value
        what = "--ip-family" + (f" of cluster {cluster!r}" if sep else "")
        _check_family(family, what)
        if sep:
            parse_cluster_id(cluster)
            per_cluster[cluster] = family
        else:
            default = family
    return per_cluster, default


@dataclass(frozen=True)
class TranslateOptions:
    """How the hub translates; built once from its flags.

    ``cluster_weights`` are per source cluster locality weights (absent = 1,
    so by default every cluster gets an equal share of its priority level);
    ``address_maps`` translate each source cluster's endpoint addresses.

    ``ip_families`` says, per node group (the member cluster of the receiving
    Envoys), which address family its Envoys are given endpoints of; the others
    get ``default_ip_family``. One family per node group, never both: a
    dual-stack Service lists every pod once per family, and both would give
    each pod twice the weight and send addresses of a family the Envoy may not
    reach. A source cluster with no endpoints of that family (single-stack of
    the other one) contributes none to that group.

    The mappings are stored read-only and sorted; the options stay hashable.
    """

    local_first: bool = True
    cluster_weights: Mapping[str, int] = field(default_factory=_no_weights)
    address_maps: Mapping[str, AddressMap] = field(default_factory=_no_maps)
    outlier_detection: bool = True
    connect_timeout_ms: int = 1000
    ip_families: Mapping[str, str] = field(default_factory=_no_families)
    default_ip_family: str = DEFAULT_IP_FAMILY

    def __post_init__(self) -> None:
        for cluster, weight in self.cluster_weights.items():
            parse_cluster_id(cluster)
            if (
                not isinstance(weight, int)
                or isinstance(weight, bool)
                or not 1 <= weight <= MAX_CLUSTER_WEIGHT
            ):
                raise InvalidInputError(
                    f"weight of cluster {cluster!r} must be an integer from 1 to "
                    f"{MAX_CLUSTER_WEIGHT}, got {weight!r}"
                )
        for cluster, amap in self.address_maps.items():
            parse_cluster_id(cluster)
            if not isinstance(amap, AddressMap):
                raise InvalidInputError(f"address map of cluster {cluster!r} is not an AddressMap")
        if (
            not isinstance(self.connect_timeout_ms, int)
            or isinstance(self.connect_timeout_ms, bool)
            or self.connect_timeout_ms < 1
        ):
            raise InvalidInputError(
                f"connect timeout must be a positive number of milliseconds, "
                f"got {self.connect_timeout_ms!r}"
            )
        _check_family(self.default_ip_family, "the default IP family")
        for cluster, family in self.ip_families.items():
            parse_cluster_id(cluster)
            _check_family(family, f"the IP family of cluster {cluster!r}")
        object.__setattr__(
            self, "ip_families", MappingProxyType(dict(sorted(self.ip_families.items())))
        )
        object.__setattr__(
            self, "cluster_weights", MappingProxyType(dict(sorted(self.cluster_weights.items())))
        )
        object.__setattr__(
            self, "address_maps", MappingProxyType(dict(sorted(self.address_maps.items())))
        )

    def __hash__(self) -> int:
        return hash(
            (
                self.local_first,
                tuple(self.cluster_weights.items()),
                tuple(self.address_maps.items()),
                self.outlier_detection,
                self.connect_timeout_ms,
                tuple(self.ip_families.items()),
                self.default_ip_family,
            )
        )

    def weight(self, cluster: str) -> int:
        """The locality weight of ``cluster``'s endpoints."""
        return self.cluster_weights.get(cluster, 1)

    def ip_family(self, viewer: str | None) -> str:
        """The address family of the endpoints the Envoys of ``viewer`` are given."""
        if viewer is None:
            return self.default_ip_family
        return self.ip_families.get(viewer, self.default_ip_family)

    def families(self) -> tuple[str, ...]:
        """Every family some node group is given, sorted."""
        return tuple(sorted({self.default_ip_family, *self.ip_families.values()}))
