"""The registry's record kinds and their strict codecs (federation.registry.kinds, codec)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from federation.registry import gatewayapi as g
from federation.registry.codec import camel, from_json, to_json
from federation.registry.kinds import (
    Kind,
    RecordRef,
    decode_record,
    encode_record,
    field,
    kind_of,
    parse_field,
    ref_of,
)
from federation.registry.records import SCHEMA_VERSION, InvalidRecordError
from tests import samples


@pytest.mark.parametrize("record", samples.every_kind("a"), ids=lambda r: kind_of(r).value)
def test_every_kind_round_trips_and_encodes_canonically(record: object) -> None:
    kind = kind_of(record)  # type: ignore[arg-type]
    data = encode_record(record)  # type: ignore[arg-type]
    assert decode_record(kind, data) == record
    obj = json.loads(data)
    assert (obj["v"], obj["kind"]) == (SCHEMA_VERSION, kind.value)
    # Canonical: the same record always gives the same bytes, keys sorted, no spaces.
    assert data == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def test_a_record_is_not_decoded_as_another_kind() -> None:
    data = encode_record(samples.gateway("a"))
    with pytest.raises(InvalidRecordError, match="stored as a httproute record"):
        decode_record(Kind.HTTP_ROUTE, data)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.pop("spec"), r"spec: required"),
        (lambda o: o["spec"].update(rules="x"), r"spec\.rules: expected a list"),
        (lambda o: o["spec"]["rules"][0].update(oops=1), r"rules\[0\]: unknown field 'oops'"),
        (
            lambda o: o["spec"]["rules"][0]["backendRefs"][0].update(weight="80"),
            r"backendRefs\[0\]\.weight: expected an integer",
        ),
        (
            lambda o: o["spec"]["rules"][0]["backendRefs"][0].update(weight=True),
            r"weight: expected an integer",
        ),
        (lambda o: o.update(namespaceLabels={"a": 1}), r"namespaceLabels\.a: expected a string"),
        (lambda o: o.update(v=1), r"schema version 1 is not"),
        (lambda o: o.update(name=""), r"namespace and name must not be empty"),
    ],
)
def test_a_malformed_route_is_rejected_with_its_path(mutate: object, message: str) -> None:
    obj = json.loads(encode_record(samples.http_route("a")))
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(InvalidRecordError, match=message):
        decode_record(Kind.HTTP_ROUTE, json.dumps(obj).encode())


def test_kubernetes_objects_are_read_with_the_same_codec_ignoring_unknown_fields() -> None:
    spec = {
        "parentRefs": [{"group": g.GATEWAY_GROUP, "kind": "Gateway", "name": "gw"}],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                "backendRefs": [{"name": "echo", "port": 80, "weight": 1, "future": "x"}],
                "futureSetting": {"x": "y"},  # a field of a newer Gateway API
            }
        ],
    }
    parsed = from_json(g.HTTPRouteSpec, spec, unknown="ignore")
    assert parsed.rules[0].backend_refs[0] == g.HTTPBackendRef("echo", port=80, weight=1)
    assert to_json(parsed)["rules"][0]["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/api"}}
    ]
    with pytest.raises(InvalidRecordError, match="unknown field 'futureSetting'"):
        from_json(g.HTTPRouteSpec, spec)


def test_fields_and_names() -> None:
    assert camel("backend_refs") == "backendRefs" and camel("from_") == "from"
    ref = ref_of(samples.grpc_route("a"))
    assert ref == RecordRef(Kind.GRPC_ROUTE, "demo", "grpc")
    assert ref.field == field(Kind.GRPC_ROUTE, "demo", "grpc") == "grpcroute/demo/grpc"
    assert parse_field("grpcroute/demo/grpc") == ref
    for bad in ("grpcroute/demo", "nokind/demo/x", "service//x", "service/a/b/c"):
        with pytest.raises(InvalidRecordError):
            parse_field(bad)


def test_maps_keep_sorted_pairs() -> None:
    route = replace(samples.http_route("a"), namespace_labels=(("b", "2"), ("a", "1")))
    decoded = decode_record(Kind.HTTP_ROUTE, encode_record(route))
    assert isinstance(decoded, g.HTTPRouteRecord)
    assert decoded.namespace_labels == (("a", "1"), ("b", "2"))


def test_a_gateway_carries_certificate_verdicts_optionally_and_strictly() -> None:
    plain = samples.gateway("a")
    # Without verdicts a Gateway encodes exactly as before the field existed.
    assert b"certificateChecks" not in encode_record(plain)
    checks = (
        g.CertificateCheck("demo", "cert", False, "Secret demo/cert does not exist"),
        g.CertificateCheck("demo", "ok", True),
    )
    data = encode_record(replace(plain, certificate_checks=checks))
    assert json.loads(data)["certificateChecks"] == [
        {
            "namespace": "demo",
            "name": "cert",
            "usable": False,
            "message": "Secret demo/cert does not exist",
        },
        {"namespace": "demo", "name": "ok", "usable": True},
    ]
    decoded = decode_record(Kind.GATEWAY, data)
    assert isinstance(decoded, g.GatewayRecord) and decoded.certificate_checks == checks
    for change, message in [
        ({"usable": None}, r"certificateChecks\[0\]\.usable: required"),
        ({"usable": "no"}, r"certificateChecks\[0\]\.usable: expected a bool"),
        ({"key": "x"}, r"certificateChecks\[0\]: unknown field 'key'"),
    ]:
        obj = json.loads(data)
        obj["certificateChecks"][0].update(change)
        with pytest.raises(InvalidRecordError, match=message):
            decode_record(Kind.GATEWAY, json.dumps(obj).encode())


def test_unknown_fields_are_listed_by_path_however_deep() -> None:
    from federation.registry import policies as p
    from federation.registry.codec import unknown_fields

    spec = {
        "targetRefs": [{"group": "g", "kind": "HTTPRoute", "name": "r", "oops": 1}],
        "retry": {"numRetries": 1, "numAttemptsPerPriority": 2},
        "rateLimit": {"local": {"rules": [{"limit": {"requests": 1, "unit": "Hour"}, "cost": {}}]}},
        "healthCheck": {"passive": {"consecutive5XxErrors": 3}},
        "compressor": [],
    }
    assert unknown_fields(p.BackendTrafficPolicySpec, spec, "spec") == [
        "spec.compressor",
        "spec.rateLimit.local.rules[0].cost",
        "spec.retry.numAttemptsPerPriority",
        "spec.targetRefs[0].oops",
    ]
    # Fields whose JSON name camel case does not spell are known by their own names.
    decoded = from_json(p.BackendTrafficPolicySpec, spec, unknown="ignore")
    assert decoded.health_check == p.HealthCheck(
        passive=p.PassiveHealthCheck(consecutive_5xx_errors=3)
    )
    cidr = {"sourceCIDR": {"value": "10.0.0.0/8"}}
    condition = from_json(p.RateLimitSelectCondition, cidr)
    assert to_json(condition) == cidr
