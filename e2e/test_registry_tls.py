"""The registry over TLS end to end: hub and agents against a TLS-only redis-server.

Two real apiservers, a redis-server that speaks only TLS and requires client
certificates (``Federation(registry_tls=True)``), an agent process per cluster and the
hub, all connecting with ``rediss://`` and the ``FEDERATION_REGISTRY_*`` files. An export
travels from a to b through the registry and the hub follows it; a hub or an agent given
the wrong CA exits at start-up with one line naming the registry and the CA file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from e2e import scenario as sc
from e2e.cluster import LocalEnvironment
from e2e.federation import Federation, metric
from e2e.fixtures import api_client
from e2e.pki import CertificateAuthority
from e2e.processes import Process, wait_until
from federation.registry.location import CA_FILE_ENV

pytestmark = pytest.mark.integration

DEADLINE = 30.0


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    with LocalEnvironment(("a", "b")) as env:
        federation = Federation(env, registry_tls=True)
        federation.start()
        federation.start_hub()
        federation.wait_hub_ready()
        yield federation


@pytest.fixture
def wrong_ca(tmp_path: Path) -> Path:
    """The certificate of a CA that signed nothing of the registry's."""
    path = tmp_path / "wrong-ca.crt"
    path.write_bytes(CertificateAuthority("not-the-registry-ca").cert_pem)
    return path


def _entries_applied(fed: Federation) -> float:
    return metric(fed.hub_http("/metrics"), "federation_registry_entries_total")


def test_the_registry_speaks_only_tls(fed: Federation) -> None:
    assert fed.redis.url().startswith("rediss://")
    plain = redis.Redis(host=fed.redis.host, port=fed.redis.port, socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()


def test_an_export_in_a_becomes_an_import_in_b_and_the_hub_follows(fed: Federation) -> None:
    ns = sc.namespace_everywhere(fed.env.clusters.values(), "tls")
    before = _entries_applied(fed)
    a = fed.env.cluster("a")
    sc.apply(
        a,
        sc.service(ns, "cart"),
        sc.endpoint_slice(a, ns, "cart", [7]),
        sc.export(ns, "cart"),
    )
    with api_client(fed.env.cluster("b")) as b:
        wait_until(
            lambda: sc.clusters(sc.get_custom(b, "serviceimports", ns, "cart")) == ["a"],
            timeout=DEADLINE,
            what="a's export imported in b",
        )
    # The hub read the export's stream entries over its own TLS connection.
    wait_until(
        lambda: _entries_applied(fed) > before,
        timeout=DEADLINE,
        what="the hub to apply the export's registry entries",
    )
    assert fed.hub_ready()


def _new_log(proc: Process, offset: int) -> str:
    return proc.log.read_bytes()[offset:].decode(errors="replace")


def _log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _run_until_exit(
    fed: Federation, start: Callable[[], Process], log: Path, wrong_ca: Path
) -> tuple[int, str]:
    """Start a process with ``wrong_ca`` as its registry CA; its exit code and new log."""
    good = fed.registry_tls_env
    offset = _log_size(log)
    fed.registry_tls_env = {**good, CA_FILE_ENV: str(wrong_ca)}
    try:
        proc = start()
    finally:
        fed.registry_tls_env = good
    wait_until(lambda: not proc.running(), timeout=DEADLINE, what=f"{proc.name} to exit")
    return proc.popen.returncode, _new_log(proc, offset)


def _expected(fed: Federation, prog: str, wrong_ca: Path) -> str:
    return (
        f"{prog}: registry at 127.0.0.1:{fed.redis.port}: the server's certificate was not "
        f"signed by the CA in {CA_FILE_ENV} ({wrong_ca})"
    )


def test_a_hub_with_a_wrong_ca_exits_with_a_clear_message(fed: Federation, wrong_ca: Path) -> None:
    assert fed.hub is not None
    fed.env.group.stop(fed.hub)  # its ports are the next hub's
    try:
        code, log = _run_until_exit(fed, fed.start_hub, fed.hub.log, wrong_ca)
        assert code == 1, log
        assert _expected(fed, "federation-hub", wrong_ca) in log
        assert "Traceback" not in log
    finally:
        fed.start_hub()
        fed.wait_hub_ready()


def test_an_agent_with_a_wrong_ca_exits_with_a_clear_message(
    fed: Federation, wrong_ca: Path
) -> None:
    log_path = fed.agents["b"].cluster.dir / "agent.log"
    fed.stop_agent("b")
    try:
        code, log = _run_until_exit(fed, lambda: fed.start_agent("b"), log_path, wrong_ca)
        assert code == 1, log
        assert _expected(fed, "federation-agent", wrong_ca) in log
        assert "Traceback" not in log
        assert '"levelname": "ERROR"' not in log  # it stopped before starting kopf
    finally:
        fed.start_agent("b")
        fed.wait_agent_ready("b")
