"""Supervision of the processes a local environment starts.

Used by :mod:`e2e.cluster` (and later harness pieces: redis, agents, Envoy).
Every process is started in its own session with its output in a log file,
asks the kernel to kill it if the harness dies (``PR_SET_PDEATHSIG``), and is
stopped by its pid only: SIGTERM, a grace period, then SIGKILL. Stopping
verifies each pid is really gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

_PR_SET_PDEATHSIG = 1


class HarnessError(RuntimeError):
    """The local environment could not be brought up or torn down."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def rss_kib(pid: int, field_name: str = "VmRSS") -> int:
    """Resident memory of ``pid`` in KiB (``VmHWM`` for its peak); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


@dataclass
class Process:
    """A started child process and where its output goes."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class ProcessGroup:
    """Starts processes and guarantees they are all gone after :meth:`stop_all`."""

    processes: list[Process] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> Process:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self, proc: Process, grace: float = 10.0) -> None:
        """Stop one process by its pid and wait until it is gone."""
        if proc.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                try:
                    proc.popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:  # e.g. stuck in uninterruptible sleep
                    raise HarnessError(
                        f"{proc.name} (pid {proc.pid}) survived SIGKILL for {grace:.0f}s"
                    ) from None
        else:
            proc.popen.wait()
        if pid_alive(proc.pid):
            raise HarnessError(f"{proc.name} (pid {proc.pid}) is still alive after stop")

    def stop_all(self, grace: float = 10.0) -> None:
        """Stop every process, newest first (clients before the servers they use)."""
        errors = []
        for proc in reversed(self.processes):
            try:
                self.stop(proc, grace)
            except HarnessError as err:
                errors.append(str(err))
        self.processes.clear()
        if errors:
            raise HarnessError("; ".join(errors))

    def peak_rss_kib(self) -> int:
        """Sum over live processes of each one's peak resident memory."""
        return sum(rss_kib(p.pid, "VmHWM") for p in self.processes if p.running())


class Supervised:
    """A context manager over ``start()``/``stop()`` that stops even when start fails."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def check_alive(proc: Process) -> None:
    """Raise, with the end of its log, if ``proc`` has exited (a ``check`` for waits)."""
    if not proc.running():
        raise HarnessError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail(40)}")


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    check: Callable[[], None] | None = None,
) -> None:
    """Poll ``condition`` until true or ``timeout`` seconds pass.

    ``check`` runs on every round and may raise to fail fast (e.g. the process
    being waited for has exited).
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        if condition():
            return
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
