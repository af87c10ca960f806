"""A cgroup (v1) subtree per node: where its kubelet puts pods, and how teardown finds them.

Used by :mod:`e2e.nodes`. Each node of a node-tier environment owns
``/sys/fs/cgroup/<controller>/fed-<owner pid>-<cluster>`` in every v1 controller. The
kubelet's ``cgroupRoot`` points there, and the node's containerd is started inside it, so
every container shim and container process the node ever starts lands in the subtree:
processes that outlive their parent (shims are daemons) are found there and killed at
teardown, and the subtree is then removed bottom-up. Subtrees whose owner (see
:mod:`e2e.owners`) is gone are swept by :func:`sweep_stale`.

Only cgroup v1 hierarchies are supported (this is what the node tier was built and
tested on); a cgroup v2 host gets a clear error.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from e2e import owners
from e2e.processes import HarnessError, pid_alive

CGROUP_ROOT = Path("/sys/fs/cgroup")


def controllers() -> list[str]:
    """Every hierarchy mounted under /sys/fs/cgroup: the v1 controllers, and the named
    ``systemd`` and ``unified`` ones, where the kubelet and runc create cgroups too."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        raise HarnessError(
            f"{CGROUP_ROOT} is a cgroup v2 hierarchy; the node tier needs cgroup v1 "
            "(the kubelet runs with failCgroupV1: false and the cgroupfs driver)"
        )
    found = []
    for entry in sorted(CGROUP_ROOT.iterdir()):
        if entry.is_symlink() or not os.path.ismount(entry):
            continue
        if (entry / "cgroup.procs").exists():
            found.append(entry.name)
    if not found:
        raise HarnessError(f"no cgroup v1 hierarchies mounted under {CGROUP_ROOT}")
    return found


@dataclass(frozen=True)
class NodeCgroup:
    """One node's subtree, by its name under each controller's root."""

    name: str

    def paths(self, child: str = "") -> list[Path]:
        return [CGROUP_ROOT / c / self.name / child for c in controllers()]

    def create(self, *children: str) -> None:
        """The subtree and its ``children`` in every hierarchy; the subtree must be new."""
        for controller in controllers():
            root = CGROUP_ROOT / controller
            for rel in ("", *children):
                path = root / self.name / rel
                try:
                    path.mkdir(exist_ok=bool(rel))
                except FileExistsError:
                    raise HarnessError(f"cgroup {path} exists already: whose is it?") from None
                if controller == "cpuset":
                    # A new cpuset has no CPUs or memory nodes until given its parent's.
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        parent_value = (path.parent / knob).read_text().strip()
                        (path / knob).write_text(parent_value)

    def join_argv_prefix(self, child: str) -> list[str]:
        """A command prefix that moves itself into ``child`` and then execs the rest."""
        procs = " ".join(str(p / "cgroup.procs") for p in self.paths(child))
        script = (
            f'for f in {procs}; do echo $$ > "$f" || {{ echo "cannot join $f" >&2; exit 125; }}; '
            'done; exec "$@"'
        )
        return ["sh", "-c", script, "sh"]

    def pids(self, child: str = "") -> set[int]:
        """Every process in the subtree (or in its ``child`` subtree)."""
        found: set[int] = set()
        for top in self.paths(child):
            if not top.is_dir():
                continue
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    found.update(int(x) for x in procs.read_text().split())
        return found

    def memory_peak_bytes(self) -> int:
        """The subtree's peak memory use (the memory controller's max_usage_in_bytes)."""
        path = CGROUP_ROOT / "memory" / self.name / "memory.max_usage_in_bytes"
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            return 0

    def kill_all(self, child: str = "", timeout: float = 15.0) -> int:
        """SIGKILL every process in the subtree, or in its ``child`` subtree (frozen
        first, so that none can fork away)."""
        freezer = CGROUP_ROOT / "freezer" / self.name / child
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while pids := self.pids(child):
            if time.monotonic() > deadline:
                raise HarnessError(f"processes left in cgroup {self.name}: {sorted(pids)}")
            frozen = _set_freezer(freezer, "FROZEN")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            if frozen:
                _set_freezer(freezer, "THAWED")
            time.sleep(0.05)
        for pid in killed:
            _wait_gone(pid, deadline)
        return len(killed)

    def remove(self) -> None:
        """Remove the subtree (deepest first); it must hold no process."""
        errors: list[str] = []
        for top in self.paths():
            if not top.is_dir():
                continue
            for path in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
                _rmdir(path, errors)
            _rmdir(top, errors)
        if errors:
            raise HarnessError("could not remove cgroups: " + "; ".join(errors[:5]))


def _set_freezer(path: Path, state: str) -> bool:
    try:
        (path / "freezer.state").write_text(state)
    except OSError:
        return False
    return True


def _rmdir(path: Path, errors: list[str]) -> None:
    last: OSError | None = None
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as err:  # EBUSY while the kernel finishes tearing a process down
            last = err
            time.sleep(0.02)
    errors.append(f"{path}: {last}")


def _wait_gone(pid: int, deadline: float) -> None:
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)


def list_node_cgroups() -> list[str]:
    names: set[str] = set()
    for controller in controllers():
        names.update(p.name for p in (CGROUP_ROOT / controller).glob(owners.PREFIX + "*"))
    return sorted(names)


def sweep_stale() -> list[str]:
    """Kill and remove the subtrees of environments whose owning process is gone."""
    removed = []
    for name in owners.dead(list_node_cgroups()):
        group = NodeCgroup(name)
        group.kill_all()
        group.remove()
        removed.append(name)
    return removed
