"""pytest fixtures for the local multi-cluster environment.

Loaded for every test run through ``-p e2e.fixtures`` (pyproject.toml). The
session-wide environment is started on first use and stopped at the end of
the run, also when tests fail or the run is interrupted.
"""

from __future__ import annotations

import os

# The tests speak gRPC in this process (xDS clients, abuse clients) and start every real
# component with fork and exec. gRPC's fork handlers, run in a child forked while a gRPC
# thread is busy, can abort that child before it execs (an agent "exits" at start with
# only gRPC's "epoll_wait error: Bad file descriptor" in its log). No child uses gRPC
# before exec, so fork support is off; this must be set before gRPC starts.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import contextlib
from collections.abc import Generator, Iterator

import pytest
from kubernetes.client import ApiClient
from kubernetes.config import new_client_from_config

from e2e.cluster import Identity, LocalCluster, LocalEnvironment
from e2e.federation import Federation
from federation.translate.gateway.patches import ENABLE_FLAG


@pytest.fixture(scope="session")
def local_env() -> Iterator[LocalEnvironment]:
    """Two member clusters, ``a`` and ``b``, shared by the whole session."""
    with LocalEnvironment(("a", "b")) as env:
        yield env


#: The control plane's lease TTL: short, so that the stale-cluster tests are quick.
CONTROL_PLANE_LEASE_TTL = 2.0
#: Longer than any test: what a test sees converge did so through watches, not the
#: periodic full resync (a safety net, not the way things propagate).
CONTROL_PLANE_RESYNC_INTERVAL = 900.0


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Federation]:
    """Member clusters ``a``, ``b`` and ``c`` with an agent each and no hub; shared by the
    tests of exports and imports, which work in namespaces of their own (and restore
    what they break: a killed agent, a restarted Redis). ``c`` is dual-stack (IPv4 first),
    ``a`` and ``b`` IPv4 only, so that imports of IPv6 Services can be tried."""
    with LocalEnvironment(("a", "b", "c"), dual_stack=("c",)) as env:
        federation = Federation(
            env,
            lease_ttl=CONTROL_PLANE_LEASE_TTL,
            resync_interval=CONTROL_PLANE_RESYNC_INTERVAL,
        )
        federation.start()
        yield federation


@pytest.fixture(scope="session")
def control_plane_clients(control_plane: Federation) -> Iterator[dict[str, ApiClient]]:
    with api_clients(control_plane.env) as made:
        yield made


def serve_with_envoys(federation: Federation, delta: str | None = "c") -> Federation:
    """Start the agents, the hub (every replica) and a real Envoy per cluster, cluster
    ``delta``'s speaking delta xDS."""
    federation.start()
    federation.start_hub()
    federation.wait_hub_ready()
    for cluster_id in federation.env.clusters:
        federation.start_envoy(cluster_id, delta=cluster_id == delta)
    return federation


@pytest.fixture(scope="session")
def data_plane() -> Iterator[Federation]:
    """Member clusters ``a``, ``b`` and ``c``, each with its agent and a real Envoy (``c``'s
    speaks delta xDS), and the hub serving them (EnvoyPatchPolicies allowed); shared by
    the data-plane tests, which work in namespaces of their own."""
    with LocalEnvironment(("a", "b", "c")) as env:
        federation = Federation(env, lease_ttl=3.0)
        federation.hub_flags.append(ENABLE_FLAG)  # EnvoyPatchPolicy tests
        yield serve_with_envoys(federation)


@pytest.fixture(scope="session", params=["cluster", "sentinel"])
def distributed_plane(request: pytest.FixtureRequest) -> Iterator[Federation]:
    """Member clusters ``a``, ``b`` and ``c`` with their agents, the hub and a real Envoy
    each, like ``data_plane``, with the control plane's lease and resync settings; but
    the registry is a Redis Cluster (3 masters, a replica each) or a primary with a
    replica under 3 sentinels. The federation and Gateway API stories run on it again
    (``e2e/test_distributed_registry_*.py``), and a master is killed under them."""
    with LocalEnvironment(("a", "b", "c")) as env:
        federation = Federation(
            env,
            lease_ttl=CONTROL_PLANE_LEASE_TTL,
            resync_interval=CONTROL_PLANE_RESYNC_INTERVAL,
            registry=request.param,
        )
        yield serve_with_envoys(federation, delta=None)


@pytest.fixture(scope="session", params=[2, 3], ids=lambda n: f"{n}-hubs")
def replicated_plane(request: pytest.FixtureRequest) -> Iterator[Federation]:
    """Like ``data_plane``, with 2 or 3 hub replicas on the one registry and the Envoys
    spread over them: each Envoy lists every replica, preferring the next one in turn,
    and moves to another when its replica goes. The data-plane and Gateway API stories
    run on it again (``e2e/test_hub_replicas_*.py``), and replicas are killed under them."""
    with LocalEnvironment(("a", "b", "c")) as env:
        yield serve_with_envoys(Federation(env, lease_ttl=3.0, hub_replicas=request.param))


@pytest.fixture(scope="session")
def cluster_a(local_env: LocalEnvironment) -> LocalCluster:
    return local_env.cluster("a")


@contextlib.contextmanager
def api_clients(env: LocalEnvironment) -> Iterator[dict[str, ApiClient]]:
    """An admin client per cluster of ``env``, closed at the end."""
    made = {c: api_client(env.cluster(c)) for c in env.clusters}
    try:
        yield made
    finally:
        for client in made.values():
            client.close()  # type: ignore[no-untyped-call]


def api_client(cluster: LocalCluster, identity: Identity | None = None) -> ApiClient:
    """A kubernetes client for ``cluster``, as admin unless ``identity`` is given."""
    path = identity.kubeconfig if identity else cluster.kubeconfig
    client: ApiClient = new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(path)
    )
    return client


@pytest.fixture
def admin_a(cluster_a: LocalCluster) -> Iterator[ApiClient]:
    with api_client(cluster_a) as client:
        yield client


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test on a shared environment reports whether its hub and agents still
    run, and their last log lines: the environment is gone once the run ends."""
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        fed = funcargs.get("fed") or funcargs.get("data_plane")
        if isinstance(fed, Federation):
            report.sections.append(("federation components", fed.diagnosis()))
            if not _FIRST_FAILURE:
                _FIRST_FAILURE.append((item.nodeid, fed.diagnosis(15, exited_only=True)))
    return report


#: The first failed test on a shared environment, with its components' state then.
_FIRST_FAILURE: list[tuple[str, str]] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Generator[None]:
    """The components' state at the first failure, written last: a CI log that keeps
    only the head and tail of the output still shows whether the hub or an agent had
    exited, and why."""
    yield
    for nodeid, diagnosis in _FIRST_FAILURE:
        terminalreporter.section("federation components at the first failure", sep="-")
        terminalreporter.line(nodeid)
        terminalreporter.line(diagnosis)
