"""Traffic through the local environment's Envoys, for the data-plane e2e tests.

Used by ``e2e/test_data_plane.py`` and ``e2e/test_failover.py``: the clusterset host
name of a Service, who served a request, exports with backends behind them, and
:class:`Loop`, a bounded request loop in a thread whose results tests assert on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from e2e import gateways as gw
from e2e import scenario as sc
from e2e.envoy import Envoy, EnvoyClient
from e2e.federation import Federation
from e2e.processes import Process, wait_until

DEADLINE = 20.0


def kill(processes: list[Process]) -> None:
    """SIGKILL our own backend processes (by pid), as a node failure would."""
    for proc in processes:
        os.kill(proc.pid, signal.SIGKILL)
    for proc in processes:
        proc.popen.wait(timeout=10)


def host(ns: str, name: str = "echo") -> str:
    return f"{name}.{ns}.svc.clusterset.local"


@dataclass(frozen=True)
class Outcome:
    """Who answered one request, or (``served_by`` None) why it failed."""

    served_by: str | None
    why: str = ""


def attempt(envoy: EnvoyClient, hostname: str) -> Outcome:
    """One request through ``envoy``: the cluster whose backend answered, or why not."""
    try:
        resp = envoy.request(hostname, timeout=2)
    except OSError as err:
        return Outcome(None, f"{type(err).__name__}: {err}")
    if resp.status != 200:
        flags = resp.headers.get("x-envoy-response-flags", "")
        return Outcome(None, f"HTTP {resp.status} {flags} {resp.body[:200]!r}")
    return Outcome(str(json.loads(resp.body)["cluster"]))


def gateway_attempt(address: str) -> Outcome:
    """One request to a Gateway listener at ``address`` (``HOST:PORT``): the cluster
    whose backend answered, or why not."""
    try:
        reply = gw.request(address, "/", timeout=2)
    except OSError as err:
        return Outcome(None, f"{type(err).__name__}: {err}")
    if reply.status != 200:
        return Outcome(None, f"HTTP {reply.status} {reply.body[:200]!r}")
    return Outcome(str(reply.json()["cluster"]))


def served_by(envoy: EnvoyClient, hostname: str) -> str | None:
    """The cluster whose backend answered, or None when the request failed."""
    return attempt(envoy, hostname).served_by


def wait_served_by(envoy: EnvoyClient, hostname: str, cluster: str) -> None:
    wait_until(
        lambda: served_by(envoy, hostname) == cluster,
        timeout=DEADLINE,
        what=f"{hostname} through {envoy.cluster}'s Envoy to be served by {cluster}",
    )


@contextlib.contextmanager
def listener_port_taken(fed: Federation, cluster_id: str) -> Iterator[Envoy]:
    """Restart ``cluster_id``'s Envoy while another socket holds its listener's port, so
    that it NACKs the listener; yields the new Envoy, and frees the port on exit."""
    fed.envoys[cluster_id].stop()
    address, _, port = fed.env.cluster(cluster_id).envoy_listener.rpartition(":")
    blocker = socket.socket()
    try:
        # SO_REUSEADDR only to bind past the old Envoy's connections in TIME_WAIT; a
        # listening socket still keeps every other socket off the port.
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind((address, int(port)))
        blocker.listen()
        yield fed.start_envoy(cluster_id)
    finally:
        blocker.close()


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
    """A bounded request loop in a thread: at most ``count`` requests and ``seconds``.

    Each request goes through ``envoy``'s clusterset listener for ``hostname``, or is
    ``probe()`` when given (which says who served it, None for a failure).
    """

    envoy: EnvoyClient | None
    hostname: str = ""
    count: int = 400
    seconds: float = 30.0
    #: Pause between two requests: the loop's pacing, not synchronisation.
    pause: float = 0.02
    probe: Callable[[], Outcome] | None = None
    results: list[tuple[float, str | None]] = field(default_factory=list)
    #: When each request of ``results`` (same index) had its answer.
    answered: list[float] = field(default_factory=list)
    #: Why each failed request failed, with its time.
    failed: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _state: threading.Condition = field(default_factory=threading.Condition)
    _paused: bool = False
    _in_flight: bool = False

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No request is in flight inside the block.

        For killing backends under load: a request a backend had already received when it
        died fails by design (retrying it could repeat what the backend did), so the tests
        kill between requests and assert that no request *finding* a dead backend fails.
        """
        try:
            with self._state:
                self._paused = True
                if not self._state.wait_for(lambda: not self._in_flight, timeout=DEADLINE):
                    raise AssertionError("the loop's request did not finish")
            yield
        finally:
            with self._state:
                self._paused = False
                self._state.notify_all()

    def _once(self) -> Outcome:
        if self.probe is not None:
            return self.probe()
        assert self.envoy is not None
        return attempt(self.envoy, self.hostname)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        for _ in range(self.count):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            with self._state:
                self._state.wait_for(lambda: not self._paused or self._stop.is_set())
                if self._stop.is_set():
                    return
                self._in_flight = True
            try:
                began = time.monotonic()
                outcome = self._once()
            finally:
                with self._state:
                    self._in_flight = False
                    self._state.notify_all()
            if outcome.served_by is None:
                self.failed.append((began, outcome.why))
            self.answered.append(time.monotonic())
            self.results.append((began, outcome.served_by))
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self) -> Loop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._state:
            self._state.notify_all()
        self._thread.join(timeout=60)

    def failures(self, since: float = 0.0) -> int:
        return sum(1 for t, who in self.results if t >= since and who is None)

    def served(self, since: float = 0.0) -> dict[str | None, int]:
        out: dict[str | None, int] = {}
        for t, who in self.results:
            if t >= since:
                out[who] = out.get(who, 0) + 1
        return out

    def served_within(self, start: float, end: float) -> set[str | None]:
        """Who served the requests that both began after ``start`` and were answered
        before ``end``: a request in flight across a change may see either side of it."""
        return {
            who
            for (began, who), answered in zip(self.results, self.answered, strict=True)
            if start <= began and answered < end
        }

    def wait_for(self, requests: int, since: float = 0.0) -> None:
        """Return once ``requests`` requests were made after ``since``."""
        wait_until(
            lambda: len([1 for t, _ in self.results if t > since]) >= requests,
            timeout=DEADLINE + requests * 0.1,
            what=f"{requests} requests of the loop",
        )

    def wait_served(self, cluster: str, since: float = 0.0) -> float:
        """Wait until a request after ``since`` was served by ``cluster``; its time."""
        wait_until(
            lambda: any(who == cluster for t, who in self.results if t > since),
            timeout=DEADLINE,
            what=f"the loop's requests to be served by {cluster}",
        )
        return min(t for t, who in self.results if t > since and who == cluster)
