"""The MCS merge of one Service's exports (federation.model.imports).

Whole scenarios are golden files (test_merge_golden.py); these tests pin the
edges: bad input, timestamp ordering and the finer conflict rules.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from federation.errors import InvalidInputError
from federation.model.imports import (
    ConflictReason,
    age_key,
    exposes,
    group_by_service,
    merge_exports,
    parse_rfc3339,
)
from federation.registry.records import ExportedService, ServicePort, ServiceType

HTTP = ServicePort("http", "TCP", 80)


def export(
    cluster: str,
    created: str = "2025-01-01T00:00:00Z",
    *,
    namespace: str = "shop",
    name: str = "web",
    type: ServiceType = ServiceType.CLUSTER_SET_IP,
    ports: tuple[ServicePort, ...] = (HTTP,),
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    affinity: str = "None",
    timeout: int | None = None,
    families: tuple[str, ...] = ("IPv4",),
    itp: str | None = "Cluster",
    distribution: str | None = None,
) -> ExportedService:
    return ExportedService(
        cluster=cluster,
        namespace=namespace,
        name=name,
        type=type,
        ports=ports,
        session_affinity=affinity,
        session_affinity_timeout=timeout,
        exported_labels=tuple(sorted((labels or {}).items())),
        exported_annotations=tuple(sorted((annotations or {}).items())),
        created=created,
        ip_families=families,
        internal_traffic_policy=itp,
        traffic_distribution=distribution,
    )


# --- bad input ----------------------------------------------------------------------


def test_empty_input_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="at least one export"):
        merge_exports([])


def test_exports_of_different_services_are_rejected() -> None:
    with pytest.raises(InvalidInputError) as err:
        merge_exports([export("a"), export("b", name="api"), export("c", namespace="ops")])
    assert "shop/web" in str(err.value)
    assert "shop/api" in str(err.value)
    assert "ops/web" in str(err.value)


def test_two_exports_from_one_cluster_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match="from cluster\\(s\\) a"):
        merge_exports([export("a"), export("b"), export("a", "2024-01-01T00:00:00Z")])


# --- timestamps -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        # As text, "...10:00:00+02:00" > "...09:00:00Z"; as instants it is 08:00Z.
        ("2025-01-01T10:00:00+02:00", "2025-01-01T09:00:00Z"),
        ("2025-01-01T00:30:00Z", "2025-01-01T00:00:00-01:00"),
        # As text, ".5Z" < "Z".
        ("2025-01-01T00:00:00Z", "2025-01-01T00:00:00.5Z"),
        # Nanosecond precision is kept (datetime alone has microseconds).
        ("2025-01-01T00:00:00.000000001Z", "2025-01-01T00:00:00.000000002Z"),
        ("2025-01-01t00:00:00z", "2025-01-01 00:00:01Z"),
        ("2016-12-31T23:59:59Z", "2016-12-31T23:59:60Z"),
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00.5Z"),
    ],
)
def test_timestamps_compare_as_instants(older: str, newer: str) -> None:
    a, b = parse_rfc3339(older), parse_rfc3339(newer)
    assert a is not None
    assert b is not None
    assert a < b


def test_offsets_name_the_same_instant() -> None:
    assert parse_rfc3339("2025-01-01T02:00:00+02:00") == parse_rfc3339("2025-01-01T00:00:00Z")
    assert parse_rfc3339("2025-01-01T00:00:00Z") == (datetime(2025, 1, 1, tzinfo=UTC), 0)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "2025-01-01",
        "2025-01-01T00:00:00",  # no offset: ambiguous
        "2025-13-01T00:00:00Z",
        "2025-02-30T00:00:00Z",
        "2025-01-01T00:00Z",
        "yesterday",
    ],
)
def test_non_rfc3339_timestamps_do_not_parse(value: str) -> None:
    assert parse_rfc3339(value) is None


def test_exports_without_a_usable_timestamp_sort_last() -> None:
    dated = export("z", "2099-12-31T23:59:59Z")
    assert age_key(dated) < age_key(export("a", ""))
    assert age_key(dated) < age_key(export("a", "not a time"))
    # Among undated exports the cluster name decides.
    assert age_key(export("a", "")) < age_key(export("b", "garbage"))


def test_undated_export_does_not_win() -> None:
    merged = merge_exports([export("a", ""), export("b", "2025-06-01T00:00:00Z")])
    assert merged.winner == "b"


def test_ties_go_to_the_cluster_name() -> None:
    merged = merge_exports(
        [
            export("b", type=ServiceType.HEADLESS),
            export("a", "2025-01-01T01:00:00+01:00"),  # the same instant as b's
        ]
    )
    assert merged.winner == "a"
    assert merged.type is ServiceType.CLUSTER_SET_IP


# --- merge results --------------------------------------------------------------------


def test_result_does_not_depend_on_input_order() -> None:
    exports = [
        export("a", "2025-01-03T00:00:00Z", ports=(ServicePort("http", "TCP", 8080),)),
        export("b", "2025-01-01T00:00:00Z", labels={"tier": "web"}),
        export("c", "2025-01-02T00:00:00Z", labels={"tier": "api"}, type=ServiceType.HEADLESS),
    ]
    results = {merge_exports(list(p)) for p in itertools.permutations(exports)}
    assert len(results) == 1


def test_single_export_is_its_own_import() -> None:
    e = export(
        "a",
        ports=(ServicePort("https", "TCP", 443, "https"), HTTP),
        labels={"x": "1"},
        annotations={"y": "2"},
        affinity="ClientIP",
        timeout=60,
    )
    merged = merge_exports([e])
    assert merged.winner == "a"
    assert merged.clusters == ("a",)
    assert merged.ports == (HTTP, ServicePort("https", "TCP", 443, "https"))
    assert merged.labels == (("x", "1"),)
    assert merged.annotations == (("y", "2"),)
    assert (merged.session_affinity, merged.session_affinity_timeout) == ("ClientIP", 60)
    assert merged.reasons == ()
    assert merged.conflict_reasons("a") == ()


def test_conflict_reasons_of_a_non_exporter_are_empty() -> None:
    merged = merge_exports([export("a"), export("b", type=ServiceType.HEADLESS)])
    assert merged.conflict_reasons("zzz") == ()
    assert merged.conflict_details("zzz") == ()


def test_reasons_are_in_declaration_order() -> None:
    # Alphabetically AnnotationsConflict < LabelsConflict < PortConflict; KEP order is not.
    merged = merge_exports(
        [
            export("a", labels={"k": "1"}, annotations={"k": "1"}, affinity="ClientIP", timeout=9),
            export(
                "b",
                "2025-02-01T00:00:00Z",
                type=ServiceType.HEADLESS,
                ports=(ServicePort("http", "TCP", 81),),
                labels={"k": "2"},
                annotations={"k": "2"},
                families=("IPv6",),
                itp="Local",
                distribution="PreferClose",
            ),
            export("c", "2025-03-01T00:00:00Z", affinity="ClientIP", timeout=5, families=("IPv6",)),
        ]
    )
    everything = tuple(ConflictReason)
    assert merged.reasons == everything
    assert merged.conflict_reasons("a") == merged.conflict_reasons("c") == everything


def test_every_exporter_is_marked_also_one_that_agrees_with_the_winner() -> None:
    merged = merge_exports(
        [
            export("a"),
            export("b", "2025-02-01T00:00:00Z"),
            export("c", "2025-03-01T00:00:00Z", affinity="ClientIP", timeout=10800),
        ]
    )
    for cluster in ("a", "b", "c"):
        assert merged.conflict_reasons(cluster) == (ConflictReason.SESSION_AFFINITY_CONFLICT,)
    (detail,) = merged.details
    assert (detail.kept, detail.dropped) == ("a", "c")
    assert merged.session_affinity == "None"
    assert merged.session_affinity_timeout is None


def test_session_affinity_timeout_alone_conflicts() -> None:
    merged = merge_exports(
        [
            export("a", affinity="ClientIP", timeout=10800),
            export("b", "2025-02-01T00:00:00Z", affinity="ClientIP", timeout=60),
        ]
    )
    assert merged.conflict_reasons("b") == (ConflictReason.SESSION_AFFINITY_CONFIG_CONFLICT,)
    assert merged.session_affinity_timeout == 10800


def test_ports_union_by_name_then_protocol_and_port() -> None:
    merged = merge_exports(
        [
            export("a", ports=(HTTP,)),
            # Same name and number as a's: agreed. A new name on a new number: added.
            export("b", "2025-02-01T00:00:00Z", ports=(HTTP, ServicePort("dns", "UDP", 53))),
            # Same number as b's "dns" under another name: conflicts with b, not with a.
            export("c", "2025-03-01T00:00:00Z", ports=(HTTP, ServicePort("domain", "UDP", 53))),
            # The same port number over another protocol is a different port.
            export("d", "2025-04-01T00:00:00Z", ports=(ServicePort("dns-tcp", "TCP", 53),)),
        ]
    )
    assert merged.ports == (
        ServicePort("dns-tcp", "TCP", 53),
        ServicePort("dns", "UDP", 53),
        HTTP,
    )
    assert merged.reasons == (ConflictReason.PORT_CONFLICT,)
    number_clash = [d for d in merged.details if '"dns" is used' in d.message]
    assert [(d.kept, d.dropped) for d in number_clash] == [("b", "c")]
    # Each exporter whose ports differ from the winner's is a detail of its own.
    assert {d.dropped for d in merged.details} == {"b", "c", "d"}


def test_a_port_losing_its_name_does_not_claim_its_number() -> None:
    merged = merge_exports(
        [
            export("a"),
            export("b", "2025-02-01T00:00:00Z", ports=(ServicePort("http", "TCP", 8080),)),
            # 8080 was never added under "http", so "alt" may have it.
            export("c", "2025-03-01T00:00:00Z", ports=(ServicePort("alt", "TCP", 8080),)),
        ]
    )
    assert merged.ports == (HTTP, ServicePort("alt", "TCP", 8080))
    assert merged.reasons == (ConflictReason.PORT_CONFLICT,)


def test_app_protocol_first_setter_wins() -> None:
    merged = merge_exports(
        [
            export("a"),
            export("b", "2025-02-01T00:00:00Z", ports=(ServicePort("http", "TCP", 80, "http"),)),
            # Unset is not a different value.
            export("c", "2025-03-01T00:00:00Z"),
        ]
    )
    assert merged.ports == (ServicePort("http", "TCP", 80, "http"),)
    assert merged.reasons == ()

    merged = merge_exports(
        [
            export("a", ports=(ServicePort("http", "TCP", 80, "http"),)),
            export("b", "2025-02-01T00:00:00Z", ports=(ServicePort("http", "TCP", 80, "h2c"),)),
        ]
    )
    assert merged.ports == (ServicePort("http", "TCP", 80, "http"),)
    assert merged.conflict_reasons("a") == (ConflictReason.PORT_CONFLICT,)
    assert merged.conflict_reasons("b") == (ConflictReason.PORT_CONFLICT,)


def test_labels_are_the_winners_set() -> None:
    merged = merge_exports(
        [
            export("c", "2025-03-01T00:00:00Z", labels={"tier": "db", "zone": "z3"}),
            export("a", labels={"tier": "web"}),
            export("b", "2025-02-01T00:00:00Z", labels={"tier": "web", "team": "t"}),
        ]
    )
    assert merged.labels == (("tier", "web"),)
    assert merged.reasons == (ConflictReason.LABELS_CONFLICT,)
    assert [(d.kept, d.dropped) for d in merged.details] == [("a", "b"), ("a", "c")]
    assert '"team" is unset in a and "t" in b' in merged.details[0].message


def test_annotations_conflict_separately_from_labels() -> None:
    merged = merge_exports(
        [
            export("a", labels={"k": "v"}, annotations={"k": "1"}),
            export("b", "2025-02-01T00:00:00Z", labels={"k": "v"}, annotations={"k": "2"}),
        ]
    )
    assert merged.conflict_reasons("b") == (ConflictReason.ANNOTATIONS_CONFLICT,)
    assert merged.annotations == (("k", "1"),)


def test_details_name_the_kept_and_dropped_cluster() -> None:
    merged = merge_exports(
        [export("b", "2025-02-01T00:00:00Z", type=ServiceType.HEADLESS), export("a")]
    )
    (detail,) = merged.details
    assert detail.reason is ConflictReason.TYPE_CONFLICT
    assert (detail.kept, detail.dropped) == ("a", "b")
    assert detail.other("a") == "b"
    assert detail.message == "type is ClusterSetIP in a and Headless in b; ClusterSetIP is used"


# --- grouping -------------------------------------------------------------------------


def test_group_by_service() -> None:
    groups = group_by_service(
        [
            export("b", name="web"),
            export("a", name="api"),
            export("a", name="web"),
            export("c", namespace="ops", name="api"),
        ]
    )
    assert list(groups) == [("ops", "api"), ("shop", "api"), ("shop", "web")]
    assert [e.cluster for e in groups["shop", "web"]] == ["a", "b"]
    assert group_by_service([]) == {}
    # Every group is a valid merge_exports input.
    for group in groups.values():
        merge_exports(group)


def test_an_unnamed_port_never_joins_named_ones() -> None:
    """The derived Service must stay valid, or the import is created nowhere."""
    unnamed = ServicePort("", "TCP", 80)
    merged = merge_exports(
        [export("a", ports=(unnamed,)), export("b", "2025-02-01T00:00:00Z", ports=(HTTP,))]
    )
    assert merged.ports == (unnamed,)
    merged = merge_exports(
        [
            export("a", ports=(HTTP, ServicePort("grpc", "TCP", 9000))),
            export("b", "2025-02-01T00:00:00Z", ports=(ServicePort("", "TCP", 8443),)),
        ]
    )
    assert merged.ports == (HTTP, ServicePort("grpc", "TCP", 9000))
    assert merged.reasons == (ConflictReason.PORT_CONFLICT,)


def test_an_extra_port_is_unioned_and_conflicts() -> None:
    stcp = ServicePort("stcp", "SCTP", 142)
    merged = merge_exports([export("a"), export("b", "2025-02-01T00:00:00Z", ports=(HTTP, stcp))])
    assert merged.ports == (HTTP, stcp)
    assert (
        merged.conflict_reasons("a")
        == merged.conflict_reasons("b")
        == (ConflictReason.PORT_CONFLICT,)
    )


def test_traffic_goes_only_to_exporters_of_the_exact_port() -> None:
    a = export("a")
    b = export("b", "2025-02-01T00:00:00Z", ports=(ServicePort("http", "TCP", 8080),))
    c = export("c", "2025-03-01T00:00:00Z", ports=(ServicePort("web", "TCP", 80),))
    merged = merge_exports([a, b, c])
    (port,) = [p for p in merged.ports if p.name == "http"]
    assert [e.cluster for e in (a, b, c) if exposes(e, port)] == ["a"]


def test_families_policies_and_distribution_are_the_winners() -> None:
    merged = merge_exports(
        [
            export("a", families=("IPv6", "IPv4"), distribution="PreferClose"),
            export("b", "2025-02-01T00:00:00Z", families=("IPv4", "IPv6"), itp="Local"),
        ]
    )
    assert merged.ip_families == ("IPv6", "IPv4")
    assert merged.ip_family_policy == "PreferDualStack"
    assert (merged.internal_traffic_policy, merged.traffic_distribution) == (
        "Cluster",
        "PreferClose",
    )
    # The same families in another order are the same families.
    assert merged.reasons == (
        ConflictReason.INTERNAL_TRAFFIC_POLICY_CONFLICT,
        ConflictReason.TRAFFIC_DISTRIBUTION_CONFLICT,
    )
    assert merge_exports([export("a")]).ip_family_policy == "SingleStack"
    assert merge_exports([export("a", families=())]).ip_family_policy is None
