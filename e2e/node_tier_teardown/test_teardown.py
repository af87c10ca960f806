"""Teardown of a node environment leaves nothing: after Ctrl-C, and after an exception
while it starts.

Each environment has pods by the time it goes, so that containerd has shims and
containers to leave behind. Afterwards nothing it made may be left: no process (checked
by pid), network namespace, cgroup, mount (the node's private mount namespace must be
gone with every mount in it), iptables rule, sysctl change or temp dir.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e import cgroups, netns, owners, pods, sysctls
from e2e.cluster import REPO_ROOT
from e2e.nodes import NodeEnvironment
from e2e.processes import HarnessError, pid_alive, wait_until
from e2e.toolchain import locate


def iptables_save() -> str:
    """The host's own rules and chains (every table), without packet counters."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return "\n".join(
        re.sub(r"\[\d+:\d+\]$", "", line) for line in out.splitlines() if not line.startswith("#")
    )


def machine_sysctls() -> dict[str, str]:
    return {key: sysctls.read(key) for key in sysctls.KUBELET_SYSCTLS}


def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def mount_namespaces_in_use() -> set[str]:
    found = set()
    for link in Path("/proc").glob("[0-9]*/ns/mnt"):
        with contextlib.suppress(OSError):
            found.add(os.readlink(link))
    return found


@dataclass
class Footprint:
    """What one environment had made while it ran."""

    #: The start of its namespaces' and cgroups' names: ``fed-<owner pid>-<n>-``.
    prefix: str
    workdir: Path
    pids: set[int]
    namespaces: list[str]
    cgroups: list[str]
    #: The nodes' private mount namespaces (``mnt:[inode]``).
    mount_namespaces: set[str]


def footprint(token: str, workdir: Path, pids: set[int]) -> Footprint:
    prefix = f"{owners.PREFIX}{token}-"
    names = [n for n in netns.list_namespaces() if n.startswith(prefix)]
    groups = [c for c in cgroups.list_node_cgroups() if c.startswith(prefix)]
    for group in groups:
        pids |= cgroups.NodeCgroup(group).pids()
    holders = [p for p in pids if _cmdline(p)[:2] == ["sleep", "infinity"]]
    mount_namespaces = {os.readlink(f"/proc/{p}/ns/mnt") for p in holders}
    for holder in holders:  # the overlays exist, in the node's namespace only
        assert " /var/lib " in Path(f"/proc/{holder}/mountinfo").read_text()
    return Footprint(prefix, workdir, pids, names, groups, mount_namespaces)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")
    except OSError:
        return []


@pytest.fixture
def machine_before() -> Iterator[tuple[str, dict[str, str]]]:
    assert not sysctls.RECORD.exists(), "another node environment is running"
    yield iptables_save(), machine_sysctls()


def assert_nothing_left(seen: Footprint, before: tuple[str, dict[str, str]]) -> None:
    assert seen.pids and seen.namespaces and seen.cgroups and seen.mount_namespaces
    assert sorted(p for p in seen.pids if pid_alive(p)) == []
    assert [n for n in netns.list_namespaces() if n.startswith(seen.prefix)] == []
    assert [c for c in cgroups.list_node_cgroups() if c.startswith(seen.prefix)] == []
    assert seen.mount_namespaces.isdisjoint(mount_namespaces_in_use())
    host_mounts = Path("/proc/self/mountinfo").read_text()
    assert str(seen.workdir) not in host_mounts
    assert not any(name in host_mounts for name in seen.namespaces)
    assert iptables_save() == before[0]
    assert machine_sysctls() == before[1]
    assert not sysctls.RECORD.exists()
    assert not seen.workdir.exists()


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(locate().kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def test_ctrl_c_on_a_node_environment_leaves_nothing(
    tmp_path: Path, machine_before: tuple[str, dict[str, str]]
) -> None:
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "e2e", "up", "--nodes", "--clusters", "t"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=REPO_ROOT,
            env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        )
    try:

        def running() -> bool:
            if up.poll() is not None:
                raise HarnessError(f"`e2e up --nodes` exited:\n{log.read_text()[-3000:]}")
            return "Running." in log.read_text()

        wait_until(running, timeout=240, interval=0.5, what="the node environment to be up")
        match = re.search(r"\(state in (\S+)\)", log.read_text())
        assert match, log.read_text()
        workdir = Path(match.group(1))
        kubeconfig = workdir / "t" / "kubeconfig"
        manifests = [pods.namespace("work"), pods.echo_deployment("work", "t", replicas=2)]
        kubectl(kubeconfig, "apply", "-f", "-", stdin=pods.as_list(manifests))
        kubectl(
            kubeconfig, "wait", "-n", "work", "--for=condition=Available", "deployment/echo",
            "--timeout=90s",
        )  # fmt: skip
        # The first environment of that process: token <pid>-1.
        seen = footprint(f"{up.pid}-1", workdir, descendants(up.pid))
        node_ns = next(n for n in seen.namespaces if not n.endswith("-fabric"))
        rules = netns.run(["nsenter", f"--net={netns.NETNS_DIR / node_ns}", "iptables-save"])
        assert ":KUBE-SERVICES" in rules  # kube-proxy's chains, inside the namespace
        assert seen.pids - descendants(up.pid), "shims and containers live outside the tree"
    finally:
        if up.poll() is None:
            os.kill(up.pid, signal.SIGINT)
        returncode = up.wait(timeout=120)
    assert returncode == 0, log.read_text()[-3000:]
    assert "every process is gone" in log.read_text()
    assert_nothing_left(seen, machine_before)


class _FailsOnceRunning(NodeEnvironment):
    """Starts completely, pods included, then fails the way a late step could."""

    footprint: Footprint | None = None

    def _start_nodes(self) -> None:
        super()._start_nodes()
        self.footprint = footprint(self.fabric.token, self.workdir, set(self.pids()))
        raise RuntimeError("injected: a step after the nodes were up failed")


def test_an_exception_while_starting_leaves_nothing(
    machine_before: tuple[str, dict[str, str]],
) -> None:
    env = _FailsOnceRunning(("f",))
    with pytest.raises(RuntimeError, match="injected"), env:
        pass
    assert env.footprint is not None
    assert_nothing_left(env.footprint, machine_before)
