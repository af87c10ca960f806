"""A small Envoy Gateway extension server, for the tests and the benchmark.

It speaks the generated protocol (:mod:`federation.extension_api`) as any extension server
written for Envoy Gateway does, and:

* ``PostRouteModify``: adds the response header ``x-extension: <cluster>`` to the route,
  the cluster being what the hub says in the call's metadata (``x-federation-cluster``),
  and records the NodeGroup context resource it got;
* ``PostVirtualHostModify``, ``PostHTTPListenerModify``: leave them as they are (an empty
  response);
* ``PostTranslateModify``: sends back what it got, plus a cluster ``extension/added``;
* waits ``delay`` seconds in each call first (the benchmark's 1 ms).

Every call is counted by method (:attr:`HeaderExtension.calls`). Run as a process
(``python -m e2e.extension_server --port N``), it prints ``listening on HOST:PORT`` once it
serves, and the counts as JSON on stdout when asked with SIGUSR1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections import Counter
from typing import Any

import grpc

from federation.extension_api import stubs

HEADER = "x-extension"
ADDED_CLUSTER = "extension/added"
_STUBS = stubs()


class HeaderExtension(_STUBS.grpc.EnvoyGatewayExtensionServicer):  # type: ignore[misc,name-defined]
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: Counter[str] = Counter()
        #: The metadata and NodeGroup context resources of the calls, last first.
        self.clusters: list[str] = []
        self.contexts: list[dict[str, Any]] = []

    async def _begin(self, method: str, context: grpc.aio.ServicerContext) -> str:
        self.calls[method] += 1
        if self.delay:
            await asyncio.sleep(self.delay)  # the extension's own work, simulated
        metadata = dict(context.invocation_metadata() or ())
        cluster = str(metadata.get("x-federation-cluster", ""))
        self.clusters.insert(0, cluster)
        return cluster

    async def PostRouteModify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        cluster = await self._begin("PostRouteModify", context)
        for resource in request.post_route_context.extension_resources:
            self.contexts.insert(0, json.loads(resource.unstructured_bytes))
        route = request.route
        option = route.response_headers_to_add.add()
        option.header.key, option.header.value = HEADER, cluster
        return _STUBS.messages.PostRouteModifyResponse(route=route)

    async def PostVirtualHostModify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._begin("PostVirtualHostModify", context)
        return _STUBS.messages.PostVirtualHostModifyResponse()

    async def PostHTTPListenerModify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._begin("PostHTTPListenerModify", context)
        return _STUBS.messages.PostHTTPListenerModifyResponse()

    async def PostTranslateModify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self._begin("PostTranslateModify", context)
        reply = _STUBS.messages.PostTranslateModifyResponse(
            clusters=request.clusters,
            secrets=request.secrets,
            listeners=request.listeners,
            routes=request.routes,
        )
        added = reply.clusters.add()
        added.name = ADDED_CLUSTER
        added.connect_timeout.FromMilliseconds(250)
        return reply


async def serve(host: str, port: int, servicer: HeaderExtension) -> tuple[grpc.aio.Server, int]:
    """Start serving ``servicer`` on ``host:port`` (0: any free port); the server and port."""
    server = grpc.aio.server()
    _STUBS.grpc.add_EnvoyGatewayExtensionServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    return server, bound


async def _main(args: argparse.Namespace) -> None:
    servicer = HeaderExtension(delay=args.delay_ms / 1000)
    server, port = await serve(args.host, args.port, servicer)
    print(f"listening on {args.host}:{port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: print(json.dumps(dict(servicer.calls)), flush=True)
    )
    await stop.wait()
    await server.stop(grace=0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    asyncio.run(_main(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
