"""Envoy Gateway's extension server, called by the hub on each node group's translation
(federation.hub.extension), against a real gRPC server speaking the generated protocol
in this process (e2e.extension_server's): hooks, what is sent again, the fail policies,
metrics and the per-hook changes config-dump shows."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.route.v3 import route_pb2

from e2e.extension_server import ADDED_CLUSTER, HEADER, HeaderExtension, serve
from federation.cli import hub as hub_main
from federation.errors import InvalidInputError
from federation.hub.config_dump import payload
from federation.hub.core import Hub
from federation.hub.extension import ExtensionSettings, ExtensionStage, Hook
from federation.hub.http import extension_samples
from federation.metrics import exposition
from federation.registry.kinds import Kind, RecordRef
from federation.xds.snapshot import CLUSTER, ENDPOINT, ROUTE, SECRET
from tests.memory_store import MemoryRegistry
from tests.unit.test_hub import GATEWAY, GW_GROUP, _route, hub_of
from tests.unit.test_registry_watcher import join, svc


@dataclasses.dataclass
class Server:
    servicer: HeaderExtension
    server: grpc.aio.Server
    port: int

    async def stop(self) -> None:
        await self.server.stop(grace=0)

    async def restart(self) -> None:
        self.server, _ = await serve("127.0.0.1", self.port, self.servicer)


@pytest.fixture
async def extension() -> AsyncIterator[Server]:
    servicer = HeaderExtension()
    server, port = await serve("127.0.0.1", 0, servicer)
    found = Server(servicer, server, port)
    yield found
    await found.server.stop(grace=0)


async def started(
    server: Server,
    *hooks: Hook,
    fail_open: bool = False,
    timeout: float = 2.0,
    more: tuple[Any, ...] = (),
) -> tuple[MemoryRegistry, Any, Hub]:
    registry = MemoryRegistry()
    settings = ExtensionSettings(
        f"127.0.0.1:{server.port}", hooks, timeout=timeout, fail_open=fail_open
    )
    hub = hub_of(registry, extension=ExtensionStage(settings))
    await join(registry, "a", [svc("a", "web")])
    writer = await join(registry, "b", [GATEWAY, _route("/api"), *more])
    await hub.watcher.load()
    await hub.serve_loaded()
    return registry, writer, hub


async def retried(hub: Hub, deadline: float = 10.0) -> None:
    """Retry the failed groups (as the hub does every few seconds) until none is left:
    the channel reconnects with a backoff of its own."""
    assert hub.extension is not None
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline
    while hub.extension.due():
        assert loop.time() < give_up, f"still failing: {sorted(hub.extension.due())}"
        await hub.retry_extension()
        await asyncio.sleep(0.05)  # the retry period, shortened


def routes_of(hub: Hub, group: str, name: str) -> route_pb2.RouteConfiguration:
    snapshot = hub.cache.get(group)
    assert snapshot is not None
    return route_pb2.RouteConfiguration.FromString(snapshot.of(ROUTE)[name].body)


def served(hub: Hub) -> list[tuple[str, list[str]]]:
    """The Gateway's routes: (path prefix, the x-extension headers each adds)."""
    config = routes_of(hub, GW_GROUP, "gateway/8080")
    return [
        (
            r.match.path_separated_prefix,
            [o.header.value for o in r.response_headers_to_add if o.header.key == HEADER],
        )
        for r in config.virtual_hosts[0].routes
    ]


async def test_a_route_hook_changes_every_groups_routes_and_sees_its_cluster(
    extension: Server,
) -> None:
    _, _, hub = await started(extension, Hook.ROUTE)
    assert served(hub) == [("/api", ["b"])]
    for group in ("a", "b"):  # the clusterset listeners' routes too, each its cluster's
        (route,) = routes_of(hub, group, "clusterset").virtual_hosts[0].routes
        assert [o.header.value for o in route.response_headers_to_add] == [group]
    assert {c["spec"]["cluster"] for c in extension.servicer.contexts} == {"a", "b"}
    gateway = next(c for c in extension.servicer.contexts if c["metadata"]["name"] == GW_GROUP)
    assert gateway["kind"] == "NodeGroup"
    assert gateway["spec"]["gateway"] == {"namespace": "shop", "name": "gw"}


async def test_only_what_changed_is_sent_again(extension: Server) -> None:
    second = dataclasses.replace(_route("/two"), name="two")
    registry, writer, hub = await started(extension, Hook.ROUTE, Hook.VIRTUAL_HOST, more=(second,))
    assert hub.extension is not None
    calls = dict(extension.servicer.calls)
    assert calls == {"PostRouteModify": 4, "PostVirtualHostModify": 3}
    await writer.publish(_route("/v2"))  # one of the Gateway's two routes changes
    await hub.watcher.step()
    assert sorted(served(hub)) == [("/two", ["b"]), ("/v2", ["b"])]
    assert extension.servicer.calls["PostRouteModify"] == 5  # that route alone
    assert extension.servicer.calls["PostVirtualHostModify"] == 4  # and its virtual host
    assert hub.extension.stats.remembered == 1  # the other route's answer
    # An endpoint change: no resource a hook sees changed, nothing is sent, and the new
    # endpoints are served.
    await registry.writer("a").publish(svc("a", "web", address="10.0.0.9"))
    await hub.watcher.step()
    assert dict(extension.servicer.calls) == {"PostRouteModify": 5, "PostVirtualHostModify": 4}
    snapshot = hub.cache.get(GW_GROUP)
    assert snapshot is not None
    assert any(b"10.0.0.9" in r.body for r in snapshot.of(ENDPOINT).values())


async def failed_closed(extension: Server) -> Hub:
    """A hub whose Gateway's route changed to /v2 after the extension server stopped."""
    _, writer, hub = await started(extension, Hook.ROUTE)
    assert hub.extension is not None
    await extension.stop()
    await writer.publish(_route("/v2"))
    await hub.watcher.step()
    return hub


async def test_failing_closed_keeps_the_last_result_until_the_server_is_back(
    extension: Server,
) -> None:
    hub = await failed_closed(extension)
    assert hub.extension is not None
    assert served(hub) == [("/api", ["b"])]  # what the extension accepted last
    assert hub.extension.due() >= {GW_GROUP}
    assert hub.extension.stats.runs["failed_closed"] >= 1
    text = exposition(extension_samples(hub.extension))
    assert 'federation_hub_extension_runs_total{outcome="failed_closed"}' in text
    assert 'federation_hub_extension_calls_total{hook="Route",outcome="error"}' in text
    await extension.restart()
    await retried(hub)
    assert served(hub) == [("/v2", ["b"])]
    assert "federation_hub_extension_failing_groups 0" in exposition(
        extension_samples(hub.extension)
    )


async def test_failing_open_serves_the_translation_unmodified(extension: Server) -> None:
    _, writer, hub = await started(extension, Hook.ROUTE, fail_open=True)
    assert hub.extension is not None
    await extension.stop()
    await writer.publish(_route("/v2"))
    await hub.watcher.step()
    assert served(hub) == [("/v2", [])]
    assert hub.extension.stats.runs["failed_open"] >= 1
    await extension.restart()
    await retried(hub)
    assert served(hub) == [("/v2", ["b"])]


async def test_a_slow_server_times_out_and_counts_so(extension: Server) -> None:
    extension.servicer.delay = 0.5
    _, _, hub = await started(extension, Hook.ROUTE, timeout=0.05, fail_open=True)
    assert hub.extension is not None
    assert served(hub) == [("/api", [])]
    assert hub.extension.stats.calls["Route", "timeout"] >= 1
    text = exposition(extension_samples(hub.extension))
    assert 'federation_hub_extension_call_seconds_bucket{hook="Route",le="+Inf"}' in text
    assert "# TYPE federation_hub_extension_call_seconds histogram" in text


async def test_the_translation_hook_replaces_the_lists_it_was_sent(extension: Server) -> None:
    _, _, hub = await started(extension, Hook.TRANSLATION)
    snapshot = hub.cache.get(GW_GROUP)
    assert snapshot is not None and ADDED_CLUSTER in snapshot.of(CLUSTER)
    assert extension.servicer.calls["PostTranslateModify"] == 3  # a, b and b's Gateway


async def test_config_dump_shows_what_each_hook_changed(extension: Server) -> None:
    from federation.cli.config_dump import dump_of, render

    _, _, hub = await started(extension, Hook.ROUTE, Hook.VIRTUAL_HOST)
    assert hub.extension is not None
    found = payload(hub.cache, GW_GROUP, hub.extension.last[GW_GROUP])
    assert found is not None
    text = render(dump_of(found))
    assert "extension:\n  error: null\n  hooks:\n    Route:\n" in text
    added = [line for line in text.splitlines() if line.lstrip().startswith("+")]
    assert any(line.endswith(f"key: {HEADER}") for line in added)  # in the unified diff
    assert "VirtualHost" not in text  # it changed nothing


def test_the_flags_are_checked_together() -> None:
    args = hub_main.parse_args(["--extension-hook", "Route"])
    with pytest.raises(InvalidInputError, match="need --extension-server"):
        hub_main.extension_settings(args)
    args = hub_main.parse_args(["--extension-server", "127.0.0.1:5005"])
    with pytest.raises(InvalidInputError, match="at least one hook"):
        hub_main.extension_settings(args)
    server = ["--extension-server", "127.0.0.1:5005", "--extension-hook", "Route"]
    args = hub_main.parse_args(
        [*server, "--extension-tls-cert", "c.pem", "--extension-tls-key", "k.pem"]
    )
    with pytest.raises(InvalidInputError, match="needs --extension-tls-ca"):
        hub_main.extension_settings(args)
    server = ["--extension-server", "ext:5005", "--extension-hook", "Translation"]
    args = hub_main.parse_args([*server, "--extension-translation-type", "routes"])
    settings = hub_main.extension_settings(args)
    assert settings is not None and settings.translation_types == {CLUSTER, SECRET, ROUTE}


async def test_a_result_from_older_input_is_never_committed(extension: Server) -> None:
    """Found by review: a run still in flight when its group changed (an endpoint
    update) or went (its Gateway deleted) must not bring the older state back."""
    registry, writer, hub = await started(extension, Hook.ROUTE)
    builder = hub.builder
    stamp = builder.stamp(GW_GROUP)
    assert stamp is not None
    before = builder.resources(GW_GROUP)
    await registry.writer("a").publish(svc("a", "web", address="10.0.0.9"))
    await hub.watcher.step()  # an endpoint update served directly: the stamp moves
    assert builder.commit(GW_GROUP, before, stamp) is False
    stamp = builder.stamp(GW_GROUP)
    await writer.withdraw(RecordRef(Kind.GATEWAY, "shop", "gw"))
    await hub.watcher.step()
    assert hub.cache.get(GW_GROUP) is None and builder.stamp(GW_GROUP) is None
    assert builder.commit(GW_GROUP, before, stamp) is False
    assert hub.cache.get(GW_GROUP) is None  # not served again


async def test_an_unreadable_answer_fails_the_group_not_the_hub() -> None:
    """grpc.aio gives None for a response it cannot deserialize (found by review)."""

    async def unreadable(*_: Any) -> Any:
        return None

    stage = ExtensionStage(
        ExtensionSettings("127.0.0.1:1", (Hook.ROUTE,), fail_open=True), caller=unreadable
    )
    registry = MemoryRegistry()
    hub = hub_of(registry, extension=stage)
    await join(registry, "a", [svc("a", "web")])
    await hub.watcher.load()
    await hub.serve_loaded()
    assert stage.stats.calls["Route", "invalid"] >= 1 and stage.due() == {"a"}
    assert hub.cache.get("a") is not None  # fail open: served unmodified


async def test_a_gateway_held_back_by_a_failing_extension_is_not_programmed(
    extension: Server,
) -> None:
    from federation.hub.programmed import ProgrammedPublisher
    from federation.programmed import merged_facts
    from federation.registry.hub_state import MemoryHubState
    from federation.xds.status import SyncRegistry

    hub = await failed_closed(extension)
    state = MemoryHubState()
    publisher = ProgrammedPublisher(
        state,
        SyncRegistry(hub.cache.snapshot_versions),
        lambda: {"b": {("shop", "gw"): 1}},
        "hub-1",
        held_back=hub.held_back,
    )
    await publisher.publish_once()
    fact = (await merged_facts(state, "b")).gateways["shop", "gw"]
    assert fact.generation is None
    assert (fact.rejected or "").startswith("not served: the extension server failed (Route:")


async def test_an_endpoint_change_never_lands_in_an_older_result_without_its_cluster(
    extension: Server,
) -> None:
    """Found by review: failing closed, a group serves an older result; a service that
    came since has no cluster there, so its assignments rebuild the group (held again)
    instead of going into that result (an assignment without its cluster)."""
    registry, _, hub = await started(extension, Hook.ROUTE)
    assert hub.extension is not None
    await extension.stop()
    a = registry.writer("a")
    await a.publish(svc("a", "api"))  # a new service: every group is held, and fails
    await hub.watcher.step()
    served = hub.cache.get("b")
    assert served is not None and "clusterset/shop/api/80" not in served.of(CLUSTER)
    await a.publish(svc("a", "api", address="10.0.0.7"))  # its endpoints change
    await hub.watcher.step()  # (raised InvalidInputError out of the watcher before)
    served = hub.cache.get("b")
    assert served is not None and "clusterset/shop/api/80" not in served.of(ENDPOINT)
    assert "b" in hub.extension.due()
