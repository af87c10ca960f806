"""Teardown of a node environment leaves nothing, also on Ctrl-C.

The environment runs as a user would run it, ``python -m e2e up --nodes``, with a
Deployment in it so that containerd has shims and containers to leave behind. After
SIGINT, nothing it made may be left: no process (checked by pid), network namespace,
cgroup, mount, iptables rule, sysctl change or temp dir.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from e2e import cgroups, netns, pods
from e2e.cluster import REPO_ROOT
from e2e.processes import HarnessError, pid_alive, wait_until
from e2e.sysctls import KUBELET_SYSCTLS
from e2e.toolchain import locate


def host_iptables() -> str:
    """The host's own rules (every table), without the counters that change by the second."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(("#", ":")))


def host_chains() -> set[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0][1:] for line in out.splitlines() if line.startswith(":")}


def sysctls() -> dict[str, str]:
    return {key: Path("/proc/sys", key).read_text().strip() for key in KUBELET_SYSCTLS}


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


def mounts_mentioning(*needles: str) -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line for line in lines if any(n in line for n in needles)]


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(locate().kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise HarnessError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def test_ctrl_c_on_a_node_environment_leaves_nothing(tmp_path: Path) -> None:
    iptables_before, chains_before, sysctls_before = host_iptables(), host_chains(), sysctls()
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
    owner = up.pid
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
        # Something for containerd to leave behind: pods, their shims and containers.
        manifests = [pods.namespace("work"), pods.echo_deployment("work", "t", replicas=2)]
        kubectl(kubeconfig, "apply", "-f", "-", stdin=pods.as_list(manifests))
        kubectl(
            kubeconfig, "wait", "-n", "work", "--for=condition=Available", "deployment/echo",
            "--timeout=90s",
        )  # fmt: skip

        names = [n for n in netns.list_namespaces() if netns.owner_of(n) == owner]
        assert sorted(names) == [f"fed-{owner}-fabric", f"fed-{owner}-t"]
        node_chains = subprocess.run(
            ["nsenter", f"--net={netns.NETNS_DIR / names[1]}", "iptables-save"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert ":KUBE-SERVICES" in node_chains  # kube-proxy's rules, inside the namespace
        node_cgroup = cgroups.NodeCgroup(f"fed-{owner}-t")
        containers = node_cgroup.pids() - descendants(owner)
        assert containers, "expected shims and containers outside the harness's process tree"
        started = descendants(owner) | node_cgroup.pids()
        assert mounts_mentioning(f"fed-{owner}-"), "expected the namespaces' bind mounts"
    finally:
        if up.poll() is None:
            os.kill(up.pid, signal.SIGINT)
        returncode = up.wait(timeout=120)
    assert returncode == 0, log.read_text()[-3000:]
    assert "every process is gone" in log.read_text()

    assert sorted(p for p in started if pid_alive(p)) == []
    assert [n for n in netns.list_namespaces() if netns.owner_of(n) == owner] == []
    assert [c for c in cgroups.list_node_cgroups() if cgroups.owner_of(c) == owner] == []
    assert mounts_mentioning(f"fed-{owner}-", str(workdir)) == []
    assert host_chains() == chains_before
    assert host_iptables() == iptables_before
    assert sysctls() == sysctls_before
    assert not workdir.exists()
