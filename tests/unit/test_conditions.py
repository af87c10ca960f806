"""ServiceExport and ServiceImport conditions, merged into status (federation.model.conditions)."""

from __future__ import annotations

from typing import Any

import pytest

from federation.errors import InvalidInputError
from federation.model.conditions import (
    MAX_MESSAGE_LENGTH,
    Condition,
    ConditionStatus,
    ConditionType,
    ValidityProblem,
    ValidReason,
    export_conditions,
    import_conditions,
    merge_conditions,
)
from federation.model.imports import MergedImport, merge_exports
from federation.registry.records import ExportedService, ServicePort, ServiceType

T0 = "2025-01-01T00:00:00Z"
T1 = "2025-06-01T00:00:00Z"


def export(
    cluster: str, created: str, type: ServiceType = ServiceType.CLUSTER_SET_IP, port: int = 80
) -> ExportedService:
    return ExportedService(
        cluster=cluster,
        namespace="shop",
        name="web",
        type=type,
        ports=(ServicePort("http", "TCP", port),),
        created=created,
    )


@pytest.fixture
def conflicting() -> MergedImport:
    """a (oldest) vs b on port and type; c agrees with a."""
    return merge_exports(
        [
            export("a", "2025-01-01T00:00:00Z"),
            export("b", "2025-01-02T00:00:00Z", ServiceType.HEADLESS, 8080),
            export("c", "2025-01-03T00:00:00Z"),
        ]
    )


def by_type(conditions: tuple[Condition, ...]) -> dict[str, Condition]:
    assert [c.type for c in conditions] == sorted(c.type for c in conditions)
    return {c.type: c for c in conditions}


# --- ServiceExport ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        (ValidityProblem.no_service("shop", "web"), "NoService"),
        (ValidityProblem.invalid_service_type("ExternalName"), "InvalidServiceType"),
    ],
)
def test_invalid_export(problem: ValidityProblem, reason: str, conflicting: MergedImport) -> None:
    conds = by_type(
        export_conditions(
            cluster="b",
            service_problem=problem,
            published=True,
            publish_error="ignored",
            merged=conflicting,
        )
    )
    assert list(conds) == ["Conflict", "Ready", "Valid"]
    valid, ready, conflict = conds["Valid"], conds["Ready"], conds["Conflict"]
    assert (valid.status, valid.reason, valid.message) == ("False", reason, problem.message)
    assert (ready.status, ready.reason) == ("False", "Failed")
    assert ready.message == f"not exported: {problem.message}"
    # Not exported, so not part of any conflict, whatever the registry's view says.
    assert (conflict.status, conflict.reason) == ("False", "NoConflicts")


def test_validity_problem_messages() -> None:
    assert "shop/web" in ValidityProblem.no_service("shop", "web").message
    assert "ExternalName" in ValidityProblem.invalid_service_type("ExternalName").message
    with pytest.raises(InvalidInputError):
        ValidityProblem(ValidReason.VALID, "fine")


def test_valid_export_not_yet_in_registry_is_pending() -> None:
    conds = by_type(export_conditions(cluster="a", service_problem=None, published=False))
    assert (conds["Valid"].status, conds["Valid"].reason) == ("True", "Valid")
    assert (conds["Ready"].status, conds["Ready"].reason) == ("False", "Pending")
    assert (conds["Conflict"].status, conds["Conflict"].reason) == ("False", "NoConflicts")


def test_publish_failure_is_failed_with_the_error() -> None:
    conds = by_type(
        export_conditions(
            cluster="a", service_problem=None, published=True, publish_error="NOPERM denied"
        )
    )
    assert (conds["Ready"].status, conds["Ready"].reason) == ("False", "Failed")
    assert "NOPERM denied" in conds["Ready"].message
    assert conds["Valid"].status == "True"


def test_exported_without_conflicts() -> None:
    agreeing = merge_exports(
        [export("a", "2025-01-01T00:00:00Z"), export("b", "2025-01-02T00:00:00Z")]
    )
    conds = by_type(
        export_conditions(cluster="a", service_problem=None, published=True, merged=agreeing)
    )
    assert (conds["Ready"].status, conds["Ready"].reason) == ("True", "Exported")
    assert (conds["Conflict"].status, conds["Conflict"].reason) == ("False", "NoConflicts")


def test_an_exporter_that_agrees_with_the_winner_is_marked_too(conflicting: MergedImport) -> None:
    conds = by_type(
        export_conditions(cluster="c", service_problem=None, published=True, merged=conflicting)
    )
    assert (conds["Conflict"].status, conds["Conflict"].reason) == (
        "True",
        "PortConflict,TypeConflict",
    )


@pytest.mark.parametrize(("cluster", "other"), [("a", "b"), ("b", "a")])
def test_conflict_on_both_sides(cluster: str, other: str, conflicting: MergedImport) -> None:
    conds = by_type(
        export_conditions(cluster=cluster, service_problem=None, published=True, merged=conflicting)
    )
    conflict = conds["Conflict"]
    assert conflict.status is ConditionStatus.TRUE
    assert conflict.reason == "PortConflict,TypeConflict"
    assert "the exports of shop/web in clusters a, b, c conflict:" in conflict.message
    assert "The oldest export (cluster a) is used where they differ" in conflict.message
    assert "ClusterSetIP is used" in conflict.message
    assert "80/TCP is used" in conflict.message
    # A conflict does not stop the export.
    assert conds["Ready"].reason == "Exported"


def test_conflicts_are_reported_while_pending(conflicting: MergedImport) -> None:
    # An older record of b is still in the registry and still conflicts.
    conds = by_type(
        export_conditions(cluster="b", service_problem=None, published=False, merged=conflicting)
    )
    assert conds["Ready"].reason == "Pending"
    assert conds["Conflict"].status == "True"


# --- ServiceImport ----------------------------------------------------------------------


def test_import_all_live() -> None:
    conds = by_type(import_conditions(stale_clusters=[], lease_ttls={"b": 15}))
    assert list(conds) == ["Ready", "Stale"]
    # The reason mcs-api names for a ready ServiceImport.
    assert (conds["Ready"].status, conds["Ready"].reason) == ("True", "Ready")
    assert (conds["Stale"].status, conds["Stale"].reason) == ("False", "AllClustersLive")


def test_import_stale_clusters_are_kept() -> None:
    conds = by_type(
        import_conditions(stale_clusters=["c", "b", "c"], lease_ttls={"b": 15.0, "c": 2.5})
    )
    stale = conds["Stale"]
    assert (stale.status, stale.reason) == ("True", "ClusterLeaseExpired")
    # Each stale cluster's own TTL (agents may differ), not the observer's.
    assert "the lease of clusters b (TTL 15s), c (TTL 2.5s) expired" in stale.message
    assert "kept (fail-static)" in stale.message
    assert "withdrawn" not in stale.message
    assert conds["Ready"].status == "True"


def test_import_withdrawn_clusters() -> None:
    conds = by_type(
        import_conditions(
            stale_clusters=["b", "d"],
            withdrawn_clusters=["d"],
            lease_ttls={"b": 15, "d": 15},
            withdraw_after_seconds=600,
        )
    )
    stale = conds["Stale"]
    assert (stale.status, stale.reason) == ("True", "ClusterLeaseExpired")
    assert "lease of cluster b (TTL 15s) expired" in stale.message
    assert "exports of cluster d were withdrawn" in stale.message
    assert "timeout of 600s" in stale.message

    only_withdrawn = by_type(import_conditions(stale_clusters=[], withdrawn_clusters=["d"]))[
        "Stale"
    ]
    assert only_withdrawn.status == "True"
    assert "fail-static" not in only_withdrawn.message


# --- to_k8s -----------------------------------------------------------------------------


def test_to_k8s_is_a_metav1_condition_of_plain_strings() -> None:
    cond = Condition(ConditionType.READY, ConditionStatus.TRUE, "Exported", "ok")
    out = cond.to_k8s(7, T0)
    assert out == {
        "type": "Ready",
        "status": "True",
        "observedGeneration": 7,
        "lastTransitionTime": T0,
        "reason": "Exported",
        "message": "ok",
    }
    assert all(type(out[k]) is str for k in ("type", "status", "reason"))


def test_to_k8s_shortens_messages_the_apiserver_would_reject() -> None:
    cond = Condition("Ready", ConditionStatus.FALSE, "Failed", "x" * (MAX_MESSAGE_LENGTH + 10))
    message = cond.to_k8s(1, T0)["message"]
    assert len(message) == MAX_MESSAGE_LENGTH
    assert message.endswith("...")


# --- merge_conditions -------------------------------------------------------------------


def existing_condition(kind: str, status: str, when: str = T0, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "observedGeneration": 1,
        "lastTransitionTime": when,
        "reason": "Old",
        "message": "old",
        **extra,
    }


def test_transition_time_kept_when_status_unchanged() -> None:
    new = [Condition("Ready", ConditionStatus.TRUE, "Exported", "new message")]
    (out,) = merge_conditions(
        [existing_condition("Ready", "True")], new, observed_generation=2, now=T1
    )
    assert out["lastTransitionTime"] == T0
    # Everything else is refreshed.
    assert (out["reason"], out["message"], out["observedGeneration"]) == (
        "Exported",
        "new message",
        2,
    )


def test_transition_time_updated_when_status_changes() -> None:
    new = [Condition("Ready", ConditionStatus.FALSE, "Failed", "boom")]
    (out,) = merge_conditions(
        [existing_condition("Ready", "True")], new, observed_generation=2, now=T1
    )
    assert out["lastTransitionTime"] == T1
    assert out["status"] == "False"


def test_new_condition_and_missing_transition_time_get_now() -> None:
    new = [
        Condition("Ready", ConditionStatus.TRUE, "Exported", ""),
        Condition("Valid", ConditionStatus.TRUE, "Valid", ""),
    ]
    broken = existing_condition("Ready", "True")
    del broken["lastTransitionTime"]
    out = merge_conditions([broken], new, observed_generation=1, now=T1)
    assert [c["lastTransitionTime"] for c in out] == [T1, T1]


def test_foreign_conditions_kept_untouched_and_ours_dropped() -> None:
    foreign = existing_condition("example.com/Healthy", "False", T0, extraField=["kept"])
    z_foreign = existing_condition("Zeta", "Unknown")
    existing = [
        z_foreign,
        existing_condition("Conflict", "True"),  # ours, no longer reported: dropped
        foreign,
        {"status": "True"},  # no type: not a condition
    ]
    new = [Condition("Valid", ConditionStatus.TRUE, "Valid", "")]
    out = merge_conditions(existing, new, observed_generation=3, now=T1)
    assert [c["type"] for c in out] == ["Valid", "Zeta", "example.com/Healthy"]
    assert out[2] == foreign
    assert out[1] == z_foreign
    # A copy: the caller's existing list is not modified through the result.
    assert out[2] is not foreign


def test_merge_conditions_rejects_bad_input() -> None:
    ready = Condition("Ready", ConditionStatus.TRUE, "Exported", "")
    with pytest.raises(InvalidInputError, match="twice"):
        merge_conditions([], [ready, ready], observed_generation=1, now=T1)
    with pytest.raises(InvalidInputError, match="now"):
        merge_conditions([], [ready], observed_generation=1, now="")


def test_round_trip_is_stable(conflicting: MergedImport) -> None:
    conds = export_conditions(cluster="a", service_problem=None, published=True, merged=conflicting)
    first = merge_conditions([], conds, observed_generation=1, now=T0)
    again = merge_conditions(first, conds, observed_generation=1, now=T1)
    assert again == first


def test_import_without_a_family_of_this_cluster_is_not_ready() -> None:
    conds = by_type(
        import_conditions(stale_clusters=[], ip_family_problem="no Service IPs of IPv6 here")
    )
    ready = conds["Ready"]
    # The reason mcs-api names for it.
    assert (ready.status, ready.reason) == ("False", "IPFamilyNotSupported")
    assert "IPv6" in ready.message
    assert (conds["Stale"].status, conds["Stale"].reason) == ("False", "AllClustersLive")
