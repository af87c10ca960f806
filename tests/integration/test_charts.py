"""The Helm charts: lint, schema, and what a real apiserver says of their output.

``helm lint --strict`` for every chart; ``helm template`` output accepted by a real
kube-apiserver (``kubectl apply --dry-run=server``); bad values refused with the
schema's message; and the agent's RBAC, applied for real, grants exactly the rules of
``charts/federation-agent/files/clusterrole-rules.yaml`` (the rules the test
environment's agents run with) and no Secrets. With ``registry.tls`` the hub's and the
agent's registry TLS Secrets are mounted read-only where their variables point. The
agent chart's ValidatingAdmissionPolicy, applied to a real apiserver, refuses exactly the
ServiceExports whose exported labels or annotations that apiserver refuses on an object.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents import k8s_objects as objs
from e2e import toolchain
from e2e.cluster import REPO_ROOT, LocalCluster, LocalEnvironment
from e2e.processes import wait_until

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
    # Server-side apply, as Helm 4 installs: Envoy Gateway's CRDs are larger than the
    # annotation a client-side apply would keep of them.
    done = cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=chart-test",
        "--dry-run=server", "-f", "-",
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
        ("federation-hub", [*GOOD_VALUES["federation-hub"], "replicas=-1"],
         "at '/replicas': minimum"),
        ("federation-hub", [*GOOD_VALUES["federation-hub"], "podDisruptionBudget.max=1"],
         "at '/podDisruptionBudget': additional properties 'max' not allowed"),
        ("federation-agent", [*GOOD_VALUES["federation-agent"], "registry.tls.caSecret=Bad_Name"],
         "at '/registry/tls/caSecret'"),
        ("federation-hub", [*GOOD_VALUES["federation-hub"], "registry.tls.caFile=/x"],
         "at '/registry/tls': additional properties 'caFile' not allowed"),
        ("federation-agent",
         [*GOOD_VALUES["federation-agent"], "admissionPolicy.failurePolicy=Sometimes"],
         "at '/admissionPolicy/failurePolicy'"),
        ("federation-agent",
         [*GOOD_VALUES["federation-agent"], "admissionPolicy.validationActions={Deny,Block}"],
         "at '/admissionPolicy/validationActions/1'"),
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
    # Secrets: get (what it is pointed at) and its own copies; never list or watch.
    secrets = {verb for resource, verb in granted if resource.startswith("secrets")}
    assert secrets == {"get", "create", "patch", "delete"}, secrets


BUNDLED = ["registry.bundled.enabled=true"]


def test_the_bundled_registry_lints_and_a_real_apiserver_accepts_it(
    local_env: LocalEnvironment,
) -> None:
    assert helm("lint", "--strict", str(CHARTS / "federation-hub"), *sets(BUNDLED)).returncode == 0
    cluster = local_env.cluster("a")
    ns = f"chart-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    docs = render("federation-hub", BUNDLED, namespace=ns)
    # The dashboard's ConfigMap is tested apart (e2e/test_dashboard.py).
    kinds = sorted(d["kind"] for d in docs if d["kind"] != "ConfigMap")
    assert kinds == [
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
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


# --- the ServiceExport admission policy ------------------------------------------------

POLICY_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")


def _policy(values: list[str], namespace: str = "federation") -> list[dict[str, Any]]:
    docs = render("federation-agent", [*GOOD_VALUES["federation-agent"], *values], namespace)
    return [d for d in docs if d["kind"] in POLICY_KINDS]


def test_the_admission_policy_is_on_by_default_and_can_be_turned_off() -> None:
    policy, binding = _policy([])
    assert (policy["kind"], binding["kind"]) == POLICY_KINDS
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    for doc in (policy, binding):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "t"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("federation-agent-")
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["serviceexports"]  # not serviceexports/status: the agent's
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert _policy(["admissionPolicy.enabled=false"]) == []
    (_, warn) = _policy(["admissionPolicy.validationActions={Warn,Audit}"])
    assert warn["spec"]["validationActions"] == ["Warn", "Audit"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "admissionPolicy.validationActions={Deny,Warn}"],
         "Deny and Warn cannot be used together"),
        (["--kube-version", "1.29.4"], "Kubernetes 1.30 or later, this is v1.29.4"),
    ],
)  # fmt: skip
def test_the_admission_policy_says_what_it_cannot_do(args: list[str], message: str) -> None:
    chart = str(CHARTS / "federation-agent")
    done = helm("template", "t", chart, *sets(GOOD_VALUES["federation-agent"]), *args)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    done = helm(
        "template", "t", chart, *sets(GOOD_VALUES["federation-agent"]), *args,
        "--set", "admissionPolicy.enabled=false",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


#: (exportedLabels, exportedAnnotations, what the refusal names). Reserved keys aside,
#: the apiserver refuses each on an object's own metadata too.
REFUSED: list[tuple[dict[str, str], dict[str, str], str]] = [
    ({"tier": "web", "bad key!": "x"}, {}, "'bad key!' is not a valid label key"),
    ({"Example.com/tier": "web"}, {}, "'Example.com/tier' is not a valid label key"),
    ({"a/b/c": "v"}, {}, "'a/b/c' is not a valid label key"),
    ({"/tier": "v"}, {}, "'/tier' is not a valid label key"),
    ({"n" * 64: "v"}, {}, f"'{'n' * 64}' is not a valid label key"),
    ({"p" * 254 + "/n": "v"}, {}, "is not a valid label key"),
    ({"tier": "x" * 64}, {}, "the value of 'tier' is not a valid label value"),
    ({"tier": "web-"}, {}, "the value of 'tier' is not a valid label value"),
    ({}, {"bad key!": "x"}, "'bad key!' is not a valid annotation key"),
    ({}, {"big": "x" * (262144 - 2)}, "262145 bytes together"),
]
RESERVED: list[tuple[dict[str, str], dict[str, str], str]] = [
    ({"app.kubernetes.io/managed-by": "me"}, {}, "'app.kubernetes.io/managed-by' is written"),
    ({}, {"federation.dev/clusters": "a"}, "'federation.dev/clusters' is written"),
]
#: Accepted by the policy, the apiserver and the agent alike.
ACCEPTED: list[tuple[dict[str, str], dict[str, str]]] = [
    ({}, {}),
    ({"tier": "web", "example.com/team": "a_b.c", "empty": "", "n" * 63: "v" * 63}, {}),
    ({("p" * 63 + ".") * 3 + "p" * 61 + "/n": "v"}, {"Example.COM/Owner": "any: 24/7, a b"}),
    ({}, {"big": "x" * (262144 - 3)}),
]


def _export(name: str, labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if labels:
        spec["exportedLabels"] = labels
    if annotations:
        spec["exportedAnnotations"] = annotations
    return {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceExport",
        "metadata": {"name": name},
        "spec": spec,
    }


def _apply(
    cluster: LocalCluster, ns: str, obj: dict[str, Any], *args: str
) -> subprocess.CompletedProcess[str]:
    # Large annotations are created, not applied: kubectl apply would copy them into its
    # last-applied annotation, which the apiserver's own size limit then refuses.
    size = len(json.dumps(obj))
    verb = ["create"] if size > 100_000 else ["apply"]
    return cluster.kubectl(*verb, "-n", ns, *args, "-f", "-", input=json.dumps(obj), check=False)


@pytest.fixture(scope="module")
def policy_ns(local_env: LocalEnvironment) -> Iterator[str]:
    """A namespace of cluster ``a`` where the chart's policy, as rendered, is in force.

    Cluster-scoped names of its own and a binding to this namespace only (other tests
    share the cluster), removed at the end. ``old`` was exported with a bad key before
    the policy was installed.
    """
    cluster = local_env.cluster("a")
    ns = f"vap-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", ns)
    old = _apply(cluster, ns, _export("old", {"bad key!": "x"}, {"note": "a"}))
    assert old.returncode == 0, old.stderr
    policy, binding = _policy([], namespace=ns)
    policy["metadata"]["name"] += f"-{ns}"
    binding["metadata"]["name"] += f"-{ns}"
    binding["spec"]["policyName"] = policy["metadata"]["name"]
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
    }
    items = json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]})
    cluster.kubectl("apply", "-f", "-", input=items)
    try:
        # The apiserver takes up a new policy asynchronously: until it refuses a probe.
        probe = _export("probe", {"bad key!": "x"}, {})
        wait_until(
            lambda: _apply(cluster, ns, probe, "--dry-run=server").returncode != 0,
            timeout=30,
            what="the admission policy to be in force",
        )
        yield ns
    finally:
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=items, check=False)


@pytest.mark.parametrize(("labels", "annotations", "named"), REFUSED + RESERVED)
def test_kubectl_apply_of_bad_exported_metadata_is_refused_naming_the_key(
    local_env: LocalEnvironment,
    policy_ns: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    named: str,
) -> None:
    cluster = local_env.cluster("a")
    name = f"bad-{uuid.uuid4().hex[:6]}"
    done = _apply(cluster, policy_ns, _export(name, labels, annotations))
    assert done.returncode != 0
    assert "ValidatingAdmissionPolicy" in done.stderr and "denied request" in done.stderr
    assert named in done.stderr, done.stderr
    gone = cluster.kubectl("get", "serviceexport", "-n", policy_ns, name, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    # The agent holds back the same.
    assert objs.exported_metadata(_export(name, labels, annotations), None).problems


@pytest.mark.parametrize(("labels", "annotations", "named"), REFUSED)
def test_the_policy_refuses_what_the_apiserver_refuses_on_an_object(
    local_env: LocalEnvironment,
    policy_ns: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    named: str,
) -> None:
    """The same labels and annotations on a ServiceImport's own metadata: refused by the
    apiserver itself, so the policy's rules are Kubernetes' rules."""
    done = local_env.cluster("a").kubectl(
        "create", "--dry-run=server", "-n", policy_ns, "-f", "-", check=False,
        input=json.dumps(_import_with(labels, annotations)),
    )  # fmt: skip
    assert done.returncode != 0
    assert "metadata.labels" in done.stderr or "metadata.annotations" in done.stderr


def _import_with(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceImport",
        "metadata": {"name": "probe", "labels": labels, "annotations": annotations},
        "spec": {"type": "ClusterSetIP", "ports": [{"port": 80, "protocol": "TCP"}]},
    }


@pytest.mark.parametrize(("labels", "annotations"), ACCEPTED)
def test_valid_exported_metadata_is_accepted_by_the_policy_the_apiserver_and_the_agent(
    local_env: LocalEnvironment,
    policy_ns: str,
    labels: dict[str, str],
    annotations: dict[str, str],
) -> None:
    cluster = local_env.cluster("a")
    name = f"ok-{uuid.uuid4().hex[:6]}"
    done = _apply(cluster, policy_ns, _export(name, labels, annotations))
    assert done.returncode == 0, done.stderr
    on_object = cluster.kubectl(
        "create", "--dry-run=server", "-n", policy_ns, "-f", "-", check=False,
        input=json.dumps(_import_with(labels, annotations)),
    )  # fmt: skip
    assert on_object.returncode == 0, on_object.stderr
    assert not objs.exported_metadata(_export(name, labels, annotations), None).problems


def test_an_older_export_is_not_locked_by_the_policy(
    local_env: LocalEnvironment, policy_ns: str
) -> None:
    """``old`` had a bad key before the policy: writes that leave its labels alone go
    through, a change of its labels must make them valid."""
    cluster = local_env.cluster("a")
    relabel = cluster.kubectl(
        "label", "serviceexport", "-n", policy_ns, "old", "team=a", check=False
    )
    assert relabel.returncode == 0, relabel.stderr
    notes = _apply(cluster, policy_ns, _export("old", {"bad key!": "x"}, {"note": "b"}))
    assert notes.returncode == 0, notes.stderr
    worse = _apply(cluster, policy_ns, _export("old", {"bad key!": "x", "tier": "web"}, {}))
    assert worse.returncode != 0 and "'bad key!' is not a valid label key" in worse.stderr
    fixed = _apply(cluster, policy_ns, _export("old", {"tier": "web"}, {"note": "b"}))
    assert fixed.returncode == 0, fixed.stderr


def test_the_agent_serves_clusterset_dns_behind_a_service_on_port_53() -> None:
    docs = render("federation-agent", GOOD_VALUES["federation-agent"])
    (service,) = [
        d
        for d in docs
        if d["kind"] == "Service" and d["metadata"]["name"] == "t-federation-agent-dns"
    ]
    assert {(p["port"], p["protocol"], p["targetPort"]) for p in service["spec"]["ports"]} == {
        (53, "UDP", "dns"), (53, "TCP", "dns-tcp"),
    }  # fmt: skip
    (agent,) = [
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-federation-agent"
    ]
    (container,) = agent["spec"]["template"]["spec"]["containers"]
    assert "--dns-address=0.0.0.0:5353" in container["args"]
    named = {(p["name"], p["containerPort"], p.get("protocol", "TCP")) for p in container["ports"]}
    assert {("dns", 5353, "UDP"), ("dns-tcp", 5353, "TCP")} <= named
    # The Service selects the agent's pods.
    labels = agent["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    off = render("federation-agent", [*GOOD_VALUES["federation-agent"], "dns.enabled=false"])
    assert not [d for d in off if d["metadata"]["name"] == "t-federation-agent-dns"]
    (agent,) = [
        d
        for d in off
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-federation-agent"
    ]
    assert not any(
        "--dns-address" in a for a in agent["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_the_agent_serves_credentials_to_gateway_envoys_only_when_asked() -> None:
    """Basic auth and API keys: opt-in; the agent listens with its own certificate from
    a Secret, behind a Service that the infra manager's Envoys are told to dial."""

    def agent_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
        (agent,) = [
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"] == "t-federation-agent"
        ]
        return agent

    values = GOOD_VALUES["federation-agent"]
    off = render("federation-agent", values)
    assert not [d for d in off if d["metadata"]["name"] == "t-federation-agent-credentials"]
    args = agent_of(off)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if "credentials" in a or "agent-address" in a]
    docs = render("federation-agent", [*values, "gatewayEnvoys.credentials.enabled=true"])
    (service,) = [d for d in docs if d["metadata"]["name"] == "t-federation-agent-credentials"]
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (18443, "credentials")
    ]
    pod = agent_of(docs)["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert {
        "--credentials-address=0.0.0.0:18443",
        "--credentials-tls-dir=/etc/federation/credentials-tls",
        "--gateway-agent-address=t-federation-agent-credentials.federation.svc:18443",
    } <= set(container["args"])
    assert ("credentials", 18443) in {(p["name"], p["containerPort"]) for p in container["ports"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["credentials-tls"] == "/etc/federation/credentials-tls"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["credentials-tls"]["secret"]["secretName"] == "federation-agent-tls"
    # Credentials travel over mTLS only.
    plain = helm(
        "template",
        "t",
        str(CHARTS / "federation-agent"),
        *sets(
            [*values, "gatewayEnvoys.credentials.enabled=true", "gateway.insecurePlaintext=true"]
        ),
    )
    assert plain.returncode != 0 and "over mTLS only" in plain.stderr


def test_the_coredns_hooks_are_opt_in_and_may_touch_only_corednss_configmap() -> None:
    values = GOOD_VALUES["federation-agent"]
    assert not [d for d in render("federation-agent", values) if "coredns" in d["metadata"]["name"]]
    docs = render("federation-agent", [*values, "dns.coreDNS.manage=true"])
    hooks = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    add, remove = (
        hooks["t-federation-agent-coredns-add"],
        hooks["t-federation-agent-coredns-remove"],
    )
    assert (
        add["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade,post-rollback"
    )
    assert remove["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    (container,) = add["spec"]["template"]["spec"]["containers"]
    assert container["command"][-2:] == ["coredns", "add"]
    assert container["args"] == [
        "--configmap=kube-system/coredns", "--service=federation/t-federation-agent-dns",
    ]  # fmt: skip
    roles = [d for d in docs if d["kind"] == "Role" and "coredns" in d["metadata"]["name"]]
    rules = {
        (
            d["metadata"]["namespace"],
            r["resources"][0],
            *map(tuple, (r["resourceNames"], r["verbs"])),
        )
        for d in roles
        for r in d["rules"]
    }
    assert rules == {
        ("kube-system", "configmaps", ("coredns",), ("get", "patch")),
        ("federation", "services", ("t-federation-agent-dns",), ("get",)),
    }
    off = render("federation-agent", [*values, "dns.coreDNS.manage=true", "dns.enabled=false"])
    assert not [d for d in off if "coredns" in d["metadata"]["name"]]


def test_the_crd_chart_installs_envoy_gateways_policy_crds_unless_told_not_to() -> None:
    names = {d["metadata"]["name"] for d in render("federation-crds", [])}
    policies = {
        "backendtrafficpolicies.gateway.envoyproxy.io",
        "clienttrafficpolicies.gateway.envoyproxy.io",
        "envoypatchpolicies.gateway.envoyproxy.io",
        "securitypolicies.gateway.envoyproxy.io",
    }
    assert policies <= names
    # Where Envoy Gateway's own chart installed them, ours must not take them over.
    without = {
        d["metadata"]["name"]
        for d in render("federation-crds", ["envoyGatewayPolicies.install=false"])
    }
    assert without == names - policies
    btp = next(d for d in render("federation-crds", []) if d["metadata"]["name"] in policies)
    assert btp["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    columns = [c["name"] for c in btp["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Accepted", "Reason", "Gateway", "Age"]


def test_every_pod_the_charts_make_is_scraped_by_prometheus() -> None:
    """The hub and the agent on their /metrics, the cluster's Envoys on the ready port's
    /stats/prometheus (the admin interface stays on loopback); a pod annotation given in
    the values wins."""
    scraped = {}
    for chart, values in GOOD_VALUES.items():
        extra = ["agent.podAnnotations.prometheus\\.io/path=/custom"]
        for doc in render(chart, [*values, *(extra if chart == "federation-agent" else [])]):
            if doc["kind"] != "Deployment":
                continue
            pod = doc["spec"]["template"]
            annotations = pod["metadata"].get("annotations") or {}
            ports = {p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]}
            scrape = {k.removeprefix("prometheus.io/"): v for k, v in annotations.items()}
            assert int(scrape["port"]) in ports, (doc["metadata"]["name"], scrape)
            scraped[doc["metadata"]["name"]] = (scrape["scrape"], scrape["path"])
            args = [a for c in pod["spec"].get("initContainers", []) for a in c["args"]]
            if scrape["path"] == "/stats/prometheus":  # Envoy: its bootstrap has the listener
                assert f"--ready=0.0.0.0:{scrape['port']}" in args
    assert scraped == {
        "t-federation-hub": ("true", "/metrics"),
        "t-federation-agent": ("true", "/custom"),
        "t-federation-agent-gateway": ("true", "/stats/prometheus"),
    }


def test_the_hubs_extension_server_and_patch_flags_are_what_the_hub_parses() -> None:
    """The hub chart's extensionServer and envoyPatchPolicy values become flags the hub's
    own parser accepts as one valid extension server (its TLS files mounted from the
    Secret), and an address without hooks is refused at install."""
    from federation.cli import hub as hub_main

    values = [
        *GOOD_VALUES["federation-hub"],
        "envoyPatchPolicy.enabled=true",
        "extensionServer.address=ext.shop.svc:5005",
        "extensionServer.hooks={Route,Translation}",
        "extensionServer.translationTypes={clusters,routes}",
        "extensionServer.failOpen=true",
        "extensionServer.tls.secretName=ext-tls",
        "extensionServer.tls.clientCertificate=true",
    ]
    pod = _deployment(render("federation-hub", values), "hub")
    (container,) = pod["containers"]
    args = hub_main.parse_args(
        [a for a in container["args"] if not a.startswith(("--xds-", "--trust-domain"))]
    )
    settings = hub_main.extension_settings(args)
    assert args.enable_envoy_patch_policy
    assert settings is not None and settings.address == "ext.shop.svc:5005"
    assert [h.value for h in settings.hooks] == ["Route", "Translation"] and settings.fail_open
    assert str(settings.tls_key) == "/etc/federation/extension-tls/tls.key"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["extension-tls"] == "/etc/federation/extension-tls"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["extension-tls"]["secret"]["secretName"] == "ext-tls"
    plain = _deployment(render("federation-hub", GOOD_VALUES["federation-hub"]), "hub")
    assert not [a for a in plain["containers"][0]["args"] if "extension" in a or "patch" in a]
    done = helm(
        "template", "t", str(CHARTS / "federation-hub"),
        *sets([*GOOD_VALUES["federation-hub"], "extensionServer.address=ext:5005"]),
    )  # fmt: skip
    assert done.returncode != 0 and "extensionServer.hooks: name at least one hook" in done.stderr


def test_the_hub_runs_two_replicas_with_a_disruption_budget_by_default() -> None:
    """Replicas are identical, so two is the default, kept through node drains by a
    PodDisruptionBudget over the same pods; one replica has no budget (it would block
    every drain)."""
    docs = render("federation-hub", GOOD_VALUES["federation-hub"])
    (hub,) = [d for d in docs if d["kind"] == "Deployment"]
    (budget,) = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert hub["spec"]["replicas"] == 2
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == hub["spec"]["selector"]["matchLabels"]
    assert budget["apiVersion"] == "policy/v1"
    three = render("federation-hub", [*GOOD_VALUES["federation-hub"], "replicas=3"])
    assert [d["spec"]["replicas"] for d in three if d["kind"] == "Deployment"] == [3]
    # Preferably on different nodes, unless told otherwise.
    spread = hub["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = spread["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == budget["spec"]["selector"]["matchLabels"]
    )
    zone = "affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
    zone += ".nodeSelectorTerms[0].matchExpressions[0]"
    told = [f"{zone}.key=zone", f"{zone}.operator=In", f"{zone}.values={{z1}}"]
    (own,) = [
        d
        for d in render("federation-hub", [*GOOD_VALUES["federation-hub"], *told])
        if d["kind"] == "Deployment"
    ]
    assert list(own["spec"]["template"]["spec"]["affinity"]) == ["nodeAffinity"]
    for values in (["replicas=1"], ["podDisruptionBudget.enabled=false"]):
        docs = render("federation-hub", [*GOOD_VALUES["federation-hub"], *values])
        assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"], values
