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
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
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
    not_ready: Callable[[], str | None] | None = None,
) -> web.AppRunner:
    """Start ``/healthz``, ``/readyz`` (503 until ``ready`` is set, or while
    ``not_ready`` gives a reason), ``/metrics`` and the ``more`` routes on ``address``;
    the caller cleans up the returned runner."""
    host, port = split_host_port(address, what)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if not_ready is not None:
            why = not_ready()
        else:
            why = None if ready.is_set() else "loading the registry"
        if why is None:
            return web.Response(text="ok")
        return web.Response(status=503, text=f"not ready: {why}")

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


#: A task asked to stop that goes on is asked again this often (seconds), for so long.
CANCEL_AGAIN_EVERY = 1.0
CANCEL_WITHIN = 30.0


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any]],
    *,
    again_every: float = CANCEL_AGAIN_EVERY,
    within: float = CANCEL_WITHIN,
) -> list[Any]:
    """Cancel ``tasks`` and wait until each ended; what each returned or raised, in
    order, as ``asyncio.gather(..., return_exceptions=True)`` gives it (a
    :class:`TimeoutError` for one still running when this gave up).

    A task that goes on is asked again every ``again_every`` seconds: on Python 3.11 one
    request can be lost. ``asyncio.wait_for`` drops a cancellation that arrives just as
    what it waits for completes (CPython gh-86296, fixed in 3.12), and redis-py sends
    every command through ``wait_for`` when a socket timeout is set: a registry watcher
    was seen reading on after its cancel. A process that stops must not hang on it. Tasks
    still running after ``within`` seconds are logged with where they wait, and left.
    A task whose own cleanup (a ``finally``) takes longer than ``again_every`` has it
    cut short, so this is for the leaves of a process's tasks, not for a task that
    stops others in its cleanup. Cancelled itself meanwhile, this still stops its
    tasks, then raises.
    """
    tasks = list(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    interrupted: asyncio.CancelledError | None = None
    ask_at = loop.time()
    while running := [t for t in tasks if not t.done()]:
        now = loop.time()
        if now >= deadline:
            logging.getLogger(__name__).error(
                "%d task(s) did not stop within %g s of being cancelled: %s",
                len(running),
                within,
                ", ".join(t.get_name() for t in running),
            )
            log_tasks()
            break
        if now >= ask_at:
            for task in running:
                task.cancel()
            ask_at = now + again_every
        try:
            await asyncio.wait(running, timeout=max(0.0, min(ask_at, deadline) - now))
        except asyncio.CancelledError as err:
            interrupted = err  # finish stopping them first, at the same pace
    if interrupted is not None:
        raise interrupted
    return [_outcome(t) for t in tasks]


def _outcome(task: asyncio.Task[Any]) -> Any:
    if not task.done():
        return TimeoutError(f"task {task.get_name()} did not stop when cancelled")
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception() or task.result()


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
