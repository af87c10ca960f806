"""The upstream Gateway API conformance suite, unmodified, against cluster ``b``'s agent.

The suite (:mod:`e2e.gateway_conformance`) runs inside ``b``'s node network namespace
(``nsenter --net``, in the node's cgroup), where it reaches ``b``'s apiserver on the
node's address and every Gateway at the address of its ``status.addresses``: the
address :mod:`e2e.load_balancer` gave the Gateway's Service, which ``b``'s node answers
for and kube-proxy sends to the Gateway's Envoys. Nothing leaves the environment's
namespaces. Profiles GATEWAY-HTTP and GATEWAY-GRPC; the supported features are those our
GatewayClass publishes (``status.supportedFeatures``), which the suite reads itself.

Kept under ``test-artifacts/gateway-conformance/`` (``$FEDERATION_TEST_ARTIFACTS``
overrides ``test-artifacts/``): the ConformanceReport (``report.yaml``), the suite's
output (``suite.log``), a summary with each failed test's first error
(``summary.txt``), the load balancer's log and the agent's log. The test fails unless
every core test of both profiles, and every test of a declared extended feature, passed.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from e2e import gateway_conformance as gc
from e2e import netns, pods, toolchain
from e2e.gateways import CLASS
from e2e.helm_install import NS
from e2e.load_balancer import FABRIC_INTERFACE
from e2e.nodes import APISERVER_PORT, NodeCluster
from e2e.processes import wait_until
from e2e.suite_runs import run_logged
from federation.translate.gateway.features import SUPPORTED_FEATURES

from .conftest import GatewayConformanceEnv

#: The suite's own deadline (``-test.timeout``); beyond it and a grace period, the
#: binary is killed (by pid) and no report is written.
SUITE_TIMEOUT = 60 * 60
PROCESS_TIMEOUT = SUITE_TIMEOUT + 120
IMPLEMENTATION = gc.Implementation(
    organization="federation",
    project="federation",
    url="https://example.invalid/federation",
    version=importlib.metadata.version("federation"),
    contact=("@federation/maintainers",),
)
LOG_PREFIX = "[gateway-conformance]"


def artifacts_dir() -> Path:
    """Where this test keeps what the suite wrote (emptied at the start of each run)."""
    root = os.environ.get("FEDERATION_TEST_ARTIFACTS")
    base = Path(root) if root else toolchain.REPO_ROOT / "test-artifacts"
    return base / "gateway-conformance"


def suite_kubeconfig(cluster: NodeCluster) -> Path:
    """An admin kubeconfig that reaches the apiserver from inside the node's namespace
    (on the node's address: the apiserver's certificate names it)."""
    identity = cluster.mint_identity(
        "gateway-conformance",
        ("system:masters",),
        server=f"https://{cluster.node_ip}:{APISERVER_PORT}",
    )
    return identity.kubeconfig


def run_suite(cluster: NodeCluster, argv: list[str], workdir: Path) -> int:
    """``argv`` in the node's network namespace, in ``workdir``; its output shown as it
    comes and kept in ``workdir/suite.log``; its exit code."""
    return run_logged(cluster.in_node(argv), workdir, prefix=LOG_PREFIX, timeout=PROCESS_TIMEOUT)


def keep_logs(cluster: NodeCluster, artifacts: Path) -> None:
    """The agent's log (what it made of the suite's objects) beside the report."""
    done = cluster.kubectl(
        "logs", "-n", NS, "-l", "app.kubernetes.io/component=agent", "--tail=-1",
        "--all-containers", "--prefix", check=False,
    )  # fmt: skip
    (artifacts / "agent.log").write_text(done.stdout + done.stderr)


def summarize(
    profiles: dict[str, gc.ProfileTotals], output: gc.SuiteOutput, report_file: Path
) -> str:
    results = output.tests()
    lines = [f"Gateway API conformance ({report_file}):"]
    for name, profile in sorted(profiles.items()):
        lines.append(f"  {name}: {profile.summary}")
        for level, totals in (("core", profile.core), ("extended", profile.extended)):
            if totals is None:
                continue
            lines.append(
                f"    {level}: {totals.result or '-'}: {totals.passed} passed, "
                f"{totals.failed} failed, {totals.skipped} skipped"
            )
            lines += [
                f"      FAILED {test}: {output.first_error(test)}" for test in totals.failed_tests
            ]
            lines += [f"      SKIPPED {test}" for test in totals.skipped_tests]
        if profile.unsupported_features:
            lines.append(f"    unsupported: {', '.join(profile.unsupported_features)}")
    by_result: dict[str, list[str]] = {}
    for test, result in sorted(results.items()):
        by_result.setdefault(result, []).append(test)
    lines.append("  tests run: " + ", ".join(f"{len(v)} {k}" for k, v in sorted(by_result.items())))
    lines += [f"    PASS {test}" for test in by_result.get("PASS", [])]
    lines += [f"    FAIL {test}: {output.first_error(test)}" for test in by_result.get("FAIL", [])]
    return "\n".join(lines)


LB_CHECK_NS = "load-balancer-check"


def _ingress(cluster: NodeCluster, ns: str, name: str) -> list[str]:
    done = cluster.kubectl("get", "service", name, "-n", ns, "-o", "json", check=False)
    if done.returncode != 0:
        return []
    status = json.loads(done.stdout).get("status") or {}
    return [e.get("ip", "") for e in (status.get("loadBalancer") or {}).get("ingress") or []]


def _node_addresses(cluster: NodeCluster) -> str:
    return netns.ip("-4", "-o", "addr", "show", "dev", FABRIC_INTERFACE,
                    netns=cluster.network.netns)  # fmt: skip


def _get_in_node(cluster: NodeCluster, url: str) -> subprocess.CompletedProcess[str]:
    """A GET from inside the node's network namespace (where the suite runs)."""
    script = (
        "import sys, urllib.request\n"
        "print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())"
    )
    return subprocess.run(
        cluster.in_node([sys.executable, "-c", script, url]),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_load_balancer_serves_a_service_and_releases_its_address(
    conformance_env: GatewayConformanceEnv,
) -> None:
    """A LoadBalancer Service gets an address of the pool, reachable from the node's
    namespace; deleting the Service frees it (before the suite relies on all this)."""
    cluster = conformance_env.cluster
    service = pods.service(LB_CHECK_NS)
    service["spec"]["type"] = "LoadBalancer"
    pods.apply(cluster, pods.namespace(LB_CHECK_NS))
    pods.apply(cluster, pods.echo_deployment(LB_CHECK_NS, cluster.id, replicas=1), service)
    try:
        found: list[str] = []

        def addressed() -> bool:
            found[:] = _ingress(cluster, LB_CHECK_NS, "echo")
            return bool(found)

        wait_until(addressed, timeout=60, what="the Service's load balancer address")
        (address,) = found
        assert address in conformance_env.load_balancer.pool.addresses
        assert f"{address}/32" in _node_addresses(cluster)
        pods.wait_ready_pods(cluster, LB_CHECK_NS, "app=echo", 1)
        replies: list[subprocess.CompletedProcess[str]] = []

        def answered() -> bool:
            replies.append(_get_in_node(cluster, f"http://{address}/"))
            return replies[-1].returncode == 0

        wait_until(answered, timeout=60, interval=1, what=f"http://{address}/ to answer")
        assert json.loads(replies[-1].stdout)["cluster"] == cluster.id
        cluster.kubectl("delete", "service", "echo", "-n", LB_CHECK_NS)
        wait_until(
            lambda: address not in conformance_env.load_balancer.assigned().values(),
            timeout=60, what=f"{address} released",
        )  # fmt: skip
        assert f"{address}/32" not in _node_addresses(cluster)
    finally:
        cluster.kubectl("delete", "namespace", LB_CHECK_NS, "--wait=false", check=False)
    assert not conformance_env.load_balancer.errors, conformance_env.load_balancer.errors


def test_gateway_api_conformance_core(
    conformance_env: GatewayConformanceEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = conformance_env.cluster
    workdir = conformance_env.installed.env.workdir / "gateway-conformance"
    workdir.mkdir(parents=True, exist_ok=True)
    report_path = workdir / "report.yaml"
    # The suite reads what to test from our GatewayClass, as for any implementation.
    published: list[object] = []

    def features_published() -> bool:
        found = json.loads(cluster.kubectl("get", "gatewayclass", CLASS, "-o", "json").stdout)
        published[:] = [
            f["name"] for f in (found.get("status") or {}).get("supportedFeatures") or []
        ]
        return published == list(SUPPORTED_FEATURES)

    wait_until(features_published, timeout=60, what="status.supportedFeatures of our class")
    argv = gc.suite_argv(
        conformance_env.tools.suite,
        kubeconfig=suite_kubeconfig(cluster),
        gateway_class=CLASS,
        supported_features=None,
        report=report_path,
        implementation=IMPLEMENTATION,
        timeout_s=SUITE_TIMEOUT,
    )

    began = time.monotonic()
    with capsys.disabled():  # the suite's output as it comes
        code = run_suite(cluster, argv, workdir)
    elapsed = time.monotonic() - began

    artifacts = artifacts_dir()
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    for name in ("report.yaml", "suite.log"):
        if (workdir / name).exists():
            shutil.copy(workdir / name, artifacts / name)
    if conformance_env.load_balancer.log_path.exists():
        shutil.copy(conformance_env.load_balancer.log_path, artifacts / "load-balancer.log")
    keep_logs(cluster, artifacts)
    print(f"{LOG_PREFIX} exit {code} after {elapsed:.0f}s; artifacts in {artifacts}")

    report_file = artifacts / "report.yaml"
    assert report_file.exists(), (
        f"the suite wrote no report.yaml (exit {code}); its output: {artifacts / 'suite.log'}"
    )
    report = yaml.safe_load(report_file.read_text())
    profiles = gc.read_report(report)
    output = gc.SuiteOutput.parse((artifacts / "suite.log").read_text(errors="replace"))
    summary = summarize(profiles, output, report_file)
    lb_errors = conformance_env.load_balancer.errors
    if lb_errors:
        summary += f"\n  load balancer errors ({len(lb_errors)}): " + "; ".join(lb_errors[:10])
    (artifacts / "summary.txt").write_text(summary + "\n")
    with capsys.disabled():  # the totals belong in the test command's output, pass or fail
        print(f"\n{summary}", flush=True)

    assert output.tests(), f"the suite ran no conformance test (exit {code}):\n{summary}"
    missing = [p for p in gc.PROFILES if p not in profiles]
    assert not missing, f"the report has no result for {missing}:\n{summary}"
    core_failed = {p.name: p.core.failed_tests for p in profiles.values() if p.core.failed}
    assert not core_failed, f"core conformance tests failed: {core_failed}\n{summary}"
    extended_failed = {
        p.name: p.extended.failed_tests
        for p in profiles.values()
        if p.extended is not None and p.extended.failed
    }
    assert not extended_failed, f"declared extended features failed: {extended_failed}\n{summary}"
    extended_skipped = {
        p.name: p.extended.skipped_tests
        for p in profiles.values()
        if p.extended is not None and p.extended.skipped
    }
    assert not extended_skipped, f"declared extended tests did not run: {extended_skipped}"
    core_skipped = {p.name: p.core.skipped_tests for p in profiles.values() if p.core.skipped}
    assert not core_skipped, f"core conformance tests did not run: {core_skipped}\n{summary}"
    assert all(p.core.passed for p in profiles.values()), summary
    assert code == 0, f"every core test passed but the suite exited {code}:\n{summary}"
