"""The Helm charts: lint, schema, and what a real apiserver says of their output.

``helm lint --strict`` for every chart; ``helm template`` output accepted by a real
kube-apiserver (``kubectl apply --dry-run=server``); bad values refused with the
schema's message; and the agent's RBAC, applied for real, grants exactly the rules of
``charts/federation-agent/files/clusterrole-rules.yaml`` (the rules the test
environment's agents run with) and no Secrets. With ``registry.tls`` the hub's and the
agent's registry TLS Secrets are mounted read-only where their variables point.
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
        [str(toolchain.locate_helm()), *args],
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
        ("federation-agent", [*GOOD_VALUES["federation-agent"], "registry.tls.caSecret=Bad_Name"],
         "at '/registry/tls/caSecret'"),
        ("federation-hub", [*GOOD_VALUES["federation-hub"], "registry.tls.caFile=/x"],
         "at '/registry/tls': additional properties 'caFile' not allowed"),
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


REGISTRY_TLS = [
    "registry.tls.caSecret=registry-ca",
    "registry.tls.clientCertSecret=registry-client",
]
REGISTRY_TLS_ENV = {
    "FEDERATION_REGISTRY_CA_FILE": ("registry-ca", "ca.crt"),
    "FEDERATION_REGISTRY_CERT_FILE": ("registry-client", "tls.crt"),
    "FEDERATION_REGISTRY_KEY_FILE": ("registry-client", "tls.key"),
}


def _main_pod(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hub's or agent's pod spec and its main container."""
    for doc in docs:
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            for container in pod["containers"]:
                if container["name"] in ("hub", "agent"):
                    return pod, container
    raise AssertionError("no hub or agent Deployment")


@pytest.mark.parametrize("chart", ["federation-hub", "federation-agent"])
def test_registry_tls_mounts_its_secrets_where_the_variables_point(
    local_env: LocalEnvironment, chart: str
) -> None:
    cluster = local_env.cluster("a")
    ns = f"chart-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    docs = render(chart, [*GOOD_VALUES[chart], *REGISTRY_TLS], namespace=ns)
    pod, main = _main_pod(docs)
    env = {e["name"]: e.get("value") for e in main["env"]}
    volumes = {v["name"]: v["secret"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    for variable, (secret, key) in REGISTRY_TLS_ENV.items():
        path = Path(env[variable])
        mount = mounts[str(path.parent)]  # the file is a key of a read-only Secret volume
        assert mount["readOnly"] is True
        source = volumes[mount["name"]]
        assert source["secretName"] == secret
        assert {"key": key, "path": path.name} in source["items"]
        assert source["defaultMode"] == 0o440  # the pod's fsGroup reads it, nobody else
    done = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    # Only the CA: no client certificate variables or volume.
    pod, main = _main_pod(render(chart, [*GOOD_VALUES[chart], REGISTRY_TLS[0]]))
    names = {e["name"] for e in main["env"]}
    assert "FEDERATION_REGISTRY_CA_FILE" in names
    assert not names & {"FEDERATION_REGISTRY_CERT_FILE", "FEDERATION_REGISTRY_KEY_FILE"}
    assert [v["name"] for v in pod["volumes"] if v["name"] != "xds-tls"] == ["registry-ca"]

    # Off by default: nothing of it.
    pod, main = _main_pod(render(chart, GOOD_VALUES[chart]))
    assert not {e["name"] for e in main["env"]} & set(REGISTRY_TLS_ENV)
    assert not [v for v in pod.get("volumes", []) if v["name"].startswith("registry")]


def test_registry_tls_is_refused_with_the_bundled_registry() -> None:
    done = helm("template", "t", str(CHARTS / "federation-hub"), *sets([*BUNDLED, REGISTRY_TLS[0]]))
    assert done.returncode != 0
    assert "the bundled one (registry.bundled.enabled) speaks no TLS" in done.stderr


def _deployment(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    found: dict[str, Any]
    (found,) = [
        d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    return found


@pytest.mark.parametrize(
    ("chart", "component", "container", "flags"),
    [
        ("federation-hub", "hub", "hub",
         ["--xds-tls-cert", "--xds-tls-key", "--xds-client-ca"]),
        ("federation-agent", "gateway", "bootstrap", ["--tls-cert", "--tls-key", "--tls-ca"]),
    ],
)  # fmt: skip
def test_xds_is_mtls_by_default_from_a_whole_secret_volume(
    chart: str, component: str, container: str, flags: list[str]
) -> None:
    """The certificate files come from a Secret mounted whole (a subPath mount would
    never see a renewed certificate), at the paths the flags name."""
    pod = _deployment(render(chart, GOOD_VALUES[chart]), component)
    (volume,) = [v for v in pod["volumes"] if v["name"] == "xds-tls"]
    # The names fedctl pki secret gives: two, since the hub's cluster is often a member.
    assert volume["secret"]["secretName"] == (
        "federation-hub-xds-tls" if chart == "federation-hub" else "federation-xds-tls"
    )
    assert volume["secret"]["defaultMode"] == 0o440
    every = pod["containers"] + pod.get("initContainers", [])
    (main,) = [c for c in every if c["name"] == container]
    args = dict(a.split("=", 1) for a in main["args"] if a.startswith("--") and "=" in a)
    paths = [args[flag] for flag in flags]
    mounts = [m for c in every for m in c.get("volumeMounts", []) if m["name"] == "xds-tls"]
    assert mounts and all(m["readOnly"] and "subPath" not in m for m in mounts)
    assert {str(Path(p).parent) for p in paths} == {mounts[0]["mountPath"]}
    assert not any("insecure" in a for a in main["args"])


@pytest.mark.parametrize(
    ("chart", "values", "message"),
    [
        ("federation-hub", ["registry.existingSecret=r", "xds.tls.secretName="],
         "xds.tls.secretName is required"),
        ("federation-agent", [*GOOD_VALUES["federation-agent"], "gateway.hubTls.secretName="],
         "gateway.hubTls.secretName is required"),
    ],
)  # fmt: skip
def test_plain_text_xds_must_be_asked_for(chart: str, values: list[str], message: str) -> None:
    done = helm("template", "t", str(CHARTS / chart), *sets(values))
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    insecure = (
        "xds.insecurePlaintext=true"
        if chart == "federation-hub"
        else ("gateway.insecurePlaintext=true")
    )
    docs = render(chart, [*values, insecure])
    pod = _deployment(docs, "hub" if chart == "federation-hub" else "gateway")
    every = pod["containers"] + pod.get("initContainers", [])
    argv = [a for c in every for a in c.get("args", [])]
    assert (
        "--insecure-xds-plaintext" if chart == "federation-hub" else "--insecure-plaintext"
    ) in argv
    assert not [v for v in pod.get("volumes", []) if v["name"] == "xds-tls"]
