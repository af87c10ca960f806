"""What every long-running Federation process does around its main coroutine.

Its HTTP endpoints (``/healthz``, ``/readyz``, ``/metrics`` and any others); structured
logs (one JSON object per line, with the ``extra`` fields of each record); and the exit
convention: 0 after a clean stop or Ctrl-C, 1 with a one-line message on stderr for a
:class:`~federation.errors.FederationError` (bad flags, unreachable registry, a cluster
without an id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from aiohttp import web
from pythonjsonlogger.json import JsonFormatter

from federation.errors import FederationError, InvalidInputError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def split_host_port(value: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port); ``what`` names it in the error."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"{what} must be HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


async def serve_http(
    address: str,
    what: str,
    ready: asyncio.Event,
    metrics: Callable[[], str],
    more: Mapping[str, Handler] | None = None,
) -> web.AppRunner:
    """Start ``/healthz``, ``/readyz`` (503 until ``ready`` is set), ``/metrics`` and the
    ``more`` routes on ``address``; the caller cleans up the returned runner."""
    host, port = split_host_port(address, what)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if ready.is_set():
            return web.Response(text="ok")
        return web.Response(status=503, text="not ready: loading the registry")

    async def metrics_text(_: web.Request) -> web.Response:
        return web.Response(text=metrics(), content_type="text/plain")

    app = web.Application()
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_text),
            *(web.get(path, handler) for path, handler in (more or {}).items()),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def configure_logging(level: str) -> None:
    """JSON lines on stderr at ``level`` (a logging level name, any case)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def log_tasks() -> None:
    """Log where every asyncio task of this process is waiting (``kill -USR1 <pid>``):
    what a process that seems stuck is doing, without stopping it."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    for number, task in enumerate(tasks, start=1):
        logging.getLogger("federation.process").warning(
            "task %s (%d of %d), awaiting:\n%s",
            task.get_name(),
            number,
            len(tasks),
            "".join(traceback.format_list(_awaiting(task.get_coro()))),
        )


def _awaiting(coro: Any) -> list[traceback.FrameSummary]:
    """Every frame of a suspended coroutine, outermost first, down the chain of what each
    awaits (``Task.print_stack`` shows the outermost alone)."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            frames.append(traceback.FrameSummary(code.co_filename, frame.f_lineno, code.co_name))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


async def _with_task_dump(main: Coroutine[Any, Any, None]) -> None:
    usr1 = getattr(signal, "SIGUSR1", None)  # not on every platform
    if usr1 is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(usr1, log_tasks)
    await main


def run_until_stopped(prog: str, main: Coroutine[Any, Any, None]) -> int:
    """Run ``main`` to its end and return the process exit code. SIGUSR1 logs every
    task's stack (:func:`log_tasks`)."""
    try:
        asyncio.run(_with_task_dump(main))
    except FederationError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
