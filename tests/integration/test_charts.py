"""The Helm charts: lint, schema, and what a real apiserver says of their output.

``helm lint --strict`` for every chart; ``helm template`` output accepted by a real
kube-apiserver (``kubectl apply --dry-run=server``); bad values refused with the
schema's message; and the agent's RBAC, applied for real, grants exactly the rules of
``charts/federation-agent/files/clusterrole-rules.yaml`` (the rules the test
environment's agents run with) and no Secrets.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import toolchain
from e2e.cluster import REPO_ROOT, LocalEnvironment

pytestmark = pytest.mark.integration

CHARTS = REPO_ROOT / "charts"
HUB_ADDRESS = "federation-hub.federation.svc:18000"
GOOD_VALUES: dict[str, list[str]] = {
    "federation-crds": [],
    "federation-hub": ["registry.existingSecret=hub-registry"],
    "federation-agent": [
        "clusterId=a",
        "registry.existingSecret=agent-registry",
        f"gateway.hubAddress={HUB_ADDRESS}",
    ],
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(toolchain.locate().helm), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def sets(values: list[str]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def render(chart: str, values: list[str], namespace: str = "federation") -> list[dict[str, Any]]:
    done = helm("template", "t", str(CHARTS / chart), "--namespace", namespace, *sets(values))
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("chart", sorted(GOOD_VALUES))
def test_every_chart_lints_strictly(chart: str) -> None:
    done = helm("lint", "--strict", str(CHARTS / chart), *sets(GOOD_VALUES[chart]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("chart", sorted(GOOD_VALUES))
def test_a_real_apiserver_accepts_every_chart(local_env: LocalEnvironment, chart: str) -> None:
    cluster = local_env.cluster("a")
    ns = f"chart-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    docs = render(chart, GOOD_VALUES[chart], namespace=ns)
    done = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(docs)


@pytest.mark.parametrize(
    ("chart", "values", "message"),
    [
        ("federation-agent", ["clusterId=a", f"gateway.hubAddress={HUB_ADDRESS}"],
         "at '/registry/existingSecret': minLength"),
        ("federation-agent", [*GOOD_VALUES["federation-agent"], "agent.leaseTTL=ten"],
         "at '/agent/leaseTTL': got string, want number"),
        ("federation-agent", [*GOOD_VALUES["federation-agent"][1:], "clusterId=Bad_Id"],
         "at '/clusterId'"),
        ("federation-agent", ["clusterId=a", "registry.existingSecret=r"],
         "at '/gateway/hubAddress'"),
        ("federation-hub", [], "at '/registry/existingSecret': minLength"),
        ("federation-hub", [*GOOD_VALUES["federation-hub"], "listenerAddresses[0]=nowhere"],
         "at '/listenerAddresses/0'"),
        ("federation-hub", [*GOOD_VALUES["federation-hub"], "replicas=3"],
         "at '/replicas': maximum"),
    ],
)  # fmt: skip
def test_bad_values_fail_with_the_schemas_message(
    chart: str, values: list[str], message: str
) -> None:
    done = helm("template", "t", str(CHARTS / chart), *sets(values))
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr, done.stderr
    assert message in done.stderr, done.stderr


def test_no_secret_goes_into_a_command_line() -> None:
    """Registry credentials reach the hub and the agent through a Secret, as environment."""
    checked = set()
    for chart in ("federation-hub", "federation-agent"):
        for doc in render(chart, GOOD_VALUES[chart]):
            if doc["kind"] != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"] + pod.get("initContainers", []):
                argv = " ".join(container.get("command", []) + container.get("args", []))
                assert "redis://" not in argv and "registry" not in argv, argv
            for main in [c for c in pod["containers"] if c["name"] in ("hub", "agent")]:
                (env,) = [e for e in main["env"] if e["name"] == "FEDERATION_REGISTRY_URL"]
                assert "secretKeyRef" in env["valueFrom"]
                checked.add(chart)
    assert checked == {"federation-hub", "federation-agent"}


def test_pods_run_locked_down() -> None:
    for chart in ("federation-hub", "federation-agent"):
        for doc in render(chart, GOOD_VALUES[chart]):
            if doc["kind"] != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for container in pod["containers"] + pod.get("initContainers", []):
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"] == {"drop": ["ALL"]}
                assert container["resources"]["requests"]


def _can_i(local_env: LocalEnvironment, user: str) -> set[tuple[str, str]]:
    """(resource[.group], verb) the user may do cluster-wide, from kubectl auth can-i --list
    (rows of non-resource URLs, which start with blanks, left out)."""
    out = local_env.cluster("a").kubectl("auth", "can-i", "--list", f"--as={user}").stdout
    allowed = set()
    for line in out.splitlines()[1:]:
        if not line.strip() or line[0].isspace():
            continue
        verbs = line[line.rindex("[") + 1 : line.rindex("]")].split()
        allowed |= {(line.split()[0], verb) for verb in verbs}
    return allowed


def _expected(rules_file: Path) -> set[tuple[str, str]]:
    """The rules as kubectl lists them: resource.group, subresources as resource.group/sub."""
    expected = set()
    for rule in yaml.safe_load(rules_file.read_text()):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                base, _, sub = resource.partition("/")
                name = f"{base}.{group}" if group else base
                name += f"/{sub}" if sub else ""
                expected |= {(name, verb) for verb in rule["verbs"]}
    return expected


def test_the_agents_rbac_grants_exactly_what_the_code_needs(local_env: LocalEnvironment) -> None:
    cluster = local_env.cluster("a")
    ns = f"rbac-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    docs = [
        d
        for d in render("federation-agent", GOOD_VALUES["federation-agent"], namespace=ns)
        if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    ]
    for doc in docs:  # cluster-scoped names of their own: other tests share the cluster
        if doc["kind"] != "ServiceAccount":
            doc["metadata"]["name"] += f"-{ns}"
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    binding["roleRef"]["name"] = role["metadata"]["name"]
    items = {"apiVersion": "v1", "kind": "List", "items": docs}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(items))
    sa = account["metadata"]["name"]

    # What every authenticated identity may do anyway (self reviews, discovery).
    baseline = _can_i(local_env, f"system:serviceaccount:{ns}:nobody")
    granted = _can_i(local_env, f"system:serviceaccount:{ns}:{sa}") - baseline
    expected = _expected(CHARTS / "federation-agent" / "files" / "clusterrole-rules.yaml")
    assert granted == expected
    assert not any(resource.startswith("secrets") for resource, _ in granted)


BUNDLED = ["registry.bundled.enabled=true"]


def test_the_bundled_registry_lints_and_a_real_apiserver_accepts_it(
    local_env: LocalEnvironment,
) -> None:
    assert helm("lint", "--strict", str(CHARTS / "federation-hub"), *sets(BUNDLED)).returncode == 0
    cluster = local_env.cluster("a")
    ns = f"chart-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    docs = render("federation-hub", BUNDLED, namespace=ns)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["Deployment", "Secret", "Service", "Service", "ServiceAccount", "StatefulSet"]
    done = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # The hub reads the generated Secret, as environment; no password in any argv.
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    (hub,) = [d for d in docs if d["kind"] == "Deployment"]
    (env,) = hub["spec"]["template"]["spec"]["containers"][0]["env"][:1]
    assert env["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "url"}
    (registry,) = [d for d in docs if d["kind"] == "StatefulSet"]
    pod = registry["spec"]["template"]["spec"]
    for container in pod["containers"] + pod["initContainers"]:
        argv = " ".join(container.get("command", []) + container.get("args", []))
        assert "password" not in argv.lower(), argv
