"""The kinds of records the registry holds, and one codec entry point for all of them.

Used by the stores (to name a record's field and stream entry), by the registry watcher
(to decode what it reads, skipping what is bad) and by the agent (to publish). Every
record has a kind, a cluster, a namespace and a name; within its cluster's hash it is
stored under ``<kind>/<namespace>/<name>`` (:func:`field`).

=================  =====================================  ==================================
kind               record                                 seen by
=================  =====================================  ==================================
``service``        :class:`~records.ExportedService`      every agent (imports) and the hub
``localservice``   :class:`~records.LocalService`         the hub, for its own cluster only
``gateway``        :class:`~gatewayapi.GatewayRecord`     the hub
``httproute``      :class:`~gatewayapi.HTTPRouteRecord`   the hub
``grpcroute``      :class:`~gatewayapi.GRPCRouteRecord`   the hub
``referencegrant`` :class:`~gatewayapi.ReferenceGrantRecord`  the hub
``backendtrafficpolicy`` :class:`~policies.BackendTrafficPolicyRecord`  the hub
``securitypolicy`` :class:`~policies.SecurityPolicyRecord`  the hub
``clienttrafficpolicy`` :class:`~policies.ClientTrafficPolicyRecord`  the hub
``envoypatchpolicy`` :class:`~patches.EnvoyPatchPolicyRecord`  the hub
=================  =====================================  ==================================

Every record class names its kind (``KIND``); :data:`_CODECS` is the one list of kinds, and
:data:`GATEWAY_KINDS` says which of them make up a cluster's Gateway configuration. A new
kind (a policy, say) is one record class, one entry in :data:`_CODECS` (and in
:data:`GATEWAY_KINDS` when Gateways use it) and its contract tests; the stores and the
watcher need no change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from federation.registry import gatewayapi
from federation.registry.failover import FailoverPolicyRecord
from federation.registry.gatewayapi import (
    GatewayRecord,
    GRPCRouteRecord,
    HTTPRouteRecord,
    ReferenceGrantRecord,
)
from federation.registry.patches import EnvoyPatchPolicyRecord
from federation.registry.policies import (
    BackendTrafficPolicyRecord,
    ClientTrafficPolicyRecord,
    SecurityPolicyRecord,
)
from federation.registry.records import (
    SCHEMA_VERSION,
    ExportedService,
    InvalidRecordError,
    LocalService,
    decode_local_service,
    decode_service,
    encode_local_service,
    encode_service,
    load_json,
)


class Kind(StrEnum):
    """The kinds of record, each named by its record class (``KIND``)."""

    SERVICE = ExportedService.KIND
    LOCAL_SERVICE = LocalService.KIND
    GATEWAY = GatewayRecord.KIND
    HTTP_ROUTE = HTTPRouteRecord.KIND
    GRPC_ROUTE = GRPCRouteRecord.KIND
    REFERENCE_GRANT = ReferenceGrantRecord.KIND
    BACKEND_TRAFFIC_POLICY = BackendTrafficPolicyRecord.KIND
    SECURITY_POLICY = SecurityPolicyRecord.KIND
    CLIENT_TRAFFIC_POLICY = ClientTrafficPolicyRecord.KIND
    FAILOVER_POLICY = FailoverPolicyRecord.KIND
    ENVOY_PATCH_POLICY = EnvoyPatchPolicyRecord.KIND


#: The kinds that make up a cluster's Gateway configuration: what its agent publishes for
#: its Gateways, and what the hub resolves them from.
GATEWAY_KINDS = (
    Kind.GATEWAY,
    Kind.HTTP_ROUTE,
    Kind.GRPC_ROUTE,
    Kind.REFERENCE_GRANT,
    Kind.LOCAL_SERVICE,
    Kind.BACKEND_TRAFFIC_POLICY,
    Kind.SECURITY_POLICY,
    Kind.CLIENT_TRAFFIC_POLICY,
    Kind.ENVOY_PATCH_POLICY,
)


Record = (
    ExportedService
    | LocalService
    | GatewayRecord
    | HTTPRouteRecord
    | GRPCRouteRecord
    | ReferenceGrantRecord
    | BackendTrafficPolicyRecord
    | SecurityPolicyRecord
    | ClientTrafficPolicyRecord
    | FailoverPolicyRecord
    | EnvoyPatchPolicyRecord
)


class RecordRef(NamedTuple):
    """Which record: its kind, namespace and name (within one cluster)."""

    kind: Kind
    namespace: str
    name: str

    @property
    def field(self) -> str:
        return field(self.kind, self.namespace, self.name)


@dataclass(frozen=True)
class _Codec:
    cls: type[Record]
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]


def _gateway_codec(
    cls: type[gatewayapi.GatewayAPIRecord]
    | type[BackendTrafficPolicyRecord]
    | type[SecurityPolicyRecord]
    | type[ClientTrafficPolicyRecord]
    | type[FailoverPolicyRecord]
    | type[EnvoyPatchPolicyRecord],
) -> _Codec:
    def encode(record: Any) -> bytes:
        return gatewayapi.encode(record, SCHEMA_VERSION)

    def decode(data: bytes) -> Any:
        obj = dict(load_json(data, cls.KIND))
        obj.pop("v", None)
        obj.pop("kind", None)
        return gatewayapi.decode(cls, obj, cls.KIND)

    return _Codec(cls, encode, decode)


_CODECS: dict[Kind, _Codec] = {
    Kind(codec.cls.KIND): codec
    for codec in (
        _Codec(ExportedService, encode_service, decode_service),
        _Codec(LocalService, encode_local_service, decode_local_service),
        _gateway_codec(GatewayRecord),
        _gateway_codec(HTTPRouteRecord),
        _gateway_codec(GRPCRouteRecord),
        _gateway_codec(ReferenceGrantRecord),
        _gateway_codec(BackendTrafficPolicyRecord),
        _gateway_codec(SecurityPolicyRecord),
        _gateway_codec(ClientTrafficPolicyRecord),
        _gateway_codec(FailoverPolicyRecord),
        _gateway_codec(EnvoyPatchPolicyRecord),
    )
}


def kind_of(record: Record) -> Kind:
    return Kind(record.KIND)


def ref_of(record: Record) -> RecordRef:
    return RecordRef(kind_of(record), record.namespace, record.name)


def field(kind: Kind, namespace: str, name: str) -> str:
    """The record's field in its cluster's hash: ``<kind>/<namespace>/<name>``."""
    return f"{kind.value}/{namespace}/{name}"


def parse_field(value: str) -> RecordRef:
    """The :class:`RecordRef` of a hash field; raise InvalidRecordError if it is not one."""
    kind, _, rest = value.partition("/")
    namespace, _, name = rest.partition("/")
    try:
        parsed = Kind(kind)
    except ValueError:
        raise InvalidRecordError(f"field {value!r}: unknown kind {kind!r}") from None
    if not namespace or not name or "/" in name:
        raise InvalidRecordError(f"field {value!r} is not <kind>/<namespace>/<name>")
    return RecordRef(parsed, namespace, name)


def encode_record(record: Record) -> bytes:
    """Canonical bytes of any record: equal records encode to equal bytes."""
    return _CODECS[kind_of(record)].encode(record)


def decode_record(kind: Kind, data: bytes) -> Record:
    """Decode a record of ``kind``; raise InvalidRecordError naming what is wrong."""
    record: Record = _CODECS[kind].decode(data)
    return record
