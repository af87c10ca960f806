"""``federation-hub``: serves the whole clusterset to every Envoy over xDS.

    federation-hub --registry redis://hub:PASSWORD@host:6379/0 \\
        --xds-address 0.0.0.0:18000 --http-address 127.0.0.1:18080 \\
        [--listener-address [CLUSTER=]HOST:PORT ...] [--ip-family [CLUSTER=]IPv4|IPv6 ...]
        [--address-map CLUSTER=FROM_CIDR=TO_CIDR ...]

It follows the registry with a :class:`RegistryWatcher` (snapshot + tail), keeps
one :class:`ImportView` per exported service, and lets
:class:`SnapshotBuilder` translate changes into the xDS snapshot cache served
by the ADS server. It keeps no state that cannot be rebuilt from the registry.

**Readiness.** Until the whole registry is loaded and the first snapshots are
built, the xDS server answers nothing and ``/readyz`` says 503: an Envoy that
connects early waits for a complete first response instead of getting empty
config (which would make it drop live traffic). A registry without any member
cluster counts as not loaded: after a Redis flush or a failover to an empty
replica, a hub that restarts waits for the agents to republish instead of
telling every Envoy that nothing exists.

HTTP (``--http-address``, loopback by default): ``/healthz``, ``/readyz``,
``/metrics`` and ``/debug/proxy-status`` (what ``fedctl proxy-status`` reads).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import logging
import signal
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from aiohttp import web

from federation.cli.snapshots import DEFAULT_LISTENER, SnapshotBuilder, SnapshotOptions
from federation.errors import InvalidInputError
from federation.metrics import Sample, exposition
from federation.process import configure_logging, run_until_stopped, serve_http, split_host_port
from federation.registry.redis_store import RedisReader
from federation.registry.store import RegistryReader
from federation.registry.watcher import RegistryWatcher, ServiceName, registry_samples
from federation.translate.inputs import (
    DEFAULT_IP_FAMILY,
    ImportView,
    TranslateOptions,
    address_maps_from_flags,
    ip_families_from_flags,
)
from federation.translate.resources import build_listener
from federation.xds.server import serve
from federation.xds.snapshot import SnapshotCache
from federation.xds.status import SyncRegistry, SyncState, XdsMetrics

log = logging.getLogger("federation.hub")


def freeze_loaded_heap() -> None:
    """Move every object alive now out of the cyclic garbage collector's reach.

    Called once the whole registry is loaded and translated: the model and the snapshots
    are long-lived and acyclic, and with them in the collected generations every
    collection walks hundreds of thousands of objects, which costs an endpoint change
    about a third of its CPU at 250k endpoints (``./e2e/dev bench translator``).
    Reference counting still frees frozen objects that are dropped later.
    """
    gc.collect()
    gc.freeze()


class Hub:
    """Registry in, xDS snapshots out.

    :meth:`run` follows the registry until cancelled. Tests drive it by hand instead:
    ``await hub.watcher.load()``, :meth:`publish_loaded`, then ``hub.watcher.step()``.
    """

    def __init__(
        self,
        reader: RegistryReader,
        cache: SnapshotCache,
        options: SnapshotOptions,
        *,
        withdraw_stale_after: float | None = None,
        block_ms: int = 500,
        check_interval: float = 0.5,
        freeze_heap: bool = True,
    ) -> None:
        self.cache = cache
        self.options = options
        self.builder = SnapshotBuilder(cache, options)
        self.watcher = RegistryWatcher(
            reader,
            self._on_change,
            withdraw_stale_after=withdraw_stale_after,
            block_ms=block_ms,
            check_interval=check_interval,
        )
        self.ready = asyncio.Event()
        self._freeze_heap = freeze_heap

    def _groups(self) -> set[str]:
        return set(self.watcher.views) | set(self.options.listener_addresses)

    def _view(self, key: ServiceName) -> ImportView | None:
        exports = self.watcher.exports(*key)
        if not exports:
            return None
        stale = self.watcher.stale_clusters() & {e.cluster for e in exports}
        return ImportView.of(exports, stale)

    async def _on_change(self, changed: set[ServiceName]) -> None:
        if not self.ready.is_set():
            if self.watcher.loaded.is_set() and self.watcher.views:
                self.publish_loaded()  # the first member joined an empty registry
            return  # otherwise the initial build covers everything
        # ``changed`` may be empty: a member joined without exports, a new node group.
        self.builder.update({key: self._view(key) for key in changed}, self._groups())

    def publish_loaded(self) -> None:
        """Build every node group's snapshot from the loaded registry, then start serving."""
        keys = self.watcher.service_names()
        self.builder.update({key: self._view(key) for key in keys}, self._groups())
        if self._freeze_heap:
            freeze_loaded_heap()
        self.cache.mark_ready()
        self.ready.set()
        log.info("hub ready", extra={"services": len(keys), "groups": len(self._groups())})

    async def run(self) -> None:
        watcher = asyncio.create_task(self.watcher.run(), name="registry-watcher")
        try:
            await self.watcher.loaded.wait()
            if self.watcher.views:
                self.publish_loaded()
            else:
                log.warning(
                    "the registry has no member clusters: serving nothing until one joins "
                    "(after a Redis flush or failover, agents republish within a third of "
                    "their lease TTL)"
                )
            await watcher
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


def _samples(hub: Hub, sync: SyncRegistry, xds: XdsMetrics) -> list[Sample]:
    proxies = sync.list()
    states = Counter(t.state for p in proxies for t in p.types)
    return [
        Sample(
            "federation_hub_ready",
            "gauge",
            "1 once the whole registry is loaded",
            hub.ready.is_set(),
        ),
        Sample("federation_hub_connected_proxies", "gauge", "connected ADS streams", len(proxies)),
        *(
            Sample(
                "federation_hub_proxy_types",
                "gauge",
                "resource types of connected Envoys, by sync state",
                states[state],
                {"state": state.value},
            )
            for state in SyncState
        ),
        Sample(
            "federation_hub_full_pushes_total",
            "counter",
            "changes that rebuilt every node group's snapshot",
            hub.builder.full_pushes,
        ),
        Sample(
            "federation_hub_endpoint_pushes_total",
            "counter",
            "changes pushed as ClusterLoadAssignments only",
            hub.builder.endpoint_pushes,
        ),
        *(
            Sample(f"federation_xds_{name}", kind, text, getattr(xds, attr))
            for name, kind, text, attr in _XDS_METRICS
        ),
        *registry_samples(hub.watcher),
    ]


_XDS_METRICS: tuple[tuple[str, Literal["counter", "gauge"], str, str], ...] = (
    ("streams_opened_total", "counter", "ADS streams opened", "streams_opened"),
    ("streams_active", "gauge", "ADS streams open now", "streams_active"),
    (
        "streams_rejected_total",
        "counter",
        "ADS streams refused (no or unauthorized node)",
        "streams_rejected",
    ),
    ("responses_total", "counter", "discovery responses sent", "responses_sent"),
    ("sent_bytes_total", "counter", "bytes of discovery responses sent", "bytes_sent"),
    ("acks_total", "counter", "responses Envoys ACKed", "acks"),
    ("nacks_total", "counter", "responses Envoys NACKed", "nacks"),
    ("stale_requests_total", "counter", "requests ignored for a stale nonce", "stale_requests"),
    (
        "nack_reoffers_total",
        "counter",
        "NACKed responses offered again after their backoff",
        "nack_reoffers",
    ),
)


async def serve_hub_http(
    hub: Hub, sync: SyncRegistry, xds: XdsMetrics, address: str
) -> web.AppRunner:
    async def proxy_status(_: web.Request) -> web.Response:
        body = json.dumps([p.to_json() for p in sync.list()], indent=2)
        return web.Response(text=body, content_type="application/json")

    return await serve_http(
        address,
        "--http-address",
        hub.ready,
        lambda: exposition(_samples(hub, sync, xds)),
        {"/debug/proxy-status": proxy_status},
    )


def _listener_flags(values: Sequence[str]) -> tuple[dict[str, str], str | None]:
    """``--listener-address [CLUSTER=]IP:PORT`` values, checked now with the translator's
    own rule, so that a bad flag stops the hub at start instead of at its first build."""
    per_cluster: dict[str, str] = {}
    default = None
    for value in values:
        cluster, sep, address = value.partition("=")
        if not sep:
            default = address = value
        else:
            per_cluster[cluster] = address
        what = "--listener-address" + (f" for {cluster}" if sep else "")
        host, port = split_host_port(address, what)
        try:
            build_listener(host, port)
        except InvalidInputError as err:
            raise InvalidInputError(f"{what}: {err}") from err
        if ipaddress.ip_address(host).is_unspecified:
            log.warning(
                "%s %s listens on every address of the Envoy's host: whoever reaches it "
                "reaches every exported service of the clusterset; inside a pod that is "
                "the pod's own addresses, elsewhere guard it with a firewall",
                what,
                address,
            )
    return per_cluster, default


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="federation-hub",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--registry", required=True, help="Redis URL of a read-only user")
    parser.add_argument("--xds-address", default="127.0.0.1:18000", help="gRPC ADS HOST:PORT")
    parser.add_argument(
        "--http-address",
        default="127.0.0.1:18080",
        help="HOST:PORT for health, metrics and /debug/proxy-status",
    )
    parser.add_argument(
        "--listener-address",
        action="append",
        default=[],
        metavar="[CLUSTER=]HOST:PORT",
        help="where each cluster's Envoys listen for clusterset traffic (repeatable; "
        f"without CLUSTER= it is the default, {DEFAULT_LISTENER}). Anyone who reaches "
        "this address reaches every exported service: in a pod, the pod's own address "
        "(or 0.0.0.0 there, which is the pod's addresses only) behind a NetworkPolicy",
    )
    parser.add_argument(
        "--address-map",
        action="append",
        default=[],
        metavar="CLUSTER=FROM_CIDR=TO_CIDR",
        help="translate a cluster's endpoint addresses (repeatable), for pod "
        "networks that Envoys reach through another range",
    )
    parser.add_argument(
        "--ip-family",
        action="append",
        default=[],
        metavar="[CLUSTER=]IPv4|IPv6",
        help="the address family of the endpoints a cluster's Envoys are given (repeatable; "
        f"without CLUSTER= it is the default, {DEFAULT_IP_FAMILY}). One family per cluster: "
        "a dual-stack Service's pods are listed once, not once per family",
    )
    parser.add_argument(
        "--no-local-first",
        action="store_true",
        help="spread traffic over all clusters instead of preferring the local one",
    )
    parser.add_argument(
        "--withdraw-stale-after",
        type=float,
        default=None,
        help="drop a stale cluster's endpoints after this many seconds "
        "(default: never; fail-static)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    listeners, default_listener = _listener_flags(args.listener_address)
    families, default_family = ip_families_from_flags(args.ip_family)
    options = SnapshotOptions(
        translate=TranslateOptions(
            local_first=not args.no_local_first,
            address_maps=address_maps_from_flags(args.address_map),
            ip_families=families,
            default_ip_family=default_family,
        ),
        listener_addresses=listeners,
        default_listener=default_listener or DEFAULT_LISTENER,
    )
    cache = SnapshotCache()
    sync = SyncRegistry(cache.snapshot_versions)
    reader = RedisReader.from_url(args.registry)
    hub = Hub(reader, cache, options, withdraw_stale_after=args.withdraw_stale_after)
    xds = XdsMetrics()
    server = await serve(cache, sync, args.xds_address, metrics=xds)
    runner = await serve_hub_http(hub, sync, xds, args.http_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hub_task = asyncio.create_task(hub.run(), name="hub")
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait([hub_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    hub_task.cancel()
    results = await asyncio.gather(hub_task, return_exceptions=True)
    await server.stop(grace=1.0)
    await runner.cleanup()
    await reader.close()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    return run_until_stopped("federation-hub", run(args))


if __name__ == "__main__":
    raise SystemExit(main())
