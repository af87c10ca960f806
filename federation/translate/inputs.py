"""Typed inputs of the translator: the imports to translate and the options.

The hub's snapshot builder makes an :class:`ImportView` per ServiceImport
from its model of the registry and passes it, with one
:class:`TranslateOptions` built from the hub's flags in ``main()``, to
:mod:`federation.translate.resources`. Everything here is a frozen, hashable
value, validated when built: a bad flag fails at start with
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
    (fail-static, design §7) and flagged. ``stale`` may name clusters that do
    not export this Service; they are ignored.
    """

    merged: MergedImport
    exports: tuple[ExportedService, ...]
    stale: frozenset[str] = frozenset()

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
    def of(cls, exports: Sequence[ExportedService], stale: Iterable[str] = ()) -> ImportView:
        """Merge ``exports`` (all of one Service) and view them; see :func:`merge_exports`."""
        return cls(merge_exports(exports), tuple(exports), frozenset(stale))

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
    backend really listens (design §10).

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


@dataclass(frozen=True)
class TranslateOptions:
    """How the hub translates; built once from its flags.

    ``cluster_weights`` are per source cluster locality weights (absent = 1,
    so by default every cluster gets an equal share of its priority level);
    ``address_maps`` translate each source cluster's endpoint addresses. Both
    are stored read-only and sorted; the options stay hashable.
    """

    local_first: bool = True
    cluster_weights: Mapping[str, int] = field(default_factory=_no_weights)
    address_maps: Mapping[str, AddressMap] = field(default_factory=_no_maps)
    outlier_detection: bool = True
    connect_timeout_ms: int = 1000

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
            )
        )

    def weight(self, cluster: str) -> int:
        """The locality weight of ``cluster``'s endpoints."""
        return self.cluster_weights.get(cluster, 1)
