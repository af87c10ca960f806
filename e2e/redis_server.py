"""A real redis-server on loopback, for the registry's tests, the e2e stories and the demo.

:class:`RedisServer` starts Debian's ``redis-server`` through a
:class:`~e2e.processes.ProcessGroup` on 127.0.0.1 and a free port, with its
config and working directory in a temp dir. The ``default`` user is the
admin (``requirepass``): tests create the restricted agent and hub users
with :func:`federation.registry.acl.apply_users`. Persistence is off unless
asked for, so :meth:`RedisServer.restart` loses every key *and every ACL
user*, like a production Redis restarted without persistence; that is the
failure the agents must recover from.

``tls=True`` makes it TLS-only (``port 0``, ``tls-port``), with a throwaway CA of
:mod:`e2e.pki` that signs the server's certificate (IP SAN 127.0.0.1) and a client
certificate; :meth:`RedisServer.url` is then ``rediss://`` and the admin clients verify the
server with that CA and present the client certificate. The server asks clients for a
certificate but lets them in without one (``tls-auth-clients optional``) unless
``client_certs="required"``. The files are in ``<dir>/tls`` and survive restarts.

The session-wide pytest fixtures are in :mod:`e2e.redis_fixtures`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import redis
import redis.asyncio

from e2e.cluster import free_port
from e2e.pki import CertificateAuthority
from e2e.processes import HarnessError, Process, ProcessGroup, Supervised, wait_until
from federation.registry.location import CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV

HOST = "127.0.0.1"
START_TIMEOUT = 30.0


def redis_binary() -> Path:
    """Debian's redis-server (installed by ``./e2e/dev``, see e2e/toolchain.py)."""
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(found):
        raise HarnessError("redis-server is missing; run ./e2e/dev setup")
    return Path(found)


def _quote(value: str) -> str:
    """A double-quoted redis.conf argument (the config parser unescapes it)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RegistryTlsFiles:
    """A CA, the server's certificate for ``host`` and a client certificate, in ``directory``."""

    def __init__(self, directory: Path, host: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority("federation-registry-ca")
        self.ca_file = directory / "ca.crt"
        self.ca_file.write_bytes(self.ca.cert_pem)
        self.server_cert, self.server_key = self.ca.server_pair("redis", ips=[host]).write(
            directory, "server"
        )
        self.client_cert, self.client_key = self.ca.client("federation-client").write(
            directory, "client"
        )

    def env(self) -> dict[str, str]:
        """The environment variables a hub or agent reads them from."""
        return {
            CA_FILE_ENV: str(self.ca_file),
            CERT_FILE_ENV: str(self.client_cert),
            KEY_FILE_ENV: str(self.client_key),
        }

    def client_options(self) -> dict[str, Any]:
        """redis-py keyword arguments: verify the server, present the client certificate."""
        return {
            "ssl": True,
            "ssl_cert_reqs": "required",
            "ssl_ca_certs": str(self.ca_file),
            "ssl_certfile": str(self.client_cert),
            "ssl_keyfile": str(self.client_key),
        }


class RedisServer(Supervised):
    """One redis-server process; a context manager that stops it.

    >>> with RedisServer(ProcessGroup()) as server:
    ...     server.admin_client().ping()
    """

    def __init__(
        self,
        group: ProcessGroup,
        directory: Path | None = None,
        *,
        admin_password: str | None = None,
        persistence: bool = False,
        name: str = "redis",
        tls: bool = False,
        client_certs: Literal["optional", "required"] = "optional",
        extra_config: Sequence[str] = (),
    ) -> None:
        """``extra_config``: more redis.conf lines (cluster mode, replication: see
        :mod:`e2e.redis_topologies`)."""
        self._group = group
        self.extra_config = list(extra_config)
        self._own_dir = directory is None
        self.dir = directory or Path(tempfile.mkdtemp(prefix="federation-redis-"))
        self.admin_password = admin_password or secrets.token_urlsafe(24)
        if any(ch in self.admin_password for ch in "\r\n\0"):
            raise ValueError("the admin password cannot contain line breaks or NUL")
        self.persistence = persistence
        self.name = name
        self.host = HOST
        self.port = free_port(HOST)
        self.process: Process | None = None
        #: The TLS files when TLS-only, else None.
        self.tls = RegistryTlsFiles(self.dir / "tls", self.host) if tls else None
        self.client_certs = client_certs

    # --- lifecycle ------------------------------------------------------------

    def _write_config(self) -> Path:
        # A config file rather than flags: the admin password stays out of
        # the process list (/proc/<pid>/cmdline is world-readable).
        lines = [f"bind {self.host}"]
        if self.tls is None:
            lines.append(f"port {self.port}")
        else:
            auth = "yes" if self.client_certs == "required" else "optional"
            lines += [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {_quote(str(self.tls.server_cert))}",
                f"tls-key-file {_quote(str(self.tls.server_key))}",
                f"tls-ca-cert-file {_quote(str(self.tls.ca_file))}",
                f"tls-auth-clients {auth}",
            ]
        lines += [
            "protected-mode yes",
            f"dir {_quote(str(self.dir))}",
            'logfile ""',
            "daemonize no",
            f"requirepass {_quote(self.admin_password)}",
        ]
        if self.persistence:
            lines += ["appendonly yes", "appendfsync always", 'save ""']
        else:
            lines += ["appendonly no", 'save ""']
        lines += self.extra_config
        config = self.dir / "redis.conf"
        config.write_text("\n".join(lines) + "\n")
        config.chmod(0o600)
        return config

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.running():
            raise HarnessError(f"{self.name} is already running (pid {self.process.pid})")
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self.process = self._group.start(
            self.name, [str(redis_binary()), str(config)], self.dir / "redis.log"
        )
        wait_until(
            self.ping,
            timeout=START_TIMEOUT,
            what=f"{self.name} on {self.host}:{self.port} to answer PING",
            check=self._check_running,
        )

    def _check_running(self) -> None:
        if self.process is not None and not self.process.running():
            raise HarnessError(
                f"{self.name} exited ({self.process.popen.returncode}):\n{self.process.log_tail()}"
            )

    def stop_process(self) -> None:
        """Stop the process (by its pid) and keep the directory, to start again."""
        if self.process is None:
            return
        proc, self.process = self.process, None
        self._group.stop(proc)
        # Restarts would otherwise pile dead entries into the group.
        with contextlib.suppress(ValueError):
            self._group.processes.remove(proc)

    def stop(self) -> None:
        """Stop the process and remove the temp dir if this object made it."""
        try:
            self.stop_process()
        finally:
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same port.

        Without persistence every key and ACL user is lost.
        """
        self.stop_process()
        self.start()

    @property
    def nodes(self) -> list[RedisServer]:
        """The data nodes (as a Redis Cluster or sentinel set has several): this one."""
        return [self]

    # --- clients --------------------------------------------------------------

    def url(self, user: str = "default", password: str | None = None, db: int = 0) -> str:
        """``redis://user:password@127.0.0.1:port/db`` (the admin's password by default);
        ``rediss://`` when TLS-only (the CA and client certificate: :meth:`tls_env`)."""
        secret = self.admin_password if password is None else password
        scheme = "redis" if self.tls is None else "rediss"
        # redis-py unquotes the user info, so any character survives.
        userinfo = f"{quote(user, safe='')}:{quote(secret, safe='')}"
        return f"{scheme}://{userinfo}@{self.host}:{self.port}/{db}"

    def tls_env(self) -> dict[str, str]:
        """The FEDERATION_REGISTRY_* TLS variables for a hub or agent (none without TLS)."""
        return {} if self.tls is None else self.tls.env()

    def client_options(self) -> dict[str, Any]:
        """The admin's redis-py keyword arguments besides its URL (TLS files)."""
        return {} if self.tls is None else self.tls.client_options()

    @property
    def admin_url(self) -> str:
        return self.url()

    def admin_client(self) -> redis.Redis:
        """A synchronous client as the admin (bytes replies); the caller closes it."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.admin_password,
            socket_connect_timeout=5,
            socket_timeout=10,
            **self.client_options(),
        )

    def async_admin_client(self) -> redis.asyncio.Redis:
        """An asyncio client as the admin (bytes replies); the caller closes it."""
        return redis.asyncio.Redis(
            host=self.host,
            port=self.port,
            password=self.admin_password,
            socket_connect_timeout=5,
            socket_timeout=10,
            **self.client_options(),
        )

    def ping(self) -> bool:
        """True when the server accepts the admin and answers PING."""
        client = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.admin_password,
            socket_connect_timeout=1,
            socket_timeout=1,
            **self.client_options(),
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()
