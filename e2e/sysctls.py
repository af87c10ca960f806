"""Machine-wide sysctls that node-tier kubelets change, put back when the last one is gone.

Every kubelet sets six sysctls for the whole machine at start (:data:`KUBELET_SYSCTLS`:
overcommit and OOM panics, kernel panics, key quotas); ``protectKernelDefaults`` would
make it exit instead.
Node environments may overlap (the demo and a test run, two tests), so the values from
before the first one are kept in one record under ``/run`` with the pids of the
environments using them. :func:`acquire` adds the caller; :func:`release` removes it and,
when no live environment is left, restores the values and deletes the record. An
environment killed with SIGKILL leaves the record behind; the next environment keeps its
values (the machine's own) and prunes the dead pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from e2e import owners
from e2e.processes import pid_alive

RECORD = Path("/run/federation-node-sysctls.json")
PROC_SYS = Path("/proc/sys")
#: What the kubelet sets (pkg/kubelet/cm/container_manager_linux.go, setupKernelTunables).
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)


@dataclass
class _Record:
    values: dict[str, str] = field(default_factory=dict)
    #: Tokens of the environments using the values (``<pid>-<n>``, see e2e.owners).
    owners: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Sysctls:
    """The record at ``record`` for the sysctls under ``proc_sys`` (both replaceable, so
    that the bookkeeping is testable without touching the machine)."""

    record: Path = RECORD
    proc_sys: Path = PROC_SYS

    def read(self, key: str) -> str:
        return (self.proc_sys / key).read_text().strip()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[_Record]:
        # The lock is on the record's directory: a lock file would be left behind.
        lock = os.open(self.record.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = (
                _Record(**json.loads(self.record.read_text()))
                if self.record.exists()
                else _Record()
            )
            yield record
            if record.owners:
                self.record.write_text(json.dumps(asdict(record)))
            else:
                self.record.unlink(missing_ok=True)
        finally:
            os.close(lock)

    def acquire(self, owner: str, keys: Sequence[str] = KUBELET_SYSCTLS) -> None:
        """Record the current values (unless an environment did, alive or not: then its
        values are the machine's own) and the caller, ``owner``."""
        with self._locked() as record:
            if not record.values:
                record.values = {key: self.read(key) for key in keys}
            record.owners = sorted({*(o for o in record.owners if _alive(o)), owner})

    def release(self, owner: str) -> None:
        """Drop ``owner``; restore the recorded values if no live environment is left."""
        with self._locked() as record:
            record.owners = [o for o in record.owners if o != owner and _alive(o)]
            if not record.owners:
                for key, value in record.values.items():
                    if self.read(key) != value:
                        (self.proc_sys / key).write_text(value)


def _alive(owner: str) -> bool:
    pid = owners.owner_of(f"{owners.PREFIX}{owner}-")
    return pid is not None and pid_alive(pid)


_MACHINE = Sysctls()
acquire = _MACHINE.acquire
release = _MACHINE.release
read = _MACHINE.read
