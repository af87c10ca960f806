"""Echo backends for the local environment: stand-ins for a cluster's pods.

Started as processes by the e2e tests, the demo and the benchmarks
(:meth:`e2e.federation.Federation.start_backend`). They say who they are, so a request
through an Envoy shows which cluster served it:

* ``--protocol http`` (default): every HTTP request is answered with JSON naming the
  cluster, the backend's address, the pod (``--pod``), the client's address, the method,
  the path and the request's headers;
  ``GET /ws`` with a WebSocket upgrade echoes every message back, prefixed with the
  cluster's name; ``/slow?ms=N`` answers after N milliseconds (at most 10 s);
  ``/flaky?fail=N&key=K`` answers 503 to the first N requests with key K, then as
  usual (a misbehaving backend, for retries); ``/__healthz`` answers 200, or 503 after
  ``/__health?ok=0`` (until ``/__health?ok=1``), while every other path is served as
  usual: a live but unhealthy backend, for active health checks; and
  ``GET /__count`` says how many other requests the backend has served (mirrors
  are counted too); under ``/__authz`` it is an HTTP external authorization service:
  200 with ``x-authz`` for ``x-user: alice``, 403 for anyone else.
* ``--protocol grpc``: a gRPC server (HTTP/2 in clear text) with one server-streaming
  method, ``/federation.test.Echo/Count``: the request is ``COUNT,INTERVAL_MS`` in
  ASCII, and the answer is COUNT messages ``<cluster> <i>``, INTERVAL_MS apart. No
  protobuf schema is needed: messages are raw bytes. It is also Envoy's gRPC external
  authorization service (``envoy.service.auth.v3.Authorization/Check``), deciding as
  the HTTP one does.

``python -m e2e.backends --listen 127.1.0.10:8080 --name a [--protocol grpc]``: as a
process on the host it listens on loopback only. The node tier's ``echo`` image runs it in
a pod (:mod:`e2e.images`) with ``--pod NAME`` (the pod's name, from the downward API): in
the pod's own network namespace it may listen on every address, and answers name the pod.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Sequence

import grpc
from aiohttp import WSMsgType, web

GRPC_SERVICE = "federation.test.Echo"
GRPC_METHOD = f"/{GRPC_SERVICE}/Count"
#: Bound on the messages one gRPC call may ask for.
MAX_GRPC_COUNT = 1000


#: Bound on the keys ``/flaky`` remembers (each test uses a few).
MAX_FLAKY_KEYS = 1000
#: The path under which the HTTP backend answers as an external authorization service,
#: the gRPC service it implements, and the one user they allow (header ``x-user``).
AUTHZ_PATH = "/__authz"
AUTHZ_GRPC_SERVICE = "envoy.service.auth.v3.Authorization"
AUTHZ_USER = "alice"


def http_app(name: str, address: str, pod: str | None = None) -> web.Application:
    served = 0
    failures: dict[str, int] = {}
    healthy = True

    async def echo(request: web.Request) -> web.StreamResponse:
        nonlocal served, healthy
        if request.path == "/__count":
            return web.json_response({"served": served})
        if request.path == "/__healthz":
            return web.json_response({"healthy": healthy}, status=200 if healthy else 503)
        if request.path == "/__health":
            healthy = request.query.get("ok", "1") == "1"
            return web.json_response({"healthy": healthy})
        if request.path.startswith(AUTHZ_PATH):
            return _authz_answer(name, request.headers.get("x-user", ""))
        served += 1
        if request.path == "/ws" and request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await ws.send_str(f"{name}: {message.data}")
            return ws
        if request.path == "/slow":
            delay = min(int(request.query.get("ms", "0") or 0), 10_000)
            await asyncio.sleep(delay / 1000)  # the slowness being tested, not synchronisation
        if request.path == "/flaky":
            key = request.query.get("key", "")
            if key in failures or len(failures) < MAX_FLAKY_KEYS:
                failed = failures.get(key, 0)
                if failed < int(request.query.get("fail", "0") or 0):
                    failures[key] = failed + 1
                    return web.json_response({"cluster": name, "failed": failed + 1}, status=503)
        body = {
            "cluster": name,
            "backend": address,
            "pod": pod,
            "client": request.remote,
            "method": request.method,
            "path": request.path_qs,
            "headers": {k.lower(): v for k, v in request.headers.items()},
        }
        return web.json_response(body, headers={"x-backend-cluster": name})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def _authz_answer(name: str, user: str) -> web.Response:
    """An HTTP external authorization service's answer: allow ``alice`` (naming this
    backend in ``x-authz``), deny everyone else with 403."""
    if user == AUTHZ_USER:
        return web.Response(status=200, headers={"x-authz": f"allowed by {name}"})
    return web.Response(status=403, text=f"denied by {name}\n")


async def serve_http(
    name: str, host: str, port: int, stop: asyncio.Event, pod: str | None = None
) -> None:
    runner = web.AppRunner(http_app(name, f"{host}:{port}", pod), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _count_handler(name: str) -> grpc.RpcMethodHandler:
    """``name`` is what each message starts with: the cluster, and the pod if known."""

    async def count(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        try:
            total, interval_ms = (int(part) for part in request.decode().split(","))
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request is COUNT,INTERVAL_MS")
            return
        if not 0 <= total <= MAX_GRPC_COUNT or not 0 <= interval_ms <= 10_000:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "count or interval too large")
            return
        for i in range(total):
            if i:
                await asyncio.sleep(interval_ms / 1000)
            yield f"{name} {i}".encode()

    return grpc.unary_stream_rpc_method_handler(count)


def _check(name: str) -> grpc.RpcMethodHandler:
    """Envoy's external authorization service over gRPC, deciding as
    :func:`_authz_answer` does. Its protobuf modules are read at the first call: the
    echo image has only what echoing needs."""

    async def check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        from envoy.service.auth.v3 import external_auth_pb2 as auth
        from envoy.type.v3 import http_status_pb2
        from google.rpc import code_pb2

        asked = auth.CheckRequest.FromString(request)
        headers = asked.attributes.request.http.headers
        reply = auth.CheckResponse()
        if headers.get("x-user") == AUTHZ_USER:
            reply.status.code = code_pb2.OK
            added = reply.ok_response.headers.add()
            added.header.key, added.header.value = "x-authz", f"allowed by {name} over gRPC"
        else:
            reply.status.code = code_pb2.PERMISSION_DENIED
            reply.denied_response.status.code = http_status_pb2.Forbidden
            reply.denied_response.body = f"denied by {name} over gRPC\n"
        out: bytes = reply.SerializeToString()
        return out

    return grpc.unary_unary_rpc_method_handler(check)


async def serve_grpc(
    name: str, host: str, port: int, stop: asyncio.Event, pod: str | None = None
) -> None:
    server = grpc.aio.server()
    handlers = {"Count": _count_handler(f"{name}/{pod}" if pod else name)}
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(GRPC_SERVICE, handlers),
            grpc.method_handlers_generic_handler(AUTHZ_GRPC_SERVICE, {"Check": _check(name)}),
        )
    )
    if not server.add_insecure_port(f"{host}:{port}"):
        raise SystemExit(f"cannot listen on {host}:{port}")
    await server.start()
    try:
        await stop.wait()
    finally:
        await server.stop(grace=1.0)


async def run(args: argparse.Namespace, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serve = serve_grpc if args.protocol == "grpc" else serve_http
    who = f"cluster {args.name}" + (f", pod {args.pod}" if args.pod else "")
    print(f"echo backend ({args.protocol}) for {who} on {host}:{port}", flush=True)
    await serve(args.name, host, port, stop, args.pod)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.backends")
    parser.add_argument("--listen", required=True, help="HOST:PORT on loopback")
    parser.add_argument("--name", required=True, help="the cluster this backend belongs to")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument(
        "--pod", default=None, help="running in this pod: listen on any address, say the pod"
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host.startswith("127.") and not args.pod:
        print("backends listen on loopback only (outside a pod, see --pod)", file=sys.stderr)
        return 2
    asyncio.run(run(args, host, int(port)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
