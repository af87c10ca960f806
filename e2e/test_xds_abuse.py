"""Clients that misbehave on the hub's xDS port do not lower what a real Envoy gets.

Each test runs one abusive client against the shared environment's hub (``data_plane``
in ``e2e/fixtures.py``, mTLS, default limits) while a change is made in cluster ``a``:
c's real Envoy must still receive it (polled with the usual deadline; the time it took
is printed) and the hub's resident memory must stay within ``MEMORY_BOUND`` of where it
was (the figures are printed). The abusive clients hold cluster ``b``'s certificate
where they need one to get past TLS: the attacker modelled is a member cluster's
credentials in the wrong hands. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from e2e import scenario as sc
from e2e.federation import Federation, metric
from e2e.processes import wait_until
from e2e.traffic import DEADLINE, export_with_backends, host, served_by
from federation.xds.snapshot import CLUSTER, ENDPOINT

pytestmark = pytest.mark.integration

#: How much the hub's resident memory may grow while a client abuses it.
MEMORY_BOUND = 150 * 1024 * 1024


@pytest.fixture
def fed(data_plane: Federation) -> Federation:
    return data_plane


@pytest.fixture
def ns(fed: Federation) -> str:
    return sc.namespace_everywhere(fed.env.clusters.values(), "abuse")


def hub_rss(fed: Federation) -> int:
    assert fed.hub is not None
    with open(f"/proc/{fed.hub.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for the hub")


def streams_of(fed: Federation, group: str) -> int:
    """The hub's open streams of ``group`` (``/debug/proxy-status``)."""
    entries = json.loads(fed.hub_http("/debug/proxy-status"))
    return sum(1 for e in entries if e["group"] == group and "refused" not in e)


class Abuser:
    """Runs ``attack(stop)`` on an event loop of its own, in a thread, until stopped."""

    def __init__(self, attack: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        self._attack = attack
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._attack(self._stop))
        except BaseException as exc:
            self.error = exc
        finally:
            self._loop.close()

    def __enter__(self) -> Abuser:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the abusive client did not stop"


def credentials(fed: Federation, cluster: str | None = "b") -> grpc.ChannelCredentials:
    ca = (fed.ensure_pki() / "ca.crt").read_bytes()
    if cluster is None:
        return grpc.ssl_channel_credentials(ca)
    files = fed.xds_tls_dir(cluster)
    return grpc.ssl_channel_credentials(
        ca, (files / "tls.key").read_bytes(), (files / "tls.crt").read_bytes()
    )


def node(cluster: str = "b") -> base_pb2.Node:
    return base_pb2.Node(id="abuser", cluster=cluster)


@contextmanager
def alongside(fed: Federation, ns: str, abuser: Abuser, what: str) -> Iterator[None]:
    """Abuse the hub while a new export in ``a`` must reach c's Envoy; check memory."""
    fed.start_backend("a", 50)
    before = hub_rss(fed)
    peak = before
    with abuser:
        yield  # the test's own checks of the abuse, while it goes on
        started = time.monotonic()
        export_with_backends(fed, "a", ns, [50])

        def served() -> bool:
            nonlocal peak
            peak = max(peak, hub_rss(fed))
            return served_by(fed.envoys["c"], host(ns)) == "a"

        wait_until(served, timeout=DEADLINE, what=f"c's Envoy to get a's new export during {what}")
        took = time.monotonic() - started
        peak = max(peak, hub_rss(fed))
    assert abuser.error is None, abuser.error
    mib = 1024 * 1024
    print(
        f"{what}: change reached c's Envoy in {took * 1000:.0f} ms; hub RSS "
        f"{before / mib:.0f} MiB before, {peak / mib:.0f} MiB at most "
        f"(bound: +{MEMORY_BOUND / mib:.0f} MiB)"
    )
    assert peak - before < MEMORY_BOUND


def test_garbage_bytes(fed: Federation, ns: str) -> None:
    """Raw garbage to the port, and garbage inside a TLS session with b's certificate."""
    sent = {"plain": 0, "tls": 0}
    files = fed.xds_tls_dir("b")
    context = ssl.create_default_context(cafile=str(files / "ca.crt"))
    context.load_cert_chain(files / "tls.crt", files / "tls.key")
    context.set_alpn_protocols(["h2"])

    def one_connection(tls: bool) -> None:
        with socket.create_connection(("127.0.0.1", fed.hub_xds_port), timeout=5) as raw:
            conn = context.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
            try:
                for _ in range(16):
                    conn.sendall(os.urandom(64 * 1024))
                    sent["tls" if tls else "plain"] += 1
            except OSError:
                pass  # the hub closed the connection: what it should do

    async def attack(stop: asyncio.Event) -> None:
        deadline = time.monotonic() + 60
        for i in range(2000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            await asyncio.to_thread(one_connection, i % 2 == 1)

    with alongside(fed, ns, Abuser(attack), "garbage bytes"):
        wait_until(lambda: min(sent.values()) > 0, timeout=DEADLINE, what="garbage to flow")
    assert fed.hub is not None and fed.hub.running()


def test_a_million_names(fed: Federation, ns: str) -> None:
    """One request naming a million resources, and delta subscriptions that keep adding."""
    outcomes: list[grpc.StatusCode] = []

    async def attack(stop: asyncio.Event) -> None:
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{fed.hub_xds_port}", credentials(fed)
        ) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            deadline = time.monotonic() + 60
            for round_ in range(50):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                if round_ % 2 == 0:
                    call = stub.StreamAggregatedResources()
                    await call.write(
                        discovery_pb2.DiscoveryRequest(
                            type_url=ENDPOINT,
                            node=node(),
                            resource_names=[f"n{i}" for i in range(1_000_000)],
                        )
                    )
                else:
                    call = stub.DeltaAggregatedResources()
                    for chunk in range(40):
                        request = discovery_pb2.DeltaDiscoveryRequest(
                            type_url=ENDPOINT,
                            resource_names_subscribe=[f"c{chunk}-{i}" for i in range(25_000)],
                        )
                        if chunk == 0:
                            request.node.CopyFrom(node())
                        try:
                            await call.write(request)
                        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                            break  # refused already
                try:
                    async with asyncio.timeout(DEADLINE):
                        while await call.read() is not grpc.aio.EOF:
                            pass
                except grpc.aio.AioRpcError:
                    # The call's own status: a write racing the refusal fails differently.
                    outcomes.append(await call.code())
                except TimeoutError:
                    outcomes.append(grpc.StatusCode.DEADLINE_EXCEEDED)
                call.cancel()

    refused = 'federation_xds_streams_refused_total{reason="too-many-names"}'
    before = metric(fed.hub_http("/metrics"), refused, default=0.0)
    with alongside(fed, ns, Abuser(attack), "a million names"):
        wait_until(lambda: len(outcomes) >= 2, timeout=DEADLINE, what="both kinds of attempts")
    # Refused by the hub; a client whose write races the refusal sees its own INTERNAL.
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in outcomes, outcomes
    assert set(outcomes) <= {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL}
    assert metric(fed.hub_http("/metrics"), refused) > before


def test_streams_that_never_send_a_request(fed: Federation, ns: str) -> None:
    """Hundreds of streams opened and left silent: each is closed at its deadline."""
    outcomes: list[grpc.StatusCode] = []

    async def attack(stop: asyncio.Event) -> None:
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{fed.hub_xds_port}", credentials(fed)
        ) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            calls = [stub.StreamAggregatedResources() for _ in range(100)]

            async def wait(call: Any) -> None:
                try:
                    await call.read()
                except grpc.aio.AioRpcError as err:
                    outcomes.append(err.code())

            reads = [asyncio.create_task(wait(call)) for call in calls]
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([stopped, *reads], timeout=60, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.wait(reads, timeout=30)
            for call in calls:
                call.cancel()
            stopped.cancel()

    with alongside(fed, ns, Abuser(attack), "silent streams"):
        pass
    wait_until(lambda: len(outcomes) == 100, timeout=30, what="every silent stream to be closed")
    assert set(outcomes) == {grpc.StatusCode.DEADLINE_EXCEEDED}


def test_thousands_of_streams(fed: Federation, ns: str) -> None:
    """3,000 streams at once with b's certificate, over 30 connections: the hub admits
    its bound per peer (1,024) and refuses the rest with RESOURCE_EXHAUSTED, or gRPC sheds
    them before they reach it (the client sees INTERNAL or CANCELLED)."""
    admitted: list[int] = []
    refused: list[grpc.StatusCode] = []

    async def attack(stop: asyncio.Event) -> None:
        channels = [
            grpc.aio.secure_channel(
                f"127.0.0.1:{fed.hub_xds_port}",
                credentials(fed),
                options=[("grpc.use_local_subchannel_pool", 1)],
            )
            for _ in range(30)
        ]
        calls = []

        async def open_one(channel: grpc.aio.Channel) -> None:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            calls.append(call)
            try:
                # Refused at once (the peer's bound), the write itself may fail.
                await call.write(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=node()))
                async with asyncio.timeout(30):
                    await call.read()
                admitted.append(1)
            except grpc.aio.AioRpcError:
                refused.append(await call.code())
            except TimeoutError:
                refused.append(grpc.StatusCode.DEADLINE_EXCEEDED)

        try:
            await asyncio.gather(*(open_one(channels[i % 30]) for i in range(3000)))
            await stop.wait()
        finally:
            for call in calls:
                call.cancel()
            for channel in channels:
                await channel.close()

    too_many = 'federation_xds_streams_refused_total{reason="too-many-streams"}'
    before = metric(fed.hub_http("/metrics"), too_many, default=0.0)
    # b's own Envoy holds streams with the same certificate: they count against the bound.
    bound = 1024 - streams_of(fed, "b")
    with alongside(fed, ns, Abuser(attack), "3,000 streams"):
        wait_until(
            lambda: len(admitted) + len(refused) == 3000,
            timeout=90,
            what="every abusive stream to be answered or refused",
        )
        assert len(admitted) == bound, (len(admitted), set(refused))
        assert set(refused) <= {
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.CANCELLED,
        }, set(refused)
    refused_by_hub = metric(fed.hub_http("/metrics"), too_many) - before
    print(f"3,000 streams: {bound} admitted, {refused_by_hub:.0f} refused by the hub's bound")
    assert refused_by_hub > 0
