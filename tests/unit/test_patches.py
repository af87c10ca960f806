"""EnvoyPatchPolicies: the first stage (which Gateway, refusals, statuses), the hub's
application of them to a Gateway's resources (federation.hub.patches, through the
snapshot builder) and the verdicts it publishes (federation.hub.programmed)."""

from __future__ import annotations

import dataclasses
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2

from federation.hub.core import Hub
from federation.hub.patches import PatchOutcome
from federation.hub.programmed import patch_facts
from federation.programmed import merge_patches
from federation.registry.kinds import Kind, RecordRef
from federation.registry.patches import (
    JSON_PATCH,
    EnvoyJSONPatchConfig,
    EnvoyPatchPolicyRecord,
    EnvoyPatchPolicySpec,
    JSONPatchOperation,
    canonical_value,
)
from federation.registry.policies import PolicyTargetReference
from federation.translate.gateway import resolve
from federation.translate.gateway.inputs import ClusterInputs, PatchFact
from federation.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.memory_store import MemoryRegistry
from tests.unit.test_hub import GATEWAY, GW_GROUP, _route, _route_config, hub_of
from tests.unit.test_programmed import registry_with
from tests.unit.test_registry_watcher import join, svc

HEADER = [{"header": {"key": "x-patched", "value": "yes"}}]
ROUTES = "gateway/8080"


def op(
    op: str,
    path: str | None,
    value: Any = None,
    *,
    type_url: str = ROUTE,
    name: str = ROUTES,
    **extra: Any,
) -> EnvoyJSONPatchConfig:
    text = None if value is None else canonical_value(value)
    return EnvoyJSONPatchConfig(type_url, name, JSONPatchOperation(op, path, value=text, **extra))


def policy(
    *patches: EnvoyJSONPatchConfig, name: str = "hdr", priority: int = 0, **target: str
) -> EnvoyPatchPolicyRecord:
    ref = PolicyTargetReference(
        target.get("group", "gateway.networking.k8s.io"),
        target.get("kind", "Gateway"),
        target.get("target", "gw"),
    )
    spec = EnvoyPatchPolicySpec(JSON_PATCH, ref, patches, priority)
    return EnvoyPatchPolicyRecord("b", "shop", name, spec, generation=1)


ADD_HEADER = op("add", "/response_headers_to_add", HEADER)


async def started(*policies: EnvoyPatchPolicyRecord, allowed: bool = True) -> tuple[Any, Hub]:
    registry = MemoryRegistry()
    hub = hub_of(registry, patches_allowed=allowed)
    await join(registry, "a", [svc("a", "web")])
    writer = await join(registry, "b", [GATEWAY, _route("/api"), *policies])
    await hub.watcher.load()
    hub.publish_loaded()
    return writer, hub


def headers(hub: Hub) -> list[str]:
    return [h.header.key for h in _route_config(hub, GW_GROUP).response_headers_to_add]


def outcomes(hub: Hub) -> dict[tuple[str, str], PatchOutcome]:
    return hub.builder.patch_outcomes.get(GW_GROUP, {})


def test_the_agent_keeps_each_value_as_canonical_json_text() -> None:
    spec: dict[str, Any] = {
        "type": "JSONPatch",
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
        "jsonPatches": [
            {
                "type": ROUTE,
                "name": ROUTES,
                "operation": {"op": "add", "path": "/x", "value": {"b": [1], "a": "é"}},
            },
            {"type": ROUTE, "name": ROUTES, "operation": {"op": "remove", "path": "/y"}},
        ],
    }
    prepared = EnvoyPatchPolicySpec.prepare_json(spec)
    assert prepared["jsonPatches"][0]["operation"]["value"] == '{"a":"\\u00e9","b":[1]}'
    assert "value" not in prepared["jsonPatches"][1]["operation"]
    assert spec["jsonPatches"][0]["operation"]["value"] == {"b": [1], "a": "é"}  # a copy


# --- the hub applies them --------------------------------------------------------------------


async def test_a_patch_reaches_its_gateways_envoys_only() -> None:
    _, hub = await started(policy(ADD_HEADER))
    assert headers(hub) == ["x-patched"]
    assert outcomes(hub) == {("shop", "hdr"): PatchOutcome(1, None, frozenset({ROUTE}))}
    for group in ("a", "b"):
        snapshot = hub.cache.get(group)
        assert snapshot is not None and ROUTES not in snapshot.of(ROUTE)
    assert hub.builder.patch_outcomes.keys() == {GW_GROUP}


async def test_a_policy_that_fails_anywhere_changes_nothing_and_says_where() -> None:
    """All or nothing: its first patch would apply, its second does not. A later
    policy still applies."""
    broken = policy(ADD_HEADER, op("replace", "/virtual_hosts/0/nope", 1), name="broken")
    later = policy(op("add", "/response_headers_to_remove", ["server"]), name="later", priority=5)
    _, hub = await started(broken, later)
    assert headers(hub) == []
    found = outcomes(hub)
    assert found["shop", "later"].invalid is None
    assert found["shop", "broken"].invalid == (
        "jsonPatches[1] (RouteConfiguration 'gateway/8080'): replace /virtual_hosts/0/nope: "
        "can't replace a non-existent object 'nope'"
    )
    assert list(_route_config(hub, GW_GROUP).response_headers_to_remove) == ["server"]


async def test_a_result_envoy_cannot_parse_is_refused_with_its_field_path() -> None:
    _, hub = await started(policy(op("add", "/virtual_hosts/0/nope", 1)))
    invalid = outcomes(hub)["shop", "hdr"].invalid or ""
    assert invalid.startswith("jsonPatches[0] (RouteConfiguration 'gateway/8080'): the result")
    assert 'has no field named "nope" at "RouteConfiguration.virtual_hosts[0]"' in invalid
    assert "Available Fields" not in invalid  # one line, not Envoy's whole field list


async def test_a_resource_the_gateway_lacks_is_refused_naming_those_it_has() -> None:
    _, hub = await started(policy(op("add", "/name", "x", name="gateway/9090")))
    invalid = outcomes(hub)["shop", "hdr"].invalid or ""
    assert "has no such RouteConfiguration (it has: gateway/8080)" in invalid


async def test_a_rename_is_refused_and_a_whole_resource_can_be_added() -> None:
    rename = policy(op("replace", "/name", "other"), name="rename")
    extra = {"name": "extra", "type": "STATIC", "connect_timeout": "1s"}
    add = policy(op("add", None, extra, type_url=CLUSTER, name="ignored"), name="add")
    _, hub = await started(rename, add)
    assert "renames the resource 'other'" in (outcomes(hub)["shop", "rename"].invalid or "")
    snapshot = hub.cache.get(GW_GROUP)
    assert snapshot is not None
    added = cluster_pb2.Cluster.FromString(snapshot.of(CLUSTER)["extra"].body)
    assert added.connect_timeout.seconds == 1


async def test_patches_are_off_unless_the_hub_allows_them() -> None:
    _, hub = await started(policy(ADD_HEADER), allowed=False)
    assert headers(hub) == []
    assert outcomes(hub) == {("shop", "hdr"): PatchOutcome(1, disabled=True)}


async def test_a_patch_stays_through_other_changes_and_goes_with_its_policy() -> None:
    writer, hub = await started(policy(ADD_HEADER))
    # A route change: the patched group's snapshot is rebuilt whole, patched again.
    await writer.publish(_route("/v2"))
    await hub.watcher.step()
    assert headers(hub) == ["x-patched"]
    assert _route_config(hub, GW_GROUP).virtual_hosts[0].routes[0].match.path_separated_prefix
    await writer.withdraw(RecordRef(Kind.ENVOY_PATCH_POLICY, "shop", "hdr"))
    await hub.watcher.step()
    assert headers(hub) == []
    assert GW_GROUP not in hub.builder.patch_outcomes
    snapshot = hub.cache.get(GW_GROUP)
    assert snapshot is not None and set(snapshot.of(LISTENER)) == {ROUTES}


# --- the first stage -------------------------------------------------------------------------


def statuses(
    *policies: EnvoyPatchPolicyRecord, facts: dict[tuple[str, str], PatchFact] | None = None
) -> dict[str, list[tuple[str, str, str, str]]]:
    """Each policy's conditions as (type, status, reason, message)."""
    inputs = ClusterInputs("b", gateways=(GATEWAY,), patch_policies=policies)
    inputs = dataclasses.replace(inputs, patch_facts=facts or {})
    resolved = resolve(inputs)
    return {
        s.name: [
            (c.type, c.status, c.reason, c.message)
            for ancestor in s.ancestors
            for c in ancestor.conditions
        ]
        for s in resolved.statuses.policies
        if s.kind == "EnvoyPatchPolicy"
    }


def test_a_spec_that_cannot_apply_is_refused_by_name_and_patches_nothing() -> None:
    cases = {
        "jsonpath": (op("add", "/a", 1, json_path="$.x"), "operation.jsonPath is not supported"),
        "verb": (op("merge", "/a", 1), "'merge' is not one of add, remove"),
        "novalue": (op("replace", "/a"), "operation.value is required for replace"),
        "nofrom": (op("move", "/a"), "operation.from is required for move"),
        "kind": (op("add", "/a", 1, type_url="type.googleapis.com/x.Y"), "'type.google"),
    }
    given = [policy(patch, name=name) for name, (patch, _) in cases.items()]
    given.append(policy(ADD_HEADER, name="route", kind="HTTPRoute"))
    found = statuses(*given)
    for name, (_, message) in cases.items():
        ((kind, status, reason, text),) = found[name]
        assert (kind, status, reason) == ("Accepted", "False", "Invalid"), name
        assert message in text, (name, text)
    assert "HTTPRoute of group" in found["route"][0][3]
    resolved = resolve(ClusterInputs("b", gateways=(GATEWAY,), patch_policies=tuple(given)))
    assert resolved.gateways[0].patches == ()
    # A policy on a Gateway that is not ours, or on Envoy Gateway's GatewayClass, gets
    # no ancestor of ours (and one written before is removed).
    assert statuses(policy(ADD_HEADER, target="elsewhere")) == {"hdr": []}
    merged = policy(ADD_HEADER, kind="GatewayClass", target="envoy-gateway")
    assert statuses(merged) == {"hdr": []}


def test_status_follows_the_hubs_verdict_on_the_current_generation() -> None:
    hdr = policy(ADD_HEADER)
    key = ("shop", "hdr")

    def of(fact: PatchFact | None) -> list[tuple[str, str, str]]:
        found = statuses(hdr, facts=None if fact is None else {key: fact})["hdr"]
        return [(t, s, r) for t, s, r, _ in found]

    accepted = ("Accepted", "True", "Accepted")
    assert of(None) == [accepted, ("Programmed", "False", "Pending")]
    assert of(PatchFact(0, invalid="old")) == of(None)  # about another generation
    assert of(PatchFact(1, disabled=True)) == [("Accepted", "False", "Disabled")]
    assert of(PatchFact(1, invalid="jsonPatches[0]: x")) == [
        ("Accepted", "False", "Invalid"),
        ("Programmed", "False", "Invalid"),
    ]
    assert of(PatchFact(1, invalid="no such", missing=True))[1] == (
        "Programmed",
        "False",
        "ResourceNotFound",
    )
    assert of(PatchFact(1, rejected="envoy-1: bad", envoys=1)) == [
        accepted,
        ("Programmed", "False", "Invalid"),
    ]
    assert of(PatchFact(1, programmed=True, envoys=1)) == [
        accepted,
        ("Programmed", "True", "Programmed"),
    ]
    nack = statuses(hdr, facts={key: PatchFact(1, rejected="envoy-1: bad regex", envoys=1)})
    assert nack["hdr"][1][3].endswith("rejected the patched configuration: envoy-1: bad regex")


def test_policies_apply_by_priority_then_age_then_name() -> None:
    given = [
        dataclasses.replace(policy(ADD_HEADER, name="z", priority=-1)),
        dataclasses.replace(policy(ADD_HEADER, name="b"), created="2026-01-02T00:00:00Z"),
        dataclasses.replace(policy(ADD_HEADER, name="a"), created="2026-01-03T00:00:00Z"),
        policy(ADD_HEADER, name="late", priority=3),
    ]
    resolved = resolve(ClusterInputs("b", gateways=(GATEWAY,), patch_policies=tuple(given)))
    assert [p.name for p in resolved.gateways[0].patches] == ["z", "b", "a", "late"]


# --- the verdicts the hub publishes ----------------------------------------------------------


def test_a_nack_of_a_type_a_policy_changed_is_that_policys() -> None:
    changed_routes = {("shop", "hdr"): PatchOutcome(1, None, frozenset({ROUTE}))}
    nacked = registry_with({LISTENER: "synced", ROUTE: "nacked"})
    (fact,) = patch_facts(changed_routes, nacked.list(GW_GROUP)).values()
    assert not fact.programmed and "envoy-1: cannot bind" in (fact.rejected or "")
    listener_nack = registry_with({LISTENER: "nacked", ROUTE: "synced"})
    (fact,) = patch_facts(changed_routes, listener_nack.list(GW_GROUP)).values()
    assert (fact.rejected, fact.programmed) == (None, True)  # not this policy's resources
    (fact,) = patch_facts(changed_routes, []).values()
    assert (fact.programmed, fact.envoys) == (False, 0)
    refused = {("shop", "hdr"): PatchOutcome(1, "bad")}
    (fact,) = patch_facts(refused, nacked.list(GW_GROUP)).values()
    assert (fact.invalid, fact.rejected, fact.programmed) == ("bad", None, False)


def test_hub_replicas_merge_to_the_oldest_verdict_and_any_refusal() -> None:
    key = ("shop", "hdr")
    done = {key: PatchFact(2, programmed=True, envoys=1)}
    idle = {key: PatchFact(2, envoys=0)}  # a replica without Envoys of the cluster
    assert merge_patches([done, idle]) == {key: PatchFact(2, programmed=True, envoys=1)}
    older = {key: PatchFact(1, programmed=True, envoys=1)}
    assert merge_patches([done, older])[key].generation == 1
    nack = {key: PatchFact(2, rejected="envoy-2: no", envoys=1)}
    merged = merge_patches([done, nack])[key]
    assert (merged.rejected, merged.programmed, merged.envoys) == ("envoy-2: no", False, 2)


# --- what users can get wrong ------------------------------------------------------------


async def test_bad_input_costs_its_policy_never_the_hub() -> None:
    """Inputs that once escaped as exceptions (found by review): each is refused on its
    own policy; no module named in an ``@type`` is imported; the hub goes on."""
    route = {"match": {"prefix": "/"}, "route": {"cluster": "clusterset/shop/nowhere/80"}}
    bad = {
        "noname": op("add", None, {"type": "STATIC"}, type_url=CLUSTER, name="x"),
        "number-type": op("add", "/typed_per_filter_config", {"f": {"@type": 5}}),
        "module": op("add", "/typed_per_filter_config", {"f": {"@type": "t/this.Foo"}}),
        "main": op("add", "/typed_per_filter_config", {"f": {"@type": "t/unittest.__main__.X"}}),
        "dots": op("add", "/typed_per_filter_config", {"f": {"@type": "t/..Foo"}}),
        "nowhere": op("add", "/virtual_hosts/0/routes/0", route),
    }
    _, hub = await started(*(policy(patch, name=name) for name, patch in bad.items()))
    found = outcomes(hub)
    assert {name for (_, name), o in found.items() if o.invalid} == set(bad)
    assert "has no name" in (found["shop", "noname"].invalid or "")
    assert "inconsistent" in (found["shop", "nowhere"].invalid or "")
    assert headers(hub) == []  # the unpatched translation is served
    import sys

    assert "this" not in sys.modules  # ``import this`` prints the Zen of Python


async def test_add_makes_the_parents_its_path_needs() -> None:
    """As Envoy Gateway: proto JSON leaves empty fields out, and ``add`` creates them."""
    header = {"header": {"key": "x-added", "value": "1"}}
    typed = {
        "@type": "type.googleapis.com/xds.type.v3.TypedStruct",
        "type_url": "type.googleapis.com/some.Filter",
        "value": {"on": True},
    }
    _, hub = await started(
        policy(op("add", "/response_headers_to_add/-", header), name="append"),
        policy(op("add", "/typed_per_filter_config/custom.filter", typed), name="typed"),
    )
    assert {o.invalid for o in outcomes(hub).values()} == {None}
    assert headers(hub) == ["x-added"]
    assert "custom.filter" in _route_config(hub, GW_GROUP).typed_per_filter_config


async def test_an_error_does_not_quote_the_whole_resource() -> None:
    _, hub = await started(policy(op("replace", "/virtual_hosts/0/routes/7/name", "x")))
    invalid = outcomes(hub)["shop", "hdr"].invalid or ""
    assert len(invalid) < 400 and "clusterset/shop/web/80" not in invalid, invalid


def test_a_patched_resource_has_one_version_in_every_process() -> None:
    """json_format packs an ``Any``'s map entries in any order: they are packed again
    deterministically, so hub replicas and restarts serve one version."""
    import subprocess
    import sys

    script = (
        "from federation.xds import envoy_models\n"
        "from federation.xds.snapshot import LISTENER, Resource\n"
        "doc = {'name': 'l', 'access_log': [{'name': 'a', 'typed_config': {"
        "'@type': 'type.googleapis.com/envoy.extensions.access_loggers.stream.v3."
        "StdoutAccessLog', 'log_format': {'json_format': {k: k for k in 'abcdefghij'}}}}]}\n"
        "print(Resource.of(envoy_models.parse(LISTENER, doc), 'l').version)\n"
    )
    versions = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(3)
    }
    assert len(versions) == 1, versions


async def test_an_endpoint_change_of_a_patched_gateway_is_still_an_endpoint_push() -> None:
    """Patches that do not touch assignments leave them to the incremental push."""
    registry = MemoryRegistry()
    hub = hub_of(registry, patches_allowed=True)
    await join(registry, "a", [svc("a", "web")])
    await join(registry, "b", [GATEWAY, _route("/api"), policy(ADD_HEADER)])
    await hub.watcher.load()
    hub.publish_loaded()
    pushes = hub.builder.gateway_pushes
    await registry.writer("a").publish(svc("a", "web", address="10.0.0.9"))
    await hub.watcher.step()
    assert hub.builder.gateway_pushes == pushes and headers(hub) == ["x-patched"]
    snapshot = hub.cache.get(GW_GROUP)
    assert snapshot is not None
    assert any(b"10.0.0.9" in r.body for r in snapshot.of(ENDPOINT).values())


async def test_our_extension_patches_a_clusters_clusterset_listener() -> None:
    """A policy on ``ClusterSetListener`` ``b`` (policy.federation.io) patches b's shared
    Envoys' resources only; its verdict is published for b even without a Gateway."""
    from federation.hub.programmed import ProgrammedPublisher
    from federation.programmed import merged_facts
    from federation.registry.hub_state import MemoryHubState
    from federation.xds.status import SyncRegistry

    shared = policy(
        op("add", "/response_headers_to_add/-", HEADER[0], name="clusterset"),
        name="shared",
        group="policy.federation.io",
        kind="ClusterSetListener",
        target="b",
    )
    registry = MemoryRegistry()
    hub = hub_of(registry, patches_allowed=True)
    await join(registry, "a", [svc("a", "web")])
    writer = await join(registry, "b", [shared])  # no Gateway in b
    await hub.watcher.load()
    hub.publish_loaded()

    def shared_headers(group: str) -> list[str]:
        snapshot = hub.cache.get(group)
        assert snapshot is not None
        config = route_pb2.RouteConfiguration.FromString(snapshot.of(ROUTE)["clusterset"].body)
        return [h.header.key for h in config.response_headers_to_add]

    assert shared_headers("b") == ["x-patched"] and shared_headers("a") == []
    state = MemoryHubState()
    sync = SyncRegistry(hub.cache.snapshot_versions)
    publisher = ProgrammedPublisher(
        state, sync, lambda: {}, "hub-1", patches=lambda: hub.builder.patch_outcomes
    )
    await publisher.publish_once()
    facts = await merged_facts(state, "b")
    assert facts.patches["shop", "shared"].invalid is None
    await writer.withdraw(RecordRef(Kind.ENVOY_PATCH_POLICY, "shop", "shared"))
    await hub.watcher.step()
    assert shared_headers("b") == []
