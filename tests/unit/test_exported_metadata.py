"""Exported labels and annotations the apiserver would refuse are held back, never a
withdrawal: the pure rules (agents.k8s_objects.exported_metadata and the
``ExportedMetadataValid`` condition) and the export reconciler that remembers what each
export was last exported with (agents.exports), against the in-memory registry."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest

from agents import k8s_objects as objs
from agents.exports import ExportReconciler
from agents.status import StatusWriter
from federation.errors import InvalidInputError
from federation.kube_names import MAX_ANNOTATIONS_BYTES
from federation.model.conditions import (
    Condition,
    ExportedMetadataReason,
    MetadataProblem,
    exported_metadata_condition,
)
from federation.registry.kinds import Kind, decode_record, parse_field
from federation.registry.records import ExportedService
from federation.registry.store import Op
from federation.registry.watcher import RegistryWatcher
from tests.memory_store import MemoryRegistry

NS = "shop"
KEY = (NS, "web")
CREATED = "2025-01-02T03:04:05Z"
#: The reason pattern of the ServiceExport CRD's conditions.
REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")

Obj = dict[str, Any]


def export_obj(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    created: str = CREATED,
) -> Obj:
    spec: Obj = {}
    if labels is not None:
        spec["exportedLabels"] = labels
    if annotations is not None:
        spec["exportedAnnotations"] = annotations
    return {
        "metadata": {"namespace": NS, "name": "web", "creationTimestamp": created},
        "spec": spec,
    }


def service_obj() -> Obj:
    return {
        "metadata": {"namespace": NS, "name": "web"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "ports": [{"port": 80}]},
    }


# --- the pure rules ---------------------------------------------------------------------


def test_valid_metadata_is_exported_as_written() -> None:
    got = objs.exported_metadata(export_obj({"tier": "web"}, {"owner": "team a: 24/7"}), None)
    assert got == objs.ExportedMetadata((("tier", "web"),), (("owner", "team a: 24/7"),))
    condition = exported_metadata_condition(got.problems)
    assert (condition.status, condition.reason) == ("True", "Valid")


def test_a_live_export_keeps_its_last_valid_labels() -> None:
    last = objs.ExportedMetadata((("tier", "web"),), (("owner", "a"),))
    got = objs.exported_metadata(export_obj({"tier": "api", "bad key!": "x"}, {"owner": "b"}), last)
    # The labels are held back whole (tier=api is not half-applied); the annotations,
    # which are valid, are exported as written.
    assert got.labels == (("tier", "web"),)
    assert got.annotations == (("owner", "b"),)
    (problem,) = got.problems
    assert problem.reason is ExportedMetadataReason.INVALID_EXPORTED_LABELS
    assert (problem.field, problem.kept, problem.last_valid) == (
        "exportedLabels",
        (("tier", "web"),),
        True,
    )
    assert "key 'bad key!'" in problem.message
    assert "keeps its last valid exportedLabels (tier=web)" in problem.message


def test_a_new_export_is_exported_without_the_invalid_field() -> None:
    bad = export_obj({"bad key!": "x", "tier": "web"}, {"owner": "a"})
    got = objs.exported_metadata(bad, None)
    assert (got.labels, got.annotations) == ((), (("owner", "a"),))
    (problem,) = got.problems
    assert problem.last_valid is False
    assert "exported without exportedLabels" in problem.message
    # Worked out again from what it was exported with: still no last valid labels.
    again = objs.exported_metadata(bad, got)
    assert again == got
    # Once valid, they are the last valid ones.
    fixed = objs.exported_metadata(export_obj({"tier": "web"}), again)
    (problem,) = objs.exported_metadata(bad, fixed).problems
    assert (problem.last_valid, problem.kept) == (True, (("tier", "web"),))


@pytest.mark.parametrize(
    ("labels", "annotations", "reason", "fragment"),
    [
        ({"bad key!": "v"}, None, "InvalidExportedLabels", "key 'bad key!'"),
        ({"tier": "x" * 64}, None, "InvalidExportedLabels", "value of 'tier'"),
        ({"tier": "-web"}, None, "InvalidExportedLabels", "value of 'tier'"),
        ({"Example.com/tier": "web"}, None, "InvalidExportedLabels", "prefix 'Example.com'"),
        ({"a/b/c": "v"}, None, "InvalidExportedLabels", "key 'a/b/c'"),
        ({"/tier": "v"}, None, "InvalidExportedLabels", "key '/tier'"),
        ({"app.kubernetes.io/managed-by": "me"}, None, "InvalidExportedLabels", "agent's own"),
        (None, {"bad key!": "v"}, "InvalidExportedAnnotations", "key 'bad key!'"),
        (None, {"federation.dev/clusters": "x"}, "InvalidExportedAnnotations", "agent's own"),
        (None, {"big": "x" * MAX_ANNOTATIONS_BYTES}, "InvalidExportedAnnotations", "bytes"),
    ],
)
def test_what_the_apiserver_would_refuse_is_named(
    labels: dict[str, str] | None, annotations: dict[str, str] | None, reason: str, fragment: str
) -> None:
    (problem,) = objs.exported_metadata(export_obj(labels, annotations), None).problems
    assert problem.reason == reason
    assert fragment in problem.message


def test_annotation_keys_are_checked_lower_cased_as_the_apiserver_does() -> None:
    """``Example.com/owner`` is a valid annotation key, not a valid label key."""
    got = objs.exported_metadata(
        export_obj({"Example.com/owner": "a"}, {"Example.com/owner": "a"}), None
    )
    assert got.annotations == (("Example.com/owner", "a"),)
    assert [p.field for p in got.problems] == ["exportedLabels"]


def test_the_condition_names_every_held_back_field() -> None:
    last = objs.ExportedMetadata((("tier", "web"),), (("doc", "x" * 5000), ("owner", "a")))
    got = objs.exported_metadata(export_obj({"bad key!": "x"}, {"bad/an/notation": "y"}), last)
    condition = exported_metadata_condition(got.problems)
    assert condition.type == "ExportedMetadataValid"
    assert (condition.status, condition.reason) == (
        "False",
        "InvalidExportedLabels,InvalidExportedAnnotations",
    )
    assert REASON.match(condition.reason)
    assert "key 'bad key!'" in condition.message
    assert "key 'bad/an/notation'" in condition.message
    assert "(tier=web)" in condition.message
    # Annotations kept are named by key: their values may be large.
    assert "(doc, owner)" in condition.message and "x" * 100 not in condition.message


def test_a_metadata_problem_needs_a_failure_reason() -> None:
    with pytest.raises(InvalidInputError):
        MetadataProblem(ExportedMetadataReason.VALID, "exportedLabels", ("x",), (), False)


# --- the export reconciler ----------------------------------------------------------------


class FakeStatus:
    """Records the conditions the reconciler writes on each ServiceExport."""

    def __init__(self) -> None:
        self.written: dict[tuple[str, str], dict[str, Condition]] = {}

    async def export_status(self, export: Obj, conditions: tuple[Condition, ...]) -> None:
        meta = export["metadata"]
        self.written[(meta["namespace"], meta["name"])] = {c.type: c for c in conditions}


class Cluster:
    """Cluster ``a``'s export reconciler on an in-memory registry."""

    def __init__(self, registry: MemoryRegistry | None = None) -> None:
        self.registry = registry or MemoryRegistry()
        self.status = FakeStatus()

        async def ignore(changed: object) -> None:
            return None

        watcher = RegistryWatcher(self.registry.reader(), ignore, block_ms=0)
        self.exports = ExportReconciler(
            "a",
            self.registry.writer("a"),
            watcher,
            cast(StatusWriter, self.status),
            workers=1,
        )
        self.exports.on_namespace(NS, "present")
        self.exports.on_service("ADDED", service_obj())

    async def apply(self, export: Obj) -> None:
        self.exports.on_export("MODIFIED", export)
        await self.exports.sync(KEY)

    async def in_registry(self) -> ExportedService | None:
        snapshot = await self.registry.reader().snapshot("a")
        for name, data in snapshot.records.items():
            ref = parse_field(name)
            if ref.kind is Kind.SERVICE and (ref.namespace, ref.name) == KEY:
                return cast(ExportedService, decode_record(Kind.SERVICE, data))
        return None

    async def withdrawals(self) -> int:
        entries = await self.registry.reader().read({"a": "0-0"}, 0)
        return sum(1 for e in entries if e.op is Op.DELETE)

    def condition(self, kind: str) -> tuple[str, str, str]:
        c = self.status.written[KEY][kind]
        return str(c.status), c.reason, c.message


async def test_an_invalid_edit_never_withdraws_a_live_export() -> None:
    a = Cluster()
    await a.apply(export_obj({"tier": "web"}, {"owner": "team-a"}))
    assert (await a.in_registry()) is not None
    assert a.condition("ExportedMetadataValid")[:2] == ("True", "Valid")

    await a.apply(export_obj({"tier": "web", "bad key!": "x"}, {"owner": "team-a"}))
    record = await a.in_registry()
    assert record is not None and await a.withdrawals() == 0
    assert record.exported_labels == (("tier", "web"),)
    assert record.exported_annotations == (("owner", "team-a"),)
    status, reason, message = a.condition("ExportedMetadataValid")
    assert (status, reason) == ("False", "InvalidExportedLabels")
    assert "key 'bad key!'" in message and "(tier=web)" in message
    # Still valid and exported, in KEP-1645's sense.
    assert a.condition("Valid")[:2] == ("True", "Valid")
    assert a.condition("Ready")[:2] == ("True", "Exported")

    # Edited again, still invalid: the last valid labels stay, whatever else changed.
    await a.apply(export_obj({"tier": "api", "bad key!": "x"}, {"owner": "team-b"}))
    record = await a.in_registry()
    assert record is not None and await a.withdrawals() == 0
    assert record.exported_labels == (("tier", "web"),)
    assert record.exported_annotations == (("owner", "team-b"),)

    # Fixed: exported as written, and the condition clears.
    await a.apply(export_obj({"tier": "api"}, {"owner": "team-b"}))
    record = await a.in_registry()
    assert record is not None and record.exported_labels == (("tier", "api"),)
    assert a.condition("ExportedMetadataValid")[:2] == ("True", "Valid")
    assert await a.withdrawals() == 0


async def test_a_new_export_with_invalid_labels_is_exported_without_them() -> None:
    a = Cluster()
    for _ in range(2):  # the same on every sync, not only the first
        await a.apply(export_obj({"bad key!": "x", "tier": "web"}))
        record = await a.in_registry()
        assert record is not None and record.exported_labels == ()
        status, reason, message = a.condition("ExportedMetadataValid")
        assert (status, reason) == ("False", "InvalidExportedLabels")
        assert "key 'bad key!'" in message and "exported without exportedLabels" in message
        assert a.condition("Valid")[:2] == ("True", "Valid")


async def test_an_export_created_again_does_not_inherit_the_old_ones_labels() -> None:
    a = Cluster()
    await a.apply(export_obj({"tier": "web"}))
    a.exports.on_export("DELETED", export_obj({"tier": "web"}))
    await a.exports.sync(KEY)
    assert await a.in_registry() is None
    await a.apply(export_obj({"bad key!": "x"}, created="2025-02-02T00:00:00Z"))
    record = await a.in_registry()
    assert record is not None and record.exported_labels == ()


async def test_a_restarted_agent_keeps_the_labels_the_registry_holds() -> None:
    """The export went invalid while the agent was down: what the registry still holds
    is its last valid metadata, and the full publish at start keeps it."""
    before = Cluster()
    await before.apply(export_obj({"tier": "web"}))
    published = await before.in_registry()
    assert published is not None

    after = Cluster(before.registry)
    after.exports.on_export("ADDED", export_obj({"tier": "web", "bad key!": "x"}))
    assert after.exports.current_records()[KEY].exported_labels == ()  # nothing remembered
    after.exports.remember_published([published])
    assert after.exports.current_records()[KEY].exported_labels == (("tier", "web"),)
    # Another export's, or another cluster's, records are not taken for this one.
    other = Cluster()
    other.exports.remember_published([ExportedService(**{**published.__dict__, "cluster": "b"})])
    other.exports.on_export("ADDED", export_obj({"bad key!": "x"}))
    assert other.exports.current_records()[KEY].exported_labels == ()
