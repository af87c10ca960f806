"""The bootstrap fedctl prints is accepted by the real Envoy (``--mode validate``), and
an Envoy started with it reaches the hub's real xDS server and syncs."""

import asyncio
import json
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from e2e import toolchain
from e2e.cluster import free_port
from e2e.xds_resources import eds_cluster, loopback_assignment
from federation.cli import pki
from federation.cli.bootstrap import XDS_CLUSTER, BootstrapOptions, BootstrapTls, bootstrap
from federation.xds.peers import ServerLimits
from federation.xds.server import serve
from federation.xds.snapshot import Snapshot, SnapshotCache
from federation.xds.status import SyncRegistry

pytestmark = pytest.mark.integration

#: Bound on the wait for an Envoy to connect and ACK (it takes well under a second).
SYNC_DEADLINE = 15.0


@pytest.mark.parametrize(
    ("delta", "xds", "tls", "agent"),
    [
        (False, "127.0.0.1:18000", True, None),
        (True, "127.0.0.1:18000", True, None),
        (False, "localhost:18000", True, None),
        (False, "127.0.0.1:18000", False, None),
        (False, "127.0.0.1:18000", True, "localhost:18443"),
        (False, "127.0.0.1:18000", False, "127.0.0.1:18443"),
    ],
)
def test_real_envoy_accepts_the_bootstrap(
    tmp_path: Path, delta: bool, xds: str, tls: bool, agent: str | None
) -> None:
    """By IP (STATIC) and by name (LOGICAL_DNS, as the hub's Service in a pod); with the
    cluster's client certificate (files minted by fedctl pki) and in plain text; a
    Gateway's Envoy with the cluster's agent, which serves it credentials."""
    pki.init(tmp_path / "pki", clusters=["a"], hub_names=["localhost"])
    files = tmp_path / "pki" / "clusters" / "a"
    config = tmp_path / "bootstrap.json"
    config.write_text(
        json.dumps(
            bootstrap(
                BootstrapOptions(
                    cluster="a",
                    xds_address=xds,
                    admin_address="127.0.0.1:9901",
                    delta=delta,
                    tls=BootstrapTls(
                        str(files / "tls.crt"), str(files / "tls.key"), str(files / "ca.crt")
                    )
                    if tls
                    else None,
                    insecure_plaintext=not tls,
                    gateway="shop/gw" if agent else None,
                    agent_address=agent,
                )
            )
        )
    )
    envoy = toolchain.locate().envoy
    proc = subprocess.run(
        [str(envoy), "--mode", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout + proc.stderr


def _free_loopback_port(host: str) -> int:
    """A TCP port free on ``host`` (``127.0.0.1`` or ``::1``). A machine without IPv6
    loopback fails the test rather than skipping it: the case it covers would go untested."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError as exc:
            pytest.fail(f"cannot listen on {host}: {exc}")
        port: int = sock.getsockname()[1]
        return port


def start_envoy(tmp_path: Path, options: BootstrapOptions) -> tuple[subprocess.Popen[bytes], Path]:
    """A real Envoy on the bootstrap of ``options``, logging to a file; with that file."""
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(bootstrap(options)))
    log = tmp_path / "envoy.log"
    with log.open("w") as out:
        envoy = subprocess.Popen(
            [str(toolchain.locate().envoy), "-c", str(config), "--disable-hot-restart",
             "--concurrency", "1", "--log-level", "warn"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return envoy, log


def _admin(address: str, path: str) -> str:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as resp:
        text: str = resp.read().decode()
        return text


@pytest.mark.parametrize("listen", ["127.0.0.1", "::1"])
async def test_envoy_given_the_hub_by_name_syncs_whichever_family_the_hub_listens_on(
    tmp_path: Path, listen: str
) -> None:
    """The bootstrap of ``fedctl bootstrap --xds localhost:PORT``: ``localhost`` resolves
    to ``::1`` and ``127.0.0.1`` and the hub listens on one of them only. The Envoy still
    connects, gets its cluster's configuration and ACKs it (the hub's sync status says so)
    and has the cluster served to it."""
    envoy_binary = toolchain.locate().envoy
    port = _free_loopback_port(listen)
    admin = f"127.0.0.1:{free_port()}"
    config = tmp_path / "bootstrap.json"
    options = BootstrapOptions(
        cluster="a", xds_address=f"localhost:{port}", admin_address=admin, insecure_plaintext=True
    )
    config.write_text(json.dumps(bootstrap(options)))
    cache = SnapshotCache()
    sync = SyncRegistry(cache.snapshot_versions)
    cache.set("a", Snapshot.build([eds_cluster("served"), loopback_assignment("served", [9])]))
    cache.mark_ready()
    server = await serve(cache, sync, f"[{listen}]:{port}" if ":" in listen else f"{listen}:{port}")
    log = tmp_path / "envoy.log"
    with log.open("w") as out:
        envoy = subprocess.Popen(
            [
                str(envoy_binary),
                "-c",
                str(config),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def synced() -> bool:
        return any(s.node_id == "envoy-a" and s.synced for s in sync.list())

    try:
        try:
            async with asyncio.timeout(SYNC_DEADLINE):
                await sync.wait_for(synced)
        except TimeoutError:
            try:
                text = await asyncio.to_thread(_admin, admin, "/clusters")
                hosts = "\n".join(
                    line
                    for line in text.splitlines()
                    if line.startswith(XDS_CLUSTER + "::")
                    and line.rsplit("::", 2)[-2] in ("cx_total", "cx_connect_fail")
                )
            except OSError as exc:
                hosts = f"(admin interface: {exc})"
            pytest.fail(
                f"the Envoy did not sync with the hub on {listen} in {SYNC_DEADLINE} s; "
                f"its hub connections:\n{hosts}\n{log.read_text()[-3000:]}"
            )
        clusters = await asyncio.to_thread(_admin, admin, "/clusters")
        assert any(line.startswith("served::") for line in clusters.splitlines()), clusters
    finally:
        envoy.terminate()
        await asyncio.to_thread(envoy.wait, 30)
        await server.stop(None)


async def test_the_ready_listener_answers_ready_only_once_configured_and_nothing_else(
    tmp_path: Path,
) -> None:
    """``fedctl bootstrap --ready``: a kubelet probes ``GET /ready`` there. Until the hub's
    first configuration arrived it does not answer (Envoy opens its listeners once
    initialized), then 200; Prometheus scrapes ``GET /stats/prometheus``; no other admin
    path is reachable through it (the admin interface stays on loopback)."""
    port = _free_loopback_port("127.0.0.1")
    ready = f"127.0.0.1:{free_port()}"
    admin = f"127.0.0.1:{free_port()}"
    options = BootstrapOptions(
        cluster="a",
        xds_address=f"127.0.0.1:{port}",
        admin_address=admin,
        insecure_plaintext=True,
        gateway="shop/gw",
        ready_address=ready,
    )
    envoy, _ = start_envoy(tmp_path, options)

    def status(path: str, method: str = "GET") -> int | None:
        request = urllib.request.Request(f"http://{ready}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return None

    cache = SnapshotCache()
    sync = SyncRegistry(cache.snapshot_versions)
    server = None
    try:
        async with asyncio.timeout(SYNC_DEADLINE):
            while not await asyncio.to_thread(_answers, admin):
                await asyncio.sleep(0.05)  # polling the admin interface, with a deadline
        assert await asyncio.to_thread(status, "/ready") is None  # running, no hub yet
        cache.set("a/shop/gw", Snapshot.build([]))
        cache.mark_ready()
        server = await serve(cache, sync, f"127.0.0.1:{port}")
        async with asyncio.timeout(SYNC_DEADLINE):
            while await asyncio.to_thread(status, "/ready") != 200:
                await asyncio.sleep(0.05)  # polling Envoy's readiness, with a deadline
        assert await asyncio.to_thread(status, "/stats") == 404
        assert await asyncio.to_thread(status, "/quitquitquit", "POST") == 404
        # Prometheus scrapes Envoy's own metrics there, and only with GET.
        with urllib.request.urlopen(f"http://{ready}/stats/prometheus", timeout=2) as resp:
            metrics = resp.read().decode()
        assert "# TYPE envoy_server_live gauge" in metrics
        assert await asyncio.to_thread(status, "/stats/prometheus", "POST") == 404
        assert envoy.poll() is None
    finally:
        envoy.terminate()
        await asyncio.to_thread(envoy.wait, 30)
        if server is not None:
            await server.stop(None)


def _answers(admin: str) -> bool:
    """Whether the admin interface answers (any status: Envoy says 503 until it is live)."""
    try:
        _admin(admin, "/ready")
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


async def test_an_envoy_given_replicas_prefers_the_first_moves_and_comes_back_with_age(
    tmp_path: Path,
) -> None:
    """``--xds IP:PORT,IP:PORT``: the Envoy syncs with the first replica; when that one
    goes, it ejects it and syncs with the next; once the first is back, the next's
    maximum connection age (here 2 s, then 1 s of grace) sends it back to the first,
    which is how connections spread again over replicas."""
    cache = SnapshotCache()
    cache.set("a", Snapshot.build([eds_cluster("served"), loopback_assignment("served", [9])]))
    cache.mark_ready()
    ports = free_port(), free_port()
    first, second = SyncRegistry(cache.snapshot_versions), SyncRegistry(cache.snapshot_versions)
    aging = ServerLimits(max_connection_age=2.0, max_connection_age_grace=1.0)
    servers = {
        "first": await serve(cache, first, f"127.0.0.1:{ports[0]}"),
        "second": await serve(cache, second, f"127.0.0.1:{ports[1]}", limits=aging),
    }
    admin = f"127.0.0.1:{free_port()}"
    options = BootstrapOptions(
        cluster="a",
        xds_address=",".join(f"127.0.0.1:{p}" for p in ports),
        admin_address=admin,
        insecure_plaintext=True,
    )
    envoy, log = start_envoy(tmp_path, options)

    async def synced_with(sync: SyncRegistry, what: str, deadline: float) -> None:
        def synced() -> bool:
            return any(s.node_id == "envoy-a" and s.synced for s in sync.list())

        try:
            async with asyncio.timeout(deadline):
                await sync.wait_for(synced)
        except TimeoutError:
            pytest.fail(f"the Envoy did not sync with {what}:\n{log.read_text()[-3000:]}")

    try:
        await synced_with(first, "the first replica", SYNC_DEADLINE)
        assert not second.list(), "the Envoy went to the second replica first"
        await servers.pop("first").stop(None)
        await synced_with(second, "the second once the first went", SYNC_DEADLINE)
        back = SyncRegistry(cache.snapshot_versions)
        servers["first"] = await serve(cache, back, f"127.0.0.1:{ports[0]}")
        # Ejected for 10 s after its failure; the second closes connections every 3 s.
        await synced_with(back, "the first once back, after an aged connection", 30.0)
    finally:
        envoy.terminate()
        await asyncio.to_thread(envoy.wait, 30)
        for server in servers.values():
            await server.stop(None)
