"""The registry over TLS, against a real TLS-only redis-server.

Clients are made the way the hub and the agent make them: the URL and TLS files go
through :func:`federation.registry.location.location_of`, its options to ``from_url``. The
server's certificate is always verified (its CA and its IP address); a wrong CA, a wrong
host name and a missing client certificate are configuration errors with a one-line
message (:class:`RegistryTlsError`), and the registry watcher stops on one at start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import yaml
from redis import Redis

from e2e.federation import fedctl
from e2e.pki import CertificateAuthority
from e2e.processes import ProcessGroup
from e2e.redis_server import RedisServer
from federation.cli.members import ADMIN_URL_ENV
from federation.registry import keys
from federation.registry.kinds import Kind, RecordRef
from federation.registry.location import CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV, location_of
from federation.registry.records import (
    encode_service,
)
from federation.registry.redis_store import RedisReader, RedisWriter
from federation.registry.store import RegistryTlsError, RegistryUnavailableError
from federation.registry.watcher import Change, RegistryWatcher
from tests.samples import cluster_record, service

pytestmark = pytest.mark.integration


def reader_for(url: str, env: Mapping[str, str]) -> RedisReader:
    """A reader made like the hub's: the URL and the TLS files of ``env``."""
    location = location_of(url, env)
    return RedisReader.from_url(location.url, socket_connect_timeout=5, **location.client_options())


async def error_of(url: str, env: Mapping[str, str]) -> RegistryUnavailableError:
    reader = reader_for(url, env)
    try:
        with pytest.raises(RegistryUnavailableError) as caught:
            await reader.members()
    finally:
        await reader.close()
    return caught.value


async def tls_error_of(url: str, env: Mapping[str, str]) -> RegistryTlsError:
    err = await error_of(url, env)
    assert isinstance(err, RegistryTlsError), err
    return err


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The certificate of a CA that signed nothing of the registry's."""
    path = tmp_path_factory.mktemp("other-ca") / "ca.crt"
    path.write_bytes(CertificateAuthority("someone-else").cert_pem)
    return path


@pytest.fixture(scope="module")
def certs_required() -> Iterator[RedisServer]:
    """A TLS-only redis-server that refuses clients without a certificate of its CA."""
    group = ProcessGroup()
    try:
        with RedisServer(group, tls=True, client_certs="required", name="redis-tls-mtls") as server:
            yield server
    finally:
        group.stop_all()


async def test_writer_and_reader_round_trip_over_tls(tls_redis_server: RedisServer) -> None:
    server = tls_redis_server
    assert server.url().startswith("rediss://")
    env = {CA_FILE_ENV: server.tls_env()[CA_FILE_ENV]}  # the CA only: no client certificate
    location = location_of(server.url(), env)
    writer = RedisWriter.from_url(location.url, "tls-a", **location.client_options())
    reader = RedisReader.from_url(location.url, **location.client_options())
    try:
        await writer.replace_all([service("tls-a")], cluster_record("tls-a"))
        await writer.publish(service("tls-a", "second"))
        assert await writer.withdraw(RecordRef(Kind.SERVICE, "demo", "echo")) is not None
        assert "tls-a" in await reader.members()
        snap = await reader.snapshot("tls-a")
        assert dict(snap.records) == {
            "service/demo/second": encode_service(service("tls-a", "second"))
        }
        entries = await reader.read({"tls-a": snap.position}, block_ms=0)
        assert entries == []
    finally:
        await writer.close()
        await reader.close()
    with server.admin_client() as admin:
        assert admin.hexists(keys.records("tls-a"), "service/demo/second")
        admin.delete(keys.records("tls-a"), keys.stream("tls-a"), keys.cluster_record("tls-a"))
        admin.srem(keys.MEMBERS, "tls-a")


async def test_the_server_speaks_only_tls(tls_redis_server: RedisServer) -> None:
    plain = tls_redis_server.url().replace("rediss://", "redis://", 1)
    reader = RedisReader.from_url(plain, socket_connect_timeout=5, socket_timeout=5)
    try:
        with pytest.raises(RegistryUnavailableError) as caught:
            await reader.members()
    finally:
        await reader.close()
    assert not isinstance(caught.value, RegistryTlsError)  # an outage to the client


async def test_a_wrong_ca_fails_with_a_clear_error(
    tls_redis_server: RedisServer, other_ca: Path
) -> None:
    err = await tls_error_of(tls_redis_server.url(), {CA_FILE_ENV: str(other_ca)})
    message = str(err)
    assert message.startswith(f"registry at 127.0.0.1:{tls_redis_server.port}: ")
    assert f"not signed by the CA in {CA_FILE_ENV} ({other_ca})" in message
    assert "\n" not in message
    assert tls_redis_server.admin_password not in message


async def test_without_a_ca_file_the_system_trust_store_decides(
    tls_redis_server: RedisServer,
) -> None:
    err = await tls_error_of(tls_redis_server.url(), {})
    assert f"not signed by a CA this system trusts (set {CA_FILE_ENV}" in str(err)


async def test_the_host_name_is_verified(tls_redis_server: RedisServer) -> None:
    # The certificate names 127.0.0.1 only; "localhost" reaches the same server.
    url = tls_redis_server.url().replace("@127.0.0.1:", "@localhost:", 1)
    err = await tls_error_of(url, {CA_FILE_ENV: tls_redis_server.tls_env()[CA_FILE_ENV]})
    assert "the server's certificate is not valid for localhost" in str(err)


async def test_a_server_requiring_client_certificates(certs_required: RedisServer) -> None:
    tls = certs_required.tls_env()
    ca_only = {CA_FILE_ENV: tls[CA_FILE_ENV]}
    # Refused. The server's alert usually loses the race with its reset of the connection,
    # so the client may see a reset only: then the message carries the likely cause.
    err = await error_of(certs_required.url(), ca_only)
    assert f"client certificate: set {CERT_FILE_ENV} and {KEY_FILE_ENV}" in str(err)

    reader = reader_for(certs_required.url(), tls)  # with the client certificate
    try:
        assert await reader.members() == set()
    finally:
        await reader.close()


async def test_a_client_certificate_of_another_ca_is_refused(
    certs_required: RedisServer, tmp_path: Path
) -> None:
    cert, key = CertificateAuthority("someone-else").client("intruder").write(tmp_path, "c")
    env = {CA_FILE_ENV: certs_required.tls_env()[CA_FILE_ENV]}
    env |= {CERT_FILE_ENV: str(cert), KEY_FILE_ENV: str(key)}
    err = await error_of(certs_required.url(), env)  # an alert, or a reset with the hint
    assert "the server" in str(err) and "refuse" in str(err)
    assert f"the client certificate in {CERT_FILE_ENV} ({cert})" in str(err)


async def test_the_watcher_stops_at_start_up_on_a_tls_error(
    tls_redis_server: RedisServer, other_ca: Path
) -> None:
    async def on_change(_: set[Change]) -> None:
        return None

    reader = reader_for(tls_redis_server.url(), {CA_FILE_ENV: str(other_ca)})
    watcher = RegistryWatcher(reader, on_change)
    try:
        # Not retried forever: the first load fails and run() raises it.
        with pytest.raises(RegistryTlsError, match="not signed by the CA"):
            await asyncio.wait_for(watcher.run(), timeout=30)
        assert not watcher.loaded.is_set()
    finally:
        await reader.close()


async def test_a_tls_failure_after_start_up_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's certificate changes to one of a CA the watcher does not trust (and
    back): the view is kept, the failure is one ERROR, the recovery one INFO line."""
    group = ProcessGroup()
    try:
        with RedisServer(group, tls=True, name="redis-tls-rotation") as server:
            assert server.tls is not None
            own_ca = tmp_path / "ca.crt"  # the watcher's CA: the server's first one only
            own_ca.write_bytes(server.tls.ca_file.read_bytes())
            first = (server.tls.server_cert.read_bytes(), server.tls.server_key.read_bytes())
            await _rotation(server, own_ca, first, caplog)
    finally:
        group.stop_all()


async def _rotation(
    server: RedisServer,
    own_ca: Path,
    first: tuple[bytes, bytes],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert server.tls is not None
    tls = server.tls
    writer = RedisWriter.from_url(
        server.url(), "rot", **location_of(server.url(), server.tls_env()).client_options()
    )
    await writer.replace_all([service("rot")], cluster_record("rot"))
    await writer.close()

    async def on_change(_: set[Change]) -> None:
        return None

    reader = reader_for(server.url(), {CA_FILE_ENV: str(own_ca)})
    watcher = RegistryWatcher(reader, on_change, block_ms=100)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.loaded.wait(), timeout=30)
        assert watcher.service_names() == {("demo", "echo")}
        caplog.set_level("INFO", logger="federation.registry.watcher")

        # Another CA signs the server's certificate now; the harness trusts both CAs.
        other = CertificateAuthority("rotated-ca")
        other.server_pair("redis", ips=[server.host]).write(tls.ca_file.parent, "server")
        tls.ca_file.write_bytes(own_ca.read_bytes() + other.cert_pem)
        server.restart()
        await _poll(lambda: watcher.stats.errors >= 4, "repeated failed reads")
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "registry-read failed, retrying" in errors[0].getMessage()
        assert f"not signed by the CA in {CA_FILE_ENV} ({own_ca})" in errors[0].getMessage()
        assert watcher.service_names() == {("demo", "echo")}  # fail-static: the view stays
        assert not task.done()

        tls.server_cert.write_bytes(first[0])
        tls.server_key.write_bytes(first[1])
        server.restart()
        await _poll(
            lambda: any("succeeds again" in r.getMessage() for r in caplog.records),
            "the watcher to read again",
        )
        assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reader.close()


async def _poll(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)  # polling interval


def test_fedctl_add_cluster_over_tls(tls_redis_server: RedisServer, other_ca: Path) -> None:
    admin = tls_redis_server.url()
    tls = tls_redis_server.tls_env()
    done = fedctl("add-cluster", "tls-west", env={ADMIN_URL_ENV: admin, **tls})
    assert done.returncode == 0, done.stderr
    url = yaml.safe_load(done.stdout)["stringData"]["url"]
    assert url.startswith("rediss://agent-tls-west:")
    options = location_of(url, tls).client_options()
    with Redis.from_url(url, **options) as agent:  # the printed URL works over TLS
        agent.hset(keys.records("tls-west"), "x", "1")
        agent.delete(keys.records("tls-west"))

    wrong = fedctl(
        "add-cluster", "tls-west", env={ADMIN_URL_ENV: admin, CA_FILE_ENV: str(other_ca)}
    )
    assert wrong.returncode == 1
    assert f"not signed by the CA in {CA_FILE_ENV} ({other_ca})" in wrong.stderr
    assert "Traceback" not in wrong.stderr
