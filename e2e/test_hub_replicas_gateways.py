"""The Gateway API story with 2 and 3 hub replicas, and replicas killed under traffic.

Like ``e2e/test_hub_replicas_services.py``: tests of ``e2e/test_gateway_api.py``
collected again on ``replicated_plane`` (``e2e/fixtures.py``), where each Gateway's Envoy
prefers another replica. Then what only several replicas can get wrong:

* ``Programmed`` with one Gateway's Envoys on two replicas. Each replica publishes what
  its own Envoys applied, under its own key, and the cluster's agent merges every
  replica's report: one Envoy held back (SIGSTOP) keeps the Gateway pending while the
  other has applied the change, and the Gateway is Programmed once both have.
* A replica killed with SIGKILL under a bounded request loop through a Gateway whose
  Envoy it serves: no request fails (the Envoy keeps its configuration), the Envoy
  moves to another replica, and a route added after the kill is served through it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable

import pytest

from e2e import gateways as gw
from e2e import test_gateway_api as story
from e2e.envoy import Envoy
from e2e.federation import Federation
from e2e.processes import HarnessError, wait_until
from e2e.traffic import DEADLINE, Loop, export_with_backends, gateway_attempt
from federation.programmed import decode
from federation.registry.hub_state import RedisHubState

pytestmark = pytest.mark.integration

# The story's fixtures and portable tests: pytest collects them again in this module,
# where ``data_plane`` below is the replicated hubs' environment.
fed, ns = story.fed, story.ns
globals().update({test.__name__: test for test in story.PORTABLE})

B = story.CLUSTER_B
#: The listener hostname of the Gateway's change while one of its Envoys is stopped.
MOVED = "moved.example.com"
#: How long a test waits for a state while an Envoy is stopped, and how long it then
#: checks that the state stays: together well within the hub's keepalive (a ping every
#: 30 s, answered within 10 s), so that the stopped Envoy's stream stays open meanwhile.
STOPPED_AT_MOST = 5.0
STAYS = 1.5


@pytest.fixture
def data_plane(replicated_plane: Federation) -> Federation:
    return replicated_plane


def replica_of(fed: Federation, node_id: str) -> int | None:
    """The replica ``node_id`` is connected to and synced with (None: none)."""
    for hub in fed.hubs:
        if hub.process is None or not hub.process.running():
            continue
        proxies = json.loads(fed.hub_http("/debug/proxy-status", hub.index))
        if any(p.get("node_id") == node_id and p.get("synced") for p in proxies):
            return hub.index
    return None


def wait_on_replica(fed: Federation, envoy: Envoy, ok: Callable[[int | None], bool]) -> int:
    node_id = envoy.config["node"]["id"]
    seen: list[int | None] = [None]

    def check() -> bool:
        seen[0] = replica_of(fed, node_id)
        return ok(seen[0])

    wait_until(check, timeout=DEADLINE, what=f"{node_id} synced on the expected replica")
    assert seen[0] is not None
    return seen[0]


def preferred(fed: Federation, envoy: Envoy) -> Callable[[int | None], bool]:
    """Whether a replica is the one ``envoy`` prefers (lists first)."""
    return lambda replica: replica == fed.preferred_hub[envoy.name]


def programmed(fed: Federation, ns: str, name: str) -> tuple[str, str, str, int, int]:
    """The Gateway's Programmed (status, reason, message, observedGeneration) and its
    metadata.generation."""
    obj = gw.get_yaml(fed.env.cluster(B), "gateway", ns, name)
    found: dict[str, str] = next(
        (c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == "Programmed"),
        {},
    )
    return (
        found.get("status", ""),
        found.get("reason", ""),
        found.get("message", ""),
        int(found.get("observedGeneration") or 0),
        int(obj["metadata"]["generation"]),
    )


def replica_reports(fed: Federation, ns: str, name: str) -> list[int | None]:
    """The generation of the Gateway that each hub replica reports b's Envoys applied,
    from the registry (one field per replica), sorted."""
    states = asyncio.run(_states(fed))
    out = []
    for data in states.values():
        _, facts = decode(data)
        fact = facts.gateways.get((ns, name))
        if fact is not None and fact.envoys:
            out.append(fact.generation)
    return sorted(out, key=lambda g: -1 if g is None else g)


async def _states(fed: Federation) -> dict[str, bytes]:
    client = fed.redis.async_admin_client()
    try:
        return await RedisHubState(client).states(B)
    finally:
        await client.aclose()


def wait_programmed(fed: Federation, ns: str, name: str, *, timeout: float = DEADLINE) -> int:
    """Until the Gateway is Programmed at its generation; that generation."""
    seen: list[object] = [None]

    def check() -> bool:
        seen[0] = state = programmed(fed, ns, name)
        return state[0] == "True" and state[3] == state[4]

    try:
        wait_until(check, timeout=timeout, what="the Gateway Programmed at its generation")
    except HarnessError as err:
        raise AssertionError(f"{err}: last seen {seen[0]}") from err
    return programmed(fed, ns, name)[4]


def test_programmed_counts_the_envoys_of_every_replica(fed: Federation, ns: str) -> None:
    export_with_backends(fed, "a", ns, [76], start=True)
    b = fed.env.cluster(B)
    address = story.make_gateway(fed, ns)
    port = int(address.rpartition(":")[2])
    first = fed.gateway_envoys[B, ns, "gw"]
    second = fed.start_gateway_envoy(B, ns, "gw", instance=1)
    try:
        gw.apply(b, gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]))
        gw.wait_for_status(address, "/", 200)
        on = [wait_on_replica(fed, e, preferred(fed, e)) for e in (first, second)]
        assert on[0] != on[1], "the Gateway's two Envoys are on one replica"
        before = wait_programmed(fed, ns, "gw")

        assert second.process is not None
        os.kill(second.process.pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            gw.apply(b, gw.gateway(ns, "gw", port, hostname=MOVED))
            seen: list[object] = [None, None]

            def pending_on_the_stopped_one() -> bool:
                # The running Envoy has applied the change and its replica says so;
                # the stopped one's replica still reports the old generation.
                seen[0] = state = programmed(fed, ns, "gw")
                reports = seen[1] = replica_reports(fed, ns, "gw")
                applied = MOVED in json.dumps(first.config_dump())
                pending = state[4] > before and state[:2] == ("False", "Pending")
                return applied and pending and reports == [before, state[4]]

            try:
                wait_until(
                    pending_on_the_stopped_one,
                    timeout=STOPPED_AT_MOST,
                    what="Programmed pending while one Envoy holds the old generation",
                )
            except HarnessError as err:
                raise AssertionError(f"{err}: last seen {seen}") from err
            message = programmed(fed, ns, "gw")[2]
            assert "waiting for 2 Envoy(s)" in message, message
            # And it stays so: the running Envoy's replica does not decide alone.
            try:
                wait_until(
                    lambda: programmed(fed, ns, "gw")[0] == "True", timeout=STAYS, what="a flip"
                )
            except HarnessError:
                pass
            else:
                raise AssertionError("Programmed while one Envoy still held the old generation")
            held = time.monotonic() - stopped
        finally:
            os.kill(second.process.pid, signal.SIGCONT)
        after = wait_programmed(fed, ns, "gw")
        print(
            f"\nEnvoys on replicas {on}; pending {held:.1f} s with one stopped: "
            f"{message!r}; Programmed at generation {after}"
        )
        assert after > before
    finally:
        second.stop()


def test_a_replica_killed_under_traffic_fails_no_request_and_its_envoys_move(
    fed: Federation, ns: str
) -> None:
    export_with_backends(fed, "a", ns, [77], start=True)
    b = fed.env.cluster(B)
    address = story.make_gateway(fed, ns)
    envoy = fed.gateway_envoys[B, ns, "gw"]
    gw.apply(b, gw.http_route(ns, "api", "gw", [{"backendRefs": [gw.backend("echo")]}]))
    gw.wait_for_status(address, "/", 200)
    victim = wait_on_replica(fed, envoy, preferred(fed, envoy))
    try:
        with Loop(None, probe=lambda: gateway_attempt(address), count=3000, seconds=120) as loop:
            loop.wait_for(20)
            fed.kill_hub(victim)
            killed = time.monotonic()
            moved_to = wait_on_replica(fed, envoy, lambda r: r is not None and r != victim)
            moved = time.monotonic()
            late = gw.prefix("/after-the-kill")
            route = [{"matches": [late], "backendRefs": [gw.backend("echo")]}]
            gw.apply(b, gw.http_route(ns, "late", "gw", route))
            gw.wait_for_status(address, "/after-the-kill/x", 200)
            loop.wait_for(20, since=time.monotonic())
    finally:
        # Back for the tests after this one (other modules share the environment).
        process = fed.hubs[victim].process
        if process is None or not process.running():
            fed.start_hub(replica=victim)
            fed.wait_hub_ready(replica=victim)
        # The clusters' Envoys that moved go back, as a connection's maximum age would
        # have them do: started again, they prefer the victim again.
        for shared in fed.envoys.values():
            if fed.preferred_hub[shared.name] == victim:
                shared.stop()
                shared.start()
                wait_on_replica(fed, shared, preferred(fed, shared))
    print(
        f"\nreplica {victim} killed: {envoy.name} synced on replica {moved_to} "
        f"{moved - killed:.1f} s later; requests {loop.served()}, failed {loop.failures()}"
    )
    assert loop.failures() == 0, loop.failed[:5]
