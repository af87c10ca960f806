"""A small LoadBalancer controller for the node tier (MetalLB's job, in the test environment).

Used by the ``e2e/node_tier_gateway`` tests: the agent's infra manager gives every Gateway
a Service of type ``LoadBalancer`` and the Gateway's ``status.addresses`` is that
Service's load balancer ingress, which is what the Gateway API conformance suite dials.

One :class:`LoadBalancerController` per node cluster, a thread of the test process:

* it lists the cluster's Services, then watches them (the apiserver through the host's
  loopback forward, with a client certificate of its own); every watch ends after
  :data:`WATCH_SECONDS` and every :data:`RESYNC_SECONDS` it lists again, so a missed or
  failed step is retried;
* a Service of type ``LoadBalancer`` (with no ``loadBalancerClass``, or ours) gets an
  address of the cluster's pool (:func:`cluster_pools`: a share of the fabric addresses
  no node uses, ``10.250.0.66`` to ``.254``): its ``spec.loadBalancerIP`` if it asks for
  one (left pending when that is taken or outside the pool), else the one its status
  already has, else the lowest free one. The Service's ``status.loadBalancer.ingress``
  becomes ``[{ip, ipMode: VIP}]`` (a merge patch of the status subresource);
* the address is added to the node's fabric interface (``ip -n <node netns> addr add
  IP/32 dev eth0``): the node answers for it on the fabric, and kube-proxy (``ipMode``
  ``VIP``) DNATs it to the Service's endpoints, for traffic from the fabric and from the
  node's own namespace alike;
* when the Service goes (or stops being a LoadBalancer), the address leaves the
  interface and returns to the pool.

Nothing here touches the host's network namespace: addresses live in the node's
namespace, created and removed with the environment. :meth:`LoadBalancerController.stop`
ends the thread (it shuts the watch's socket) and removes the addresses it added.

The allocation logic (:class:`AddressPool`, :func:`service_view`, :func:`plan`) is pure.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from e2e import netns
from e2e.nodes import MAX_NODE_CLUSTERS, NodeCluster
from e2e.processes import HarnessError

#: The fabric addresses no node takes: nodes are ``NODE_SUBNET.(10 + index)`` for index 1
#: to :data:`e2e.nodes.MAX_NODE_CLUSTERS`; ``.255`` is the /24's broadcast address.
FIRST_FREE_HOST = 10 + MAX_NODE_CLUSTERS + 1
LAST_FREE_HOST = 254
#: The interface of a node's namespace that is on the fabric.
FABRIC_INTERFACE = "eth0"
#: ``spec.loadBalancerClass`` values this controller serves (besides none).
LOAD_BALANCER_CLASS = "federation.dev/node-tier"
IP_MODE = "VIP"
WATCH_SECONDS = 60
RESYNC_SECONDS = 30.0
#: Socket timeout of every request (a watch sends nothing for up to WATCH_SECONDS).
REQUEST_TIMEOUT = WATCH_SECONDS + 15.0
RETRY_SECONDS = 1.0
USER = "federation-load-balancer"


class PoolExhausted(HarnessError):
    """No free address left in a cluster's pool."""


def free_addresses(subnet: str = netns.NODE_SUBNET) -> list[str]:
    """The fabric addresses that no node of any environment uses, lowest first."""
    return [f"{subnet}.{host}" for host in range(FIRST_FREE_HOST, LAST_FREE_HOST + 1)]


def cluster_pools(
    cluster_ids: Sequence[str], addresses: Sequence[str] | None = None
) -> dict[str, list[str]]:
    """Disjoint, contiguous and equal shares of ``addresses`` (the free fabric addresses by
    default), one per cluster in order; what is left over by the division stays unused."""
    if not cluster_ids:
        return {}
    if len(set(cluster_ids)) != len(cluster_ids):
        raise ValueError(f"cluster ids must be distinct: {list(cluster_ids)}")
    every = list(free_addresses() if addresses is None else addresses)
    share = len(every) // len(cluster_ids)
    if share == 0:
        raise ValueError(f"{len(every)} addresses cannot be shared by {len(cluster_ids)} clusters")
    return {cid: every[i * share : (i + 1) * share] for i, cid in enumerate(cluster_ids)}


@dataclass
class AddressPool:
    """Addresses to give Services, each to at most one Service (by ``namespace/name``)."""

    addresses: Sequence[str]
    assigned: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.addresses)) != len(self.addresses):
            raise ValueError("a pool's addresses must be distinct")
        for address in self.addresses:
            ipaddress.IPv4Address(address)  # raises on anything else

    def __contains__(self, address: object) -> bool:
        return address in self.addresses

    def owner(self, address: str) -> str | None:
        for key, ip in self.assigned.items():
            if ip == address:
                return key
        return None

    def free(self) -> list[str]:
        taken = set(self.assigned.values())
        return [a for a in self.addresses if a not in taken]

    def allocate(self, key: str, prefer: Iterable[str] = (), *, only: str | None = None) -> str:
        """``key``'s address: the one it has; else ``only`` (raises when that is outside
        the pool or taken); else the first free address of ``prefer`` in the pool; else
        the lowest free one (raises :class:`PoolExhausted`)."""
        current = self.assigned.get(key)
        if only is not None:
            if current == only:
                return only
            if only not in self.addresses:
                raise ValueError(f"{only} is not in this cluster's pool")
            holder = self.owner(only)
            if holder is not None:
                raise ValueError(f"{only} is taken by {holder}")
            self.release(key)
            self.assigned[key] = only
            return only
        if current is not None:
            return current
        free = self.free()
        for address in prefer:
            if address in free:
                self.assigned[key] = address
                return address
        if not free:
            raise PoolExhausted(f"every one of the {len(self.addresses)} addresses is taken")
        self.assigned[key] = free[0]
        return free[0]

    def release(self, key: str) -> str | None:
        """Free ``key``'s address; the address, or None if it had none."""
        return self.assigned.pop(key, None)


@dataclass(frozen=True)
class ServiceView:
    """What the controller reads of a Service."""

    key: str
    wants: bool
    requested: str | None
    ingress: tuple[Mapping[str, Any], ...]

    @property
    def ingress_ips(self) -> tuple[str, ...]:
        return tuple(str(e["ip"]) for e in self.ingress if e.get("ip"))


def service_key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def service_view(obj: Mapping[str, Any]) -> ServiceView:
    spec = obj.get("spec") or {}
    lb_class = spec.get("loadBalancerClass")
    wants = spec.get("type") == "LoadBalancer" and lb_class in (None, "", LOAD_BALANCER_CLASS)
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return ServiceView(
        key=service_key(obj),
        wants=wants,
        requested=spec.get("loadBalancerIP") or None,
        ingress=tuple(ingress),
    )


def ingress_patch(address: str | None) -> dict[str, Any]:
    """The status merge patch that gives a Service ``address`` (None: none)."""
    ingress = [{"ip": address, "ipMode": IP_MODE}] if address else []
    return {"status": {"loadBalancer": {"ingress": ingress}}}


@dataclass(frozen=True)
class Plan:
    """What to do for one Service: the address it now has (None: none), the address it
    lost (to take off the interface), and the status patch to send (None: it is right)."""

    key: str
    address: str | None = None
    released: str | None = None
    patch: dict[str, Any] | None = None
    error: str | None = None


def plan(pool: AddressPool, service: ServiceView) -> Plan:
    """Allocate or release ``service``'s address in ``pool``; what to do about it."""
    if not service.wants:
        released = pool.release(service.key)
        ours = [ip for ip in service.ingress_ips if ip in pool]
        patch = ingress_patch(None) if ours else None
        return Plan(service.key, released=released, patch=patch)
    before = pool.assigned.get(service.key)
    try:
        if service.requested is not None:
            address = pool.allocate(service.key, only=service.requested)
        else:
            prefer = [ip for ip in service.ingress_ips if ip in pool]
            address = pool.allocate(service.key, prefer)
    except (ValueError, PoolExhausted) as err:
        released = pool.release(service.key)
        return Plan(service.key, released=released, error=f"{service.key}: {err}")
    released = before if before not in (None, address) else None
    wanted = ingress_patch(address)["status"]["loadBalancer"]["ingress"]
    patch = None if list(service.ingress) == wanted else ingress_patch(address)
    return Plan(service.key, address=address, released=released, patch=patch)


def vanished(pool: AddressPool, present: Iterable[str]) -> list[str]:
    """Keys holding an address whose Service is not among ``present`` (a fresh list)."""
    keep = set(present)
    return sorted(key for key in pool.assigned if key not in keep)


# --- the controller -------------------------------------------------------------------


class _Api:
    """The few requests the controller makes, to one apiserver, as its own user."""

    def __init__(self, server: str, ca_file: Path, cert: Path, key: Path) -> None:
        url = urllib.parse.urlsplit(server)
        if url.scheme != "https" or not url.hostname:
            raise HarnessError(f"not an https apiserver URL: {server}")
        self.host = url.hostname
        self.port = url.port or 443
        self.context = ssl.create_default_context(cafile=str(ca_file))
        self.context.load_cert_chain(str(cert), str(key))
        self._lock = threading.Lock()
        self._streaming: http.client.HTTPSConnection | None = None
        self._closed = False

    def _connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=REQUEST_TIMEOUT
        )

    def request(self, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
        conn = self._connection()
        try:
            headers = {"Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = content_type or "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status >= 300:
                raise HarnessError(f"{method} {path}: {resp.status} {raw[:300]!r}")
            return json.loads(raw) if raw else None
        finally:
            conn.close()

    def watch(self, path: str) -> Iterator[dict[str, Any]]:
        """The events of one watch request, until the apiserver ends it (or :meth:`close`)."""
        conn = self._connection()
        with self._lock:
            if self._closed:
                conn.close()
                return
            self._streaming = conn
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise HarnessError(f"watch {path}: {resp.status} {resp.read()[:300]!r}")
            for line in resp:
                if line.strip():
                    yield json.loads(line)
        finally:
            with self._lock:
                self._streaming = None
            conn.close()

    def close(self) -> None:
        """End a watch in progress (from another thread) and refuse new ones."""
        with self._lock:
            self._closed = True
            conn = self._streaming
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)


class LoadBalancerController:
    """Serves one node cluster's LoadBalancer Services from ``addresses``; a context
    manager (:meth:`start`, :meth:`stop`)."""

    def __init__(self, cluster: NodeCluster, addresses: Sequence[str]) -> None:
        self.cluster = cluster
        self.pool = AddressPool(addresses)
        self.netns = cluster.network.netns
        self.directory = cluster.dir / "load-balancer"
        self.log_path = self.directory / "controller.log"
        #: Addresses on the node's fabric interface, added by this controller.
        self.configured: set[str] = set()
        #: Problems it met (each also in its log): refused requests, failed patches.
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._api: _Api | None = None

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        cert, key = self.cluster.ca.client(USER, ("system:masters",)).write(
            self.directory, "client"
        )
        self._api = _Api(self.cluster.server, self.cluster.ca_file, cert, key)
        self._log(f"serving {self.cluster.id} from {self.pool.addresses[0]} to "
                  f"{self.pool.addresses[-1]} on {FABRIC_INTERFACE} of {self.netns}")  # fmt: skip
        self._thread = threading.Thread(
            target=self._run, name=f"load-balancer-{self.cluster.id}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        """End the thread, then take the addresses it added off the interface."""
        self._stop.set()
        if self._api is not None:
            self._api.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise HarnessError(f"the load balancer of {self.cluster.id} did not stop")
        for address in sorted(self.configured):
            self._unconfigure(address)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def assigned(self) -> dict[str, str]:
        return dict(self.pool.assigned)

    # --- the loop -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version: str | None = self._resync()
                deadline = time.monotonic() + RESYNC_SECONDS
                while version is not None and not self._stop.is_set():
                    if time.monotonic() >= deadline:
                        break
                    version = self._watch(version)  # None: expired, list again
            except Exception as err:  # the loop outlives any one failure
                if self._stop.is_set():
                    break
                self._error(f"{type(err).__name__}: {err}")
                self._stop.wait(RETRY_SECONDS)

    def _resync(self) -> str:
        assert self._api is not None
        listed = self._api.request("GET", "/api/v1/services")
        items = listed.get("items") or []
        for key in vanished(self.pool, (service_key(item) for item in items)):
            self._apply(Plan(key, released=self.pool.release(key)))
        for item in items:
            self._reconcile(item)
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str | None:
        """One watch request from ``version``; the last version seen, None when expired."""
        assert self._api is not None
        query = urllib.parse.urlencode({
            "watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        })  # fmt: skip
        for event in self._api.watch(f"/api/v1/services?{query}"):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                self._log(f"watch ended: {obj.get('message')}")
                return None
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind == "DELETED":
                key = service_key(obj)
                self._apply(Plan(key, released=self.pool.release(key)))
            elif kind in ("ADDED", "MODIFIED"):
                self._reconcile(obj)
        return version

    def _reconcile(self, obj: Mapping[str, Any]) -> None:
        view = service_view(obj)
        ours = view.key in self.pool.assigned or any(ip in self.pool for ip in view.ingress_ips)
        if not view.wants and not ours:
            return
        self._apply(plan(self.pool, view), obj)

    def _apply(self, todo: Plan, obj: Mapping[str, Any] | None = None) -> None:
        if todo.error:
            self._error(todo.error)
        if todo.released and todo.released != todo.address:
            self._log(f"{todo.key}: released {todo.released}")
            self._unconfigure(todo.released)
        if todo.address is not None and todo.address not in self.configured:
            self._configure(todo.address)
            self._log(f"{todo.key}: {todo.address}")
        if todo.patch is not None and obj is not None:
            assert self._api is not None
            namespace, _, name = todo.key.partition("/")
            try:
                self._api.request(
                    "PATCH",
                    f"/api/v1/namespaces/{namespace}/services/{name}/status",
                    todo.patch,
                    "application/merge-patch+json",
                )
            except HarnessError as err:
                if " 404 " not in str(err):  # deleted meanwhile: its DELETED event follows
                    self._error(f"{todo.key}: status patch: {err}")

    # --- the node's interface ---------------------------------------------------------

    def _configure(self, address: str) -> None:
        try:
            netns.ip("addr", "replace", f"{address}/32", "dev", FABRIC_INTERFACE,
                     netns=self.netns)  # fmt: skip
        except HarnessError as err:
            self._error(f"adding {address}: {err}")
            return
        self.configured.add(address)

    def _unconfigure(self, address: str) -> None:
        if address not in self.configured:
            return
        try:
            netns.ip("addr", "del", f"{address}/32", "dev", FABRIC_INTERFACE, netns=self.netns)
        except HarnessError as err:
            if (netns.NETNS_DIR / self.netns).exists():
                self._error(f"removing {address}: {err}")
        self.configured.discard(address)

    # --- its log ----------------------------------------------------------------------

    def _log(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with open(self.log_path, "a") as log:
            log.write(f"{stamp} {message}\n")

    def _error(self, message: str) -> None:
        self.errors.append(message)
        self._log(f"ERROR {message}")
