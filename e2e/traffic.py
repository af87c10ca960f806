"""Traffic through the local environment's Envoys, for the data-plane e2e tests.

Used by ``e2e/test_data_plane.py`` and ``e2e/test_failover.py``: the clusterset host
name of a Service, who served a request, exports with backends behind them, and
:class:`Loop`, a bounded request loop in a thread whose results tests assert on.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from e2e import scenario as sc
from e2e.envoy import Envoy
from e2e.federation import Federation
from e2e.processes import wait_until

DEADLINE = 20.0


def host(ns: str, name: str = "echo") -> str:
    return f"{name}.{ns}.svc.clusterset.local"


def served_by(envoy: Envoy, hostname: str) -> str | None:
    """The cluster whose backend answered, or None when the request failed."""
    try:
        resp = envoy.request(hostname, timeout=2)
    except OSError:
        return None
    if resp.status != 200:
        return None
    return str(json.loads(resp.body)["cluster"])


def wait_served_by(envoy: Envoy, hostname: str, cluster: str) -> None:
    wait_until(
        lambda: served_by(envoy, hostname) == cluster,
        timeout=DEADLINE,
        what=f"{hostname} through {envoy.cluster}'s Envoy to be served by {cluster}",
    )


def export_with_backend(
    fed: Federation, cluster_id: str, ns: str, host_id: int, ready: bool = True
) -> None:
    export_with_backends(fed, cluster_id, ns, [host_id], ready=ready)


def export_with_backends(
    fed: Federation,
    cluster_id: str,
    ns: str,
    host_ids: list[int],
    *,
    ready: bool = True,
    start: bool = False,
) -> None:
    """Export ``ns/echo`` from ``cluster_id`` with one endpoint per host id (each
    backend started first when ``start``)."""
    cluster = fed.env.cluster(cluster_id)
    if start:
        for host_id in host_ids:
            fed.start_backend(cluster_id, host_id)
    sc.apply(
        cluster,
        sc.service(ns, "echo"),
        sc.endpoint_slice(cluster, ns, "echo", host_ids, ready=ready),
        sc.export(ns, "echo"),
    )


@dataclass
class Loop:
    """A bounded request loop in a thread: at most ``count`` requests and ``seconds``."""

    envoy: Envoy
    hostname: str
    count: int = 400
    seconds: float = 30.0
    #: Pause between two requests: the loop's pacing, not synchronisation.
    pause: float = 0.02
    results: list[tuple[float, str | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        for _ in range(self.count):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            self.results.append((time.monotonic(), served_by(self.envoy, self.hostname)))
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self) -> Loop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def failures(self, since: float = 0.0) -> int:
        return sum(1 for t, who in self.results if t >= since and who is None)

    def served(self, since: float = 0.0) -> dict[str | None, int]:
        out: dict[str | None, int] = {}
        for t, who in self.results:
            if t >= since:
                out[who] = out.get(who, 0) + 1
        return out

    def wait_for(self, requests: int, since: float = 0.0) -> None:
        """Return once ``requests`` requests were made after ``since``."""
        wait_until(
            lambda: len([1 for t, _ in self.results if t > since]) >= requests,
            timeout=DEADLINE + requests * 0.1,
            what=f"{requests} requests through {self.envoy.cluster}'s Envoy",
        )
