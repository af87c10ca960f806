"""Resources, snapshots and the snapshot cache of ``federation.xds.snapshot``.

Pure logic, with the real Envoy protobuf classes: versions are content hashes, wire
fragments are built once and decode to what was put in, a type's version does not depend
on how the snapshot was built, and the cache wakes its subscribers only on real changes,
reports what changed, and serves nothing before it is ready. The sync-state rules of
``federation.xds.status`` are checked at the end, and that sync status and config-dump
know certificate Secrets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import duration_pb2

from federation.cli import config_dump as cd
from federation.errors import InvalidInputError
from federation.hub.config_dump import payload
from federation.xds.snapshot import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ORDER,
    ROUTE,
    SECRET,
    Resource,
    Snapshot,
    SnapshotCache,
    diff,
    version_of,
)
from federation.xds.status import SyncRegistry, SyncState


def cluster(name: str, timeout: int = 1) -> Resource:
    message = cluster_pb2.Cluster(name=name, connect_timeout=duration_pb2.Duration(seconds=timeout))
    return Resource.of(message, name)


def assignment(name: str, weight: int = 1) -> Resource:
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    message.endpoints.add().load_balancing_weight.value = weight
    return Resource.of(message, name)


# --- Resource -------------------------------------------------------------------------


def test_a_resource_is_its_serialized_message_and_its_version_a_hash_of_it() -> None:
    message = cluster_pb2.Cluster(name="c1", connect_timeout=duration_pb2.Duration(seconds=1))
    resource = Resource.of(message, "c1")
    assert resource.type_url == CLUSTER == "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    assert resource.body == message.SerializeToString(deterministic=True)
    assert resource.version == hashlib.sha256(resource.body).hexdigest()[:16]


def test_identical_bytes_have_identical_versions() -> None:
    assert cluster("c1") == cluster("c1")
    assert cluster("c1").version == cluster("c1").version
    assert Resource("c1", CLUSTER, cluster("c1").body) == cluster("c1")
    assert cluster("c1", timeout=2).version != cluster("c1").version
    assert hash(cluster("c1")) == hash(cluster("c1"))


def test_the_type_urls_and_their_push_order() -> None:
    # A listener comes after the Secrets its TLS contexts name, as after the clusters.
    assert ORDER == (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)
    assert ENDPOINT.endswith("envoy.config.endpoint.v3.ClusterLoadAssignment")
    assert SECRET.endswith("envoy.extensions.transport_sockets.tls.v3.Secret")
    assert LISTENER.endswith("envoy.config.listener.v3.Listener")
    assert ROUTE.endswith("envoy.config.route.v3.RouteConfiguration")


def test_a_resource_needs_a_name() -> None:
    with pytest.raises(InvalidInputError):
        Resource("", CLUSTER, b"")


def test_the_any_is_built_once_and_shared() -> None:
    resource = cluster("c1")
    first = resource.any
    assert resource.any is first
    assert first.type_url == CLUSTER
    assert first.value == resource.body
    assert resource.sotw_entry is resource.sotw_entry
    assert resource.delta_entry is resource.delta_entry


def test_wire_entries_decode_to_the_resources() -> None:
    c1, c2 = cluster("c1"), cluster("c2")
    head = discovery_pb2.DiscoveryResponse(version_info="v", type_url=CLUSTER, nonce="7")
    response = discovery_pb2.DiscoveryResponse.FromString(
        head.SerializeToString() + c1.sotw_entry + c2.sotw_entry
    )
    assert (response.version_info, response.type_url, response.nonce) == ("v", CLUSTER, "7")
    assert [a.value for a in response.resources] == [c1.body, c2.body]
    assert all(a.type_url == CLUSTER for a in response.resources)

    delta = discovery_pb2.DeltaDiscoveryResponse.FromString(
        discovery_pb2.DeltaDiscoveryResponse(removed_resources=["c3"]).SerializeToString()
        + c1.delta_entry
    )
    (entry,) = delta.resources
    assert (entry.name, entry.version, entry.resource.value) == ("c1", c1.version, c1.body)
    assert list(delta.removed_resources) == ["c3"]


# --- Snapshot ---------------------------------------------------------------------------


def test_a_type_version_depends_on_content_only() -> None:
    a = Snapshot.build([cluster("c1"), cluster("c2"), assignment("c1")])
    b = Snapshot.build([assignment("c1"), cluster("c2"), cluster("c1")])
    assert a == b
    assert a.version(CLUSTER) == b.version(CLUSTER) == version_of([cluster("c1"), cluster("c2")])
    assert a.version(ENDPOINT) != a.version(CLUSTER)
    assert a.version(LISTENER) == Snapshot().version(LISTENER)  # empty type
    changed = Snapshot.build([cluster("c1"), cluster("c2", timeout=9), assignment("c1")])
    assert changed.version(CLUSTER) != a.version(CLUSTER)
    assert changed.version(ENDPOINT) == a.version(ENDPOINT)
    # (name, version) pairs: the same bytes under another name are another version.
    renamed = Snapshot.build([Resource("c3", CLUSTER, cluster("c1").body), cluster("c2")])
    assert renamed.version(CLUSTER) != a.version(CLUSTER)


def test_a_snapshot_refuses_two_resources_with_one_name() -> None:
    with pytest.raises(InvalidInputError):
        Snapshot.build([cluster("c1"), cluster("c1", timeout=2)])


def test_with_changes_matches_a_rebuild_and_shares_the_other_types() -> None:
    base = Snapshot.build([cluster("c1"), cluster("c2"), assignment("c1"), assignment("c2")])
    base.version(ENDPOINT)  # cached digest: the change is applied incrementally
    changed = base.with_changes(ENDPOINT, {"c1": assignment("c1", 5)}, ["c2"])
    rebuilt = Snapshot.build([cluster("c1"), cluster("c2"), assignment("c1", 5)])
    assert changed == rebuilt
    assert changed.version(ENDPOINT) == rebuilt.version(ENDPOINT)
    assert changed.of(CLUSTER) is base.of(CLUSTER)
    assert base.get(ENDPOINT, "c2") == assignment("c2")  # the original is untouched
    assert base.with_changes(ENDPOINT, {"c1": assignment("c1")}) is base  # no-op


def test_many_changes_keep_every_snapshot_exact() -> None:
    """Changes are layered over a shared base and folded in now and then; whatever the
    layering, each snapshot holds exactly its resources and earlier ones never change."""
    rng = random.Random(7)
    names = [f"c{i}" for i in range(50)]
    expected = {name: assignment(name) for name in names[:40]}
    snapshot = Snapshot.build(expected.values())
    snapshot.version(ENDPOINT)
    history = [(snapshot, dict(expected))]
    for step in range(300):
        upserts = {n: assignment(n, step % 7 + 1) for n in rng.sample(names, rng.randint(0, 3))}
        removals = [n for n in rng.sample(names, rng.randint(0, 2)) if n not in upserts]
        snapshot = snapshot.with_changes(ENDPOINT, upserts, removals)
        expected.update(upserts)
        for name in removals:
            expected.pop(name, None)
        history.append((snapshot, dict(expected)))
    for snap, content in history:
        held = snap.of(ENDPOINT)
        assert dict(held) == content
        assert len(held) == len(content)
        assert sorted(held) == sorted(content)
        assert all((n in held) == (n in content) for n in names)
        assert all(held.get(n) == content.get(n) for n in names)
        assert snap.version(ENDPOINT) == Snapshot.build(content.values()).version(ENDPOINT)


def test_a_name_removed_twice_is_removed_once() -> None:
    base = Snapshot.build([assignment("c1"), assignment("c2")])
    base.version(ENDPOINT)  # cached digest: the change is applied incrementally
    changed = base.with_changes(ENDPOINT, {}, ["c2", "c2"])
    assert changed.version(ENDPOINT) == Snapshot.build([assignment("c1")]).version(ENDPOINT)


def test_the_sotw_body_holds_every_resource_by_name() -> None:
    snapshot = Snapshot.build([cluster("b"), cluster("a")])
    body = snapshot.sotw_body(CLUSTER)
    assert snapshot.sotw_body(CLUSTER) is body
    response = discovery_pb2.DiscoveryResponse.FromString(body)
    assert [a.value for a in response.resources] == [cluster("a").body, cluster("b").body]


def test_diff_names_what_changed() -> None:
    old = Snapshot.build([cluster("c1"), cluster("c2"), assignment("c1")])
    new = Snapshot.build([cluster("c1"), cluster("c3"), assignment("c1", 2)])
    assert diff(old, new) == {CLUSTER: {"c2", "c3"}, ENDPOINT: {"c1"}}
    assert diff(old, old) == {}


# --- SnapshotCache ----------------------------------------------------------------------


async def test_the_cache_wakes_subscribers_on_changes_and_when_ready() -> None:
    cache = SnapshotCache()
    woken, other = asyncio.Event(), asyncio.Event()
    cache.subscribe("b", woken)
    cache.subscribe("c", other)
    assert not cache.ready
    assert cache.set("b", Snapshot.build([cluster("c1")]))
    assert woken.is_set() and not other.is_set()

    woken.clear()
    cache.mark_ready()
    assert cache.ready and woken.is_set() and other.is_set()

    woken.clear()
    assert not cache.set("b", Snapshot.build([cluster("c1")]))  # same content
    assert not cache.update("b", CLUSTER, {"c1": cluster("c1")})
    assert not woken.is_set()

    cache.unsubscribe("b", woken)
    cache.update("b", CLUSTER, {"c2": cluster("c2")})
    assert not woken.is_set()


async def test_an_update_changes_one_type_and_reports_the_names() -> None:
    cache = SnapshotCache()
    cache.set("b", Snapshot.build([cluster("c1"), cluster("c2"), assignment("c1")]))
    before = cache.get("b")
    assert before is not None
    seen = cache.generation("b")
    assert cache.update("b", ENDPOINT, {"c1": assignment("c1", 3)})
    after = cache.get("b")
    assert after is not None
    assert after.of(CLUSTER) is before.of(CLUSTER)  # nothing else rebuilt
    assert after.version(CLUSTER) == before.version(CLUSTER)
    assert after.version(ENDPOINT) != before.version(ENDPOINT)
    assert cache.generation("b") > seen
    assert cache.changes_since("b", seen) == {ENDPOINT: {"c1"}}

    cache.update("b", CLUSTER, {}, ["c2"])
    assert cache.changes_since("b", seen) == {ENDPOINT: {"c1"}, CLUSTER: {"c2"}}
    assert cache.changes_since("b", cache.generation("b")) == {}
    current = cache.get("b")
    assert current is not None
    assert cache.snapshot_versions("b") == current.versions()
    assert cache.snapshot_versions("unknown") == {}


async def test_the_journal_is_bounded() -> None:
    cache = SnapshotCache(journal_size=2)
    cache.set("b", Snapshot())
    seen = cache.generation("b")
    for weight in range(1, 4):
        cache.update("b", ENDPOINT, {"c1": assignment("c1", weight)})
    assert cache.changes_since("b", seen) is None  # too far back: compare everything
    assert cache.changes_since("b", 0) is None


async def test_update_checks_names_and_types() -> None:
    cache = SnapshotCache()
    with pytest.raises(InvalidInputError):
        cache.update("b", ENDPOINT, {"c2": assignment("c1")})
    with pytest.raises(InvalidInputError):
        cache.update("b", ENDPOINT, {"c1": cluster("c1")})


async def test_discard_forgets_a_group() -> None:
    cache = SnapshotCache()
    woken = asyncio.Event()
    cache.subscribe("b", woken)
    cache.set("b", Snapshot())
    woken.clear()
    gone = cache.generation("b")
    cache.discard("b")
    assert cache.get("b") is None and woken.is_set()
    assert cache.generation("b") > gone
    assert cache.groups() == []


# --- sync state (federation.xds.status) -----------------------------------------------


def test_sync_states_follow_sends_acks_and_nacks() -> None:
    versions = {CLUSTER: "v1"}
    registry = SyncRegistry(lambda group: versions, clock=lambda: 1_700_000_000.0)
    stream = registry.open("envoy-1", "b", "sotw")

    def state() -> SyncState:
        (status,) = registry.list()
        found = status.type(CLUSTER)
        assert found is not None
        return found.state

    stream.subscribed(CLUSTER)
    assert state() is SyncState.STALE
    stream.sent(CLUSTER, "v1", "1")
    stream.evaluated(CLUSTER, "v1")
    assert state() is SyncState.STALE  # not ACKed yet
    stream.acked(CLUSTER, "v1")
    assert state() is SyncState.SYNCED
    versions[CLUSTER] = "v2"
    assert state() is SyncState.STALE  # the snapshot moved on
    stream.sent(CLUSTER, "v2", "2")
    stream.evaluated(CLUSTER, "v2")
    stream.nacked(CLUSTER, "v2", "2", "bad")
    assert state() is SyncState.NACKED
    stream.sent(CLUSTER, "v2", "3")  # same version again (e.g. another name): still rejected
    assert state() is SyncState.NACKED
    versions[CLUSTER] = "v3"
    stream.sent(CLUSTER, "v3", "4")
    stream.evaluated(CLUSTER, "v3")
    stream.acked(CLUSTER, "v3")
    assert state() is SyncState.SYNCED
    document = registry.list()[0].to_json()
    assert document["connected_since"] == "2023-11-14T22:13:20.000Z"
    registry.close(stream)
    assert registry.list() == []


def test_update_needs_a_snapshot_to_change() -> None:
    """A snapshot of only the updated type would make the server send the others empty."""
    cache = SnapshotCache()
    with pytest.raises(InvalidInputError, match="has no snapshot"):
        cache.update("b", ENDPOINT, {"c1": assignment("c1")})
    cache.set("b", Snapshot.build([cluster("c1"), assignment("c1")]))
    cache.discard("b")
    with pytest.raises(InvalidInputError, match="has no snapshot"):
        cache.update("b", ENDPOINT, {"c1": assignment("c1", 2)})
    assert cache.get("b") is None


# --- Secrets: sync status and config-dump know the type -------------------------------


def certificate(name: str, directory: str) -> Resource:
    tls = common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(filename=f"{directory}/tls.crt"),
        private_key=base_pb2.DataSource(filename=f"{directory}/tls.key"),
        watched_directory=base_pb2.WatchedDirectory(path=directory),
    )
    return Resource.of(secret_pb2.Secret(name=name, tls_certificate=tls), name)


def test_sync_status_lists_secrets_in_push_order() -> None:
    registry = SyncRegistry(lambda group: {})
    stream = registry.open("envoy-1", "b", "delta")
    for type_url in (LISTENER, SECRET, CLUSTER):  # as Envoy subscribes: SDS after LDS
        stream.subscribed(type_url)
    (status,) = registry.list()
    assert [t.type_url for t in status.types] == [CLUSTER, SECRET, LISTENER]


def test_config_dump_decodes_secrets_and_compares_them_as_envoy_redacts_them() -> None:
    """The hub dumps a Secret like any type, in push order; Envoy's admin shows the
    private key's path as ``[redacted]``, which is no difference."""
    cache = SnapshotCache()
    cache.set("b", Snapshot.build([cluster("c1"), certificate("cert/ns/a", "/s/ns/a")]))
    found = payload(cache, "b")
    assert found is not None
    assert list(found["resources"]) == [CLUSTER, SECRET]
    dump = cd.dump_of(found, cd.types_of(["secrets"]))
    (served,) = dump.resources[SECRET]
    assert served.resource is not None
    assert served.resource["tls_certificate"]["private_key"] == {"filename": "/s/ns/a/tls.key"}
    shown = json.loads(json.dumps(served.resource))
    shown["tls_certificate"]["private_key"] = {"filename": "[redacted]"}
    admin = {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
                "dynamic_active_secrets": [
                    {"name": "cert/ns/a", "secret": {"@type": SECRET, **shown}}
                ],
            }
        ]
    }
    comparison = cd.compare(dump, cd.envoy_resources(admin), None)
    assert comparison.same == {"secrets": 1} and not comparison.differs
    # A Secret whose files Envoy does not read from the same place is a difference.
    shown["tls_certificate"]["certificate_chain"] = {"filename": "/elsewhere/tls.crt"}
    assert cd.compare(dump, cd.envoy_resources(admin), None).differs
