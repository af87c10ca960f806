"""The upstream MCS conformance suite (``sigs.k8s.io/mcs-api/conformance``), unmodified,
against the federation on the node tier's clusters ``a`` (exporting) and ``b``.

The suite is a Go test binary (:func:`e2e.toolchain.ensure_mcs_conformance`). It drives
both clusters through one kubeconfig with the contexts ``a`` and ``b``: it creates
namespaces, Services, Deployments and ServiceExports, waits for the agents' ServiceImports
and EndpointSlices, and execs DNS lookups and ``nc`` in a ``request`` pod in each cluster.
Its pods run the images :data:`e2e.images.SOCAT` and :data:`e2e.images.NETSHOOT`, loaded
into both nodes here.

Its ``report.yaml`` (and ``report.html`` and the suite's output) are kept under
``test-artifacts/mcs-conformance/`` in the work tree (``$FEDERATION_TEST_ARTIFACTS``
overrides ``test-artifacts/``). The test fails when any of the 27 specs does not pass
or does not run.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import images, toolchain
from e2e.federation import Federation
from e2e.nodes import NodeCluster, NodeEnvironment
from e2e.suite_runs import run_logged

#: Every spec of the suite: none may be filtered out or skipped.
EXPECTED_SPECS = 27
#: The labels the suite's report groups its specs by.
REPORT_LABELS = ("Required", "Optional")
#: Ginkgo's own deadline for the whole suite; it then interrupts the running spec and
#: still writes its report.
SUITE_TIMEOUT = 20 * 60
#: Beyond Ginkgo's deadline and grace period, the binary is killed.
PROCESS_TIMEOUT = SUITE_TIMEOUT + 120
SUITE_IMAGES = (images.SOCAT, images.NETSHOOT)


def artifacts_dir() -> Path:
    """Where this test keeps what the suite wrote (emptied at the start of each run)."""
    root = os.environ.get("FEDERATION_TEST_ARTIFACTS")
    base = Path(root) if root else toolchain.REPO_ROOT / "test-artifacts"
    return base / "mcs-conformance"


def merged_kubeconfig(clusters: Sequence[NodeCluster]) -> dict[str, Any]:
    """One kubeconfig holding each cluster's admin credentials under a context, a cluster
    and a user named after the cluster id (the suite reports clusters by those names)."""
    config: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [],
        "users": [],
        "contexts": [],
        "current-context": clusters[0].id,
    }
    for cluster in clusters:
        admin = yaml.safe_load(cluster.kubeconfig.read_text())
        current = _named(admin["contexts"], admin["current-context"])["context"]
        server = _named(admin["clusters"], current["cluster"])["cluster"]
        credentials = _named(admin["users"], current["user"])["user"]
        user = f"admin-{cluster.id}"
        config["clusters"].append({"name": cluster.id, "cluster": server})
        config["users"].append({"name": user, "user": credentials})
        config["contexts"].append(
            {"name": cluster.id, "context": {"cluster": cluster.id, "user": user}}
        )
    return config


def _named(entries: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    for entry in entries:
        if entry["name"] == name:
            return entry
    raise KeyError(f"no entry {name!r} in kubeconfig")


def run_suite(binary: Path, kubeconfig: Path, contexts: Sequence[str], workdir: Path) -> int:
    """Run the suite in ``workdir`` (where it writes its reports), its output shown as it
    comes and kept in ``workdir/suite.log``; its exit code. Killed (by pid) if it outlives
    :data:`PROCESS_TIMEOUT`."""
    argv = [
        str(binary),
        f"-kubeconfig={kubeconfig}",
        f"-contexts={','.join(contexts)}",
        "-project=federation",
        f"-version={importlib.metadata.version('federation')}",
        f"-ginkgo.timeout={SUITE_TIMEOUT}s",
        "-ginkgo.v",
        "-ginkgo.no-color",
    ]
    return run_logged(argv, workdir, prefix="[mcs-conformance]", timeout=PROCESS_TIMEOUT)


@dataclass
class LabelTotals:
    """What the report says about the specs under one label (Required or Optional)."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_report(report: Mapping[str, Any]) -> dict[str, LabelTotals]:
    """The report's specs by label; a spec that neither passed nor was skipped failed,
    whether the suite found it non-conformant or could not decide (the report's
    ``failed``: an assertion without a conformance message, or an error)."""
    totals = {label: LabelTotals() for label in REPORT_LABELS}
    for group in report.get("groups") or []:
        entry = totals.setdefault(group["name"], LabelTotals())
        for test in group.get("tests") or []:
            labels = ",".join(test.get("labels") or [])
            desc = f"{test['desc']}" + (f" [{labels}]" if labels else "")
            if test["passed"]:
                entry.passed.append(desc)
            elif test["skipped"]:
                entry.skipped.append(f"{desc}{test.get('message', '')}")
            else:
                kind = "non-conformant" if not test["conformant"] else "failed"
                entry.failed.append(f"{desc} ({kind}){test.get('message', '')}")
    return totals


def test_mcs_conformance_suite(
    node_env: NodeEnvironment, node_federation: Federation, capsys: pytest.CaptureFixture[str]
) -> None:
    binary = toolchain.ensure_mcs_conformance()
    clusters = [node_env.cluster("a"), node_env.cluster("b")]
    for cluster in clusters:
        cluster.load_images(SUITE_IMAGES)
    assert node_federation.agents, "the federation has no agents"

    workdir = node_env.workdir / "mcs-conformance"
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(merged_kubeconfig(clusters)))
    kubeconfig.chmod(0o600)

    began = time.monotonic()
    code = run_suite(binary, kubeconfig, [c.id for c in clusters], workdir)
    elapsed = time.monotonic() - began

    artifacts = artifacts_dir()
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    for name in ("report.yaml", "report.html", "suite.log"):
        if (workdir / name).exists():
            shutil.copy(workdir / name, artifacts / name)
    print(f"[mcs-conformance] exit {code} after {elapsed:.0f}s; artifacts in {artifacts}")

    report_file = artifacts / "report.yaml"
    assert report_file.exists(), (
        f"the suite wrote no report.yaml (exit {code}); its output: {artifacts / 'suite.log'}"
    )
    report = yaml.safe_load(report_file.read_text())
    totals = read_report(report)
    lines = [f"MCS conformance: {report['passed']}/{report['total']} passed ({report_file})"]
    for label, entry in totals.items():
        lines.append(
            f"  {label}: {len(entry.passed)} passed, {len(entry.failed)} failed, "
            f"{len(entry.skipped)} skipped"
        )
        lines += [f"    FAILED {desc}" for desc in entry.failed]
        lines += [f"    SKIPPED {desc}" for desc in entry.skipped]
    summary = "\n".join(lines)
    with capsys.disabled():  # the totals belong in the test command's output, pass or fail
        print(f"\n{summary}", flush=True)

    assert not report.get("suitefailure"), f"the suite's set-up failed: {report['suitefailure']}"
    failed = [desc for entry in totals.values() for desc in entry.failed]
    skipped = [desc for entry in totals.values() for desc in entry.skipped]
    assert not failed, f"{len(failed)} MCS conformance spec(s) failed:\n{summary}"
    assert not skipped, f"{len(skipped)} MCS conformance spec(s) did not run:\n{summary}"
    assert report["total"] == EXPECTED_SPECS, (
        f"the report counts {report['total']} specs, not {EXPECTED_SPECS}:\n{summary}"
    )
    assert code == 0, f"every spec passed but the suite exited {code}: {artifacts / 'suite.log'}"
