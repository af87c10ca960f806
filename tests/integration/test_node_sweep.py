"""What a node environment killed with SIGKILL leaves behind (its network namespaces, its
cgroups and the container processes in them) is removed by the next one's sweep, and
nothing of a live environment is touched."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

import pytest

from e2e import cgroups, netns
from e2e.processes import HarnessError, pid_alive, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def dead_owner() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


@pytest.fixture
def stale(dead_owner: int) -> Iterator[tuple[str, cgroups.NodeCgroup, subprocess.Popen[bytes]]]:
    name = f"fed-{dead_owner}-x"
    netns.ip("netns", "add", name)
    group = cgroups.NodeCgroup(name)
    group.create("runtime")
    # A "container" left running in the stale node's cgroup.
    orphan = subprocess.Popen(
        [*group.join_argv_prefix("runtime"), "sleep", "300"], start_new_session=True
    )
    try:
        yield name, group, orphan
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()
        with contextlib.suppress(HarnessError):  # swept, as it should be
            netns.delete(name)
        if any(p.exists() for p in group.paths()):
            group.kill_all()
            group.remove()


def test_the_sweep_removes_what_a_dead_environment_left(
    stale: tuple[str, cgroups.NodeCgroup, subprocess.Popen[bytes]],
) -> None:
    name, group, orphan = stale
    live = f"fed-{os.getpid()}-live"
    netns.ip("netns", "add", live)
    try:
        assert name in netns.list_namespaces()
        wait_until(
            lambda: orphan.pid in group.pids("runtime"), timeout=10, what="the orphan's cgroup"
        )

        assert name in netns.sweep_stale()
        assert name in cgroups.sweep_stale()

        assert name not in netns.list_namespaces()
        assert live in netns.list_namespaces()  # its owner (this test) is alive
        assert not any(p.exists() for p in group.paths())
        orphan.wait(timeout=10)
        assert not pid_alive(orphan.pid)
    finally:
        netns.delete(live)
        assert live not in netns.list_namespaces()
