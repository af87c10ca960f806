"""Registry records of Services: what an agent publishes about them, and their codec.

Written by the agent (``agents``), read by every agent and by the hub. Records
are level-triggered: each one is the *full* current state of one object,
endpoints included, never a delta. A record carries what a reader needs to
decide conflicts (the export's ``creationTimestamp`` and generation) and
nothing secret. This module has the two Service kinds: :class:`ExportedService`
(a ServiceExport with its Service and endpoints, seen by the whole clusterset)
and :class:`LocalService` (a Service of this cluster that one of its routes
sends to; only this cluster's Envoys use it). The Gateway API kinds are in
:mod:`federation.registry.gatewayapi`, and :mod:`federation.registry.kinds`
dispatches between them.

The codec is strict: :func:`decode_service` raises :class:`InvalidRecordError`
naming what is wrong, and readers skip, log and count such records instead of
crashing: one bad record must not poison the others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from federation.errors import InvalidInputError
from federation.identity import cluster_id_errors

#: Bumped when the encoding changes incompatibly; part of every key (see keys.py).
#: 2: records of several kinds in one hash per cluster, keys with ``{cluster}`` tags.
SCHEMA_VERSION = 2

#: The ``kind`` of the two Service records in the registry (see federation.registry.kinds).
SERVICE_KIND = "service"
LOCAL_SERVICE_KIND = "localservice"

PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})
ADDRESS_TYPES = frozenset({"IPv4", "IPv6", "FQDN"})
IP_FAMILIES = frozenset({"IPv4", "IPv6"})
INTERNAL_TRAFFIC_POLICIES = frozenset({"Cluster", "Local"})


class InvalidRecordError(InvalidInputError):
    """A registry record that cannot be decoded; readers skip it."""


class ServiceType(StrEnum):
    CLUSTER_SET_IP = "ClusterSetIP"
    HEADLESS = "Headless"


@dataclass(frozen=True, order=True)
class ServicePort:
    """A port of the exported Service (no targetPort: MCS ports are service ports)."""

    name: str
    protocol: str
    port: int
    app_protocol: str | None = None


@dataclass(frozen=True, order=True)
class EndpointPort:
    """A port of an EndpointSlice: where the backends listen."""

    name: str
    protocol: str
    port: int
    app_protocol: str | None = None


@dataclass(frozen=True, order=True)
class Endpoint:
    """One backend, with the EndpointSlice conditions."""

    addresses: tuple[str, ...]
    ready: bool
    serving: bool
    terminating: bool
    zone: str | None = None
    hostname: str | None = None


@dataclass(frozen=True, order=True)
class EndpointSet:
    """The contents of one of the Service's EndpointSlices."""

    name: str
    address_type: str
    ports: tuple[EndpointPort, ...]
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class ExportedService:
    """One cluster's export of one Service: the unit of the registry."""

    #: The record's kind in the registry (:class:`federation.registry.kinds.Kind`).
    KIND: ClassVar[str] = SERVICE_KIND

    cluster: str
    namespace: str
    name: str
    type: ServiceType
    ports: tuple[ServicePort, ...]
    session_affinity: str = "None"
    session_affinity_timeout: int | None = None
    exported_labels: tuple[tuple[str, str], ...] = ()
    exported_annotations: tuple[tuple[str, str], ...] = ()
    #: The ServiceExport's creationTimestamp (RFC 3339): the oldest export wins conflicts.
    created: str = ""
    generation: int = 0
    endpoints: tuple[EndpointSet, ...] = ()
    #: The Service's ``spec.ipFamilies``, in its order.
    ip_families: tuple[str, ...] = ()
    internal_traffic_policy: str | None = None
    traffic_distribution: str | None = None

    @property
    def key(self) -> str:
        """``namespace/name``: the field of this record in its cluster's hash."""
        return service_key(self.namespace, self.name)


@dataclass(frozen=True)
class LocalService:
    """A Service of ``cluster`` that a route of the same cluster sends traffic to.

    Not exported: only ``cluster``'s own Envoys get its endpoints.
    """

    KIND: ClassVar[str] = LOCAL_SERVICE_KIND

    cluster: str
    namespace: str
    name: str
    ports: tuple[ServicePort, ...]
    endpoints: tuple[EndpointSet, ...] = ()

    @property
    def key(self) -> str:
        return service_key(self.namespace, self.name)


@dataclass(frozen=True)
class ClusterRecord:
    """What a cluster's agent says about itself."""

    cluster: str
    agent_version: str
    #: Unix time of the agent's last full publish.
    last_full_sync: float
    #: Random per full publish: a reader that sees it change reloads the cluster.
    epoch: str
    #: The agent's ``--lease-ttl`` in seconds (0: not said): readers quote it, and wait
    #: that long before a cluster whose keys the registry lost counts as stale.
    lease_ttl: float = 0.0


def service_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def split_service_key(key: str) -> tuple[str, str]:
    namespace, sep, name = key.partition("/")
    if not sep or not namespace or not name:
        raise InvalidRecordError(f"service key {key!r} is not namespace/name")
    return namespace, name


def sorted_pairs(mapping: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((mapping or {}).items()))


# --- encoding -----------------------------------------------------------------


def _port_json(p: ServicePort | EndpointPort) -> dict[str, Any]:
    out: dict[str, Any] = {"name": p.name, "protocol": p.protocol, "port": p.port}
    if p.app_protocol is not None:
        out["appProtocol"] = p.app_protocol
    return out


def _endpoint_json(e: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "addresses": list(e.addresses),
        "ready": e.ready,
        "serving": e.serving,
        "terminating": e.terminating,
    }
    if e.zone is not None:
        out["zone"] = e.zone
    if e.hostname is not None:
        out["hostname"] = e.hostname
    return out


def _endpoint_sets_json(sets: tuple[EndpointSet, ...]) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "addressType": s.address_type,
            "ports": [_port_json(p) for p in s.ports],
            "endpoints": [_endpoint_json(e) for e in s.endpoints],
        }
        for s in sets
    ]


def service_to_json(rec: ExportedService) -> dict[str, Any]:
    out: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "kind": SERVICE_KIND,
        "cluster": rec.cluster,
        "namespace": rec.namespace,
        "name": rec.name,
        "type": rec.type.value,
        "ports": [_port_json(p) for p in rec.ports],
        "sessionAffinity": rec.session_affinity,
        "exportedLabels": dict(rec.exported_labels),
        "exportedAnnotations": dict(rec.exported_annotations),
        "created": rec.created,
        "generation": rec.generation,
        "endpoints": _endpoint_sets_json(rec.endpoints),
    }
    if rec.session_affinity_timeout is not None:
        out["sessionAffinityTimeout"] = rec.session_affinity_timeout
    if rec.ip_families:
        out["ipFamilies"] = list(rec.ip_families)
    if rec.internal_traffic_policy is not None:
        out["internalTrafficPolicy"] = rec.internal_traffic_policy
    if rec.traffic_distribution is not None:
        out["trafficDistribution"] = rec.traffic_distribution
    return out


def encode_service(rec: ExportedService) -> bytes:
    """Canonical bytes: equal records encode to equal bytes."""
    return _canonical(service_to_json(rec))


def encode_local_service(rec: LocalService) -> bytes:
    return _canonical(
        {
            "v": SCHEMA_VERSION,
            "kind": LOCAL_SERVICE_KIND,
            "cluster": rec.cluster,
            "namespace": rec.namespace,
            "name": rec.name,
            "ports": [_port_json(p) for p in rec.ports],
            "endpoints": _endpoint_sets_json(rec.endpoints),
        }
    )


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def encode_cluster(rec: ClusterRecord) -> bytes:
    return json.dumps(
        {
            "v": SCHEMA_VERSION,
            "cluster": rec.cluster,
            "agentVersion": rec.agent_version,
            "lastFullSync": rec.last_full_sync,
            "epoch": rec.epoch,
            "leaseTtl": rec.lease_ttl,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


# --- decoding -----------------------------------------------------------------


class _Fields:
    """Typed access to a JSON object that reports the path of what is wrong."""

    def __init__(self, obj: object, path: str) -> None:
        if not isinstance(obj, dict):
            raise InvalidRecordError(f"{path or 'record'}: expected an object")
        self.obj: dict[str, Any] = obj
        self.path = path

    def _get(self, name: str, kind: type | tuple[type, ...], default: Any, required: bool) -> Any:
        if name not in self.obj or self.obj[name] is None:
            if required:
                raise InvalidRecordError(f"{self.path}{name}: required")
            return default
        value = self.obj[name]
        # bool is an int subclass: never accept it where a number is meant.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _tuple(kind)):
            raise InvalidRecordError(f"{self.path}{name}: expected {_kind_name(kind)}")
        return value

    def text(self, name: str, default: str | None = None) -> str:
        value: str = self._get(name, str, default, default is None)
        return value

    def opt_text(self, name: str) -> str | None:
        value: str | None = self._get(name, str, None, False)
        return value

    def integer(self, name: str, default: int | None = None) -> int:
        value: int = self._get(name, int, default, default is None)
        return value

    def opt_integer(self, name: str) -> int | None:
        value: int | None = self._get(name, int, None, False)
        return value

    def number(self, name: str) -> float:
        return float(self._get(name, (int, float), None, True))

    def opt_number(self, name: str) -> float | None:
        value = self._get(name, (int, float), None, False)
        return None if value is None else float(value)

    def flag(self, name: str) -> bool:
        value: bool = self._get(name, bool, None, True)
        return value

    def items(self, name: str) -> list[Any]:
        value: list[Any] = self._get(name, list, [], False)
        return value

    def str_map(self, name: str) -> tuple[tuple[str, str], ...]:
        value: dict[str, Any] = self._get(name, dict, {}, False)
        for k, v in value.items():
            if not isinstance(v, str):
                raise InvalidRecordError(f"{self.path}{name}.{k}: expected a string")
        return sorted_pairs(value)


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _tuple(kind))


def _port(obj: object, path: str, cls: type[ServicePort] | type[EndpointPort]) -> Any:
    f = _Fields(obj, path)
    protocol = f.text("protocol", "TCP")
    if protocol not in PROTOCOLS:
        raise InvalidRecordError(f"{path}protocol: {protocol!r} is not one of {sorted(PROTOCOLS)}")
    port = f.integer("port")
    if not 1 <= port <= 65535:
        raise InvalidRecordError(f"{path}port: {port} is out of range 1-65535")
    return cls(f.text("name", ""), protocol, port, f.opt_text("appProtocol"))


def _endpoint(obj: object, path: str) -> Endpoint:
    f = _Fields(obj, path)
    addresses = f.items("addresses")
    if not addresses or not all(isinstance(a, str) for a in addresses):
        raise InvalidRecordError(f"{path}addresses: expected a non-empty list of strings")
    return Endpoint(
        tuple(addresses),
        f.flag("ready"),
        f.flag("serving"),
        f.flag("terminating"),
        f.opt_text("zone"),
        f.opt_text("hostname"),
    )


def _endpoint_set(obj: object, path: str) -> EndpointSet:
    f = _Fields(obj, path)
    address_type = f.text("addressType")
    if address_type not in ADDRESS_TYPES:
        raise InvalidRecordError(f"{path}addressType: {address_type!r} is not supported")
    return EndpointSet(
        f.text("name"),
        address_type,
        tuple(_port(p, f"{path}ports[{i}].", EndpointPort) for i, p in enumerate(f.items("ports"))),
        tuple(_endpoint(e, f"{path}endpoints[{i}].") for i, e in enumerate(f.items("endpoints"))),
    )


def load_json(data: bytes | str, kind: str | None = None) -> dict[str, Any]:
    """Parse a record's JSON and check its schema version (and ``kind``, when given)."""
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidRecordError(f"not JSON: {err}") from err
    f = _Fields(obj, "")
    version = f.integer("v")
    if version != SCHEMA_VERSION:
        raise InvalidRecordError(f"schema version {version} is not {SCHEMA_VERSION}")
    found = f.opt_text("kind")
    if kind is not None and found not in (None, kind):
        raise InvalidRecordError(f"kind: {found!r} stored as a {kind} record")
    return f.obj


def _load(data: bytes | str, kind: str) -> _Fields:
    return _Fields(load_json(data, kind), "")


def _cluster(f: _Fields) -> str:
    cluster = f.text("cluster")
    if cluster_id_errors(cluster):
        raise InvalidRecordError(f"cluster: {cluster!r} is not a valid cluster id")
    return cluster


def _ports(f: _Fields, cls: type[ServicePort] | type[EndpointPort]) -> tuple[Any, ...]:
    return tuple(_port(p, f"ports[{i}].", cls) for i, p in enumerate(f.items("ports")))


def _endpoint_sets(f: _Fields) -> tuple[EndpointSet, ...]:
    return tuple(_endpoint_set(s, f"endpoints[{i}].") for i, s in enumerate(f.items("endpoints")))


def _namespace_name(f: _Fields) -> tuple[str, str]:
    namespace, name = f.text("namespace"), f.text("name")
    if not namespace or not name:
        raise InvalidRecordError("namespace and name must not be empty")
    return namespace, name


def decode_service(data: bytes | str) -> ExportedService:
    """Decode and validate a service record; raise :class:`InvalidRecordError`."""
    f = _load(data, SERVICE_KIND)
    cluster = _cluster(f)
    try:
        service_type = ServiceType(f.text("type"))
    except ValueError as err:
        raise InvalidRecordError(
            f"type: {f.obj['type']!r} is not ClusterSetIP or Headless"
        ) from err
    affinity = f.text("sessionAffinity", "None")
    if affinity not in ("None", "ClientIP"):
        raise InvalidRecordError(f"sessionAffinity: {affinity!r} is not None or ClientIP")
    namespace, name = _namespace_name(f)
    return ExportedService(
        cluster=cluster,
        namespace=namespace,
        name=name,
        type=service_type,
        ports=_ports(f, ServicePort),
        session_affinity=affinity,
        session_affinity_timeout=f.opt_integer("sessionAffinityTimeout"),
        exported_labels=f.str_map("exportedLabels"),
        exported_annotations=f.str_map("exportedAnnotations"),
        created=f.text("created", ""),
        generation=f.integer("generation", 0),
        endpoints=_endpoint_sets(f),
        ip_families=_ip_families(f),
        internal_traffic_policy=_one_of(f, "internalTrafficPolicy", INTERNAL_TRAFFIC_POLICIES),
        traffic_distribution=f.opt_text("trafficDistribution"),
    )


def _ip_families(f: _Fields) -> tuple[str, ...]:
    families = f.items("ipFamilies")
    if not all(x in IP_FAMILIES for x in families) or len(set(families)) != len(families):
        raise InvalidRecordError(f"ipFamilies: {families!r} is not a list of distinct IPv4, IPv6")
    return tuple(families)


def _one_of(f: _Fields, name: str, allowed: frozenset[str]) -> str | None:
    value = f.opt_text(name)
    if value is not None and value not in allowed:
        raise InvalidRecordError(f"{name}: {value!r} is not one of {sorted(allowed)}")
    return value


def decode_local_service(data: bytes | str) -> LocalService:
    """Decode and validate a local service record; raise :class:`InvalidRecordError`."""
    f = _load(data, LOCAL_SERVICE_KIND)
    cluster = _cluster(f)
    namespace, name = _namespace_name(f)
    return LocalService(cluster, namespace, name, _ports(f, ServicePort), _endpoint_sets(f))


def decode_cluster(data: bytes | str) -> ClusterRecord:
    f = _Fields(load_json(data), "")
    return ClusterRecord(
        cluster=f.text("cluster"),
        agent_version=f.text("agentVersion", ""),
        last_full_sync=f.number("lastFullSync"),
        epoch=f.text("epoch"),
        lease_ttl=f.opt_number("leaseTtl") or 0.0,
    )
