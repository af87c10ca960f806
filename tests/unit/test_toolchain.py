"""The toolchain's pure parts: wrapper modules, build command lines and tool lookup
errors; and the Gateway API conformance suite's command line and images."""

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import gateway_conformance, images, toolchain

K8S_GOMOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
\tgo.etcd.io/etcd/client/v3 v3.6.8
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kms => ./staging/src/k8s.io/kms
)
"""


def test_staging_modules_are_replaced_by_their_release() -> None:
    assert toolchain.staging_replaces(K8S_GOMOD, "v1.36.3") == [
        "k8s.io/api => k8s.io/api v0.36.3",
        "k8s.io/client-go => k8s.io/client-go v0.36.3",
        "k8s.io/kms => k8s.io/kms v0.36.3",
    ]


def test_staging_replaces_refuses_a_gomod_without_staging() -> None:
    with pytest.raises(toolchain.ToolchainError, match="staging"):
        toolchain.staging_replaces("module x\n\ngo 1.22\n", "v1.36.3")


def test_wrapper_module_requires_the_release_and_reaches_the_command_as_a_tool() -> None:
    tool = next(t for t in toolchain.PINS if t.name == "kube-apiserver")
    gomod = toolchain.wrapper_gomod(tool, K8S_GOMOD)
    assert f"require k8s.io/kubernetes {tool.version}\n" in gomod
    assert "tool k8s.io/kubernetes/cmd/kube-apiserver\n" in gomod
    assert "go 1.26.0\n" in gomod
    assert "\tk8s.io/kms => k8s.io/kms v0.36.3\n" in gomod


def test_kubernetes_build_is_stamped_with_its_version() -> None:
    tool = next(t for t in toolchain.PINS if t.name == "kube-apiserver")
    assert f"k8s.io/component-base/version.gitVersion={tool.version}" in tool.version_vars
    assert "k8s.io/component-base/version.gitMinor=36" in tool.version_vars


def test_binaries_are_cached_outside_the_tree_keyed_by_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDERATION_CACHE", str(tmp_path))
    etcd = next(t for t in toolchain.PINS if t.name == "etcd")
    assert toolchain.binary_path(etcd) == tmp_path / "bin" / f"etcd-{etcd.version}" / "etcd"


def test_locate_fails_loudly_when_a_component_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDERATION_CACHE", str(tmp_path))
    with pytest.raises(toolchain.ToolchainError, match=r"not built yet; run \./e2e/dev setup"):
        toolchain.locate()


# --- the Gateway API conformance suite ---------------------------------------------------

CONFORMANCE_GOMOD = """module sigs.k8s.io/gateway-api/conformance

go 1.26.0

replace sigs.k8s.io/gateway-api => ../

require sigs.k8s.io/gateway-api v0.0.0-00010101000000-000000000000
"""


def _pin(name: str) -> toolchain.GoTool:
    return next(t for t in toolchain.GATEWAY_CONFORMANCE_PINS if t.name == name)


def test_conformance_wrapper_requires_the_api_module_its_own_replace_reached() -> None:
    for name in ("gateway-conformance", "echo-basic"):
        tool = _pin(name)
        gomod = toolchain.wrapper_gomod(tool, CONFORMANCE_GOMOD)
        assert f"require sigs.k8s.io/gateway-api/conformance {tool.version}\n" in gomod
        assert f"require sigs.k8s.io/gateway-api {toolchain.GATEWAY_API_VERSION}\n" in gomod
        assert f"tool {tool.package}\n" in gomod
        assert "replace" not in gomod
        assert "go 1.26.0\n" in gomod


def test_conformance_suite_is_at_the_crds_release() -> None:
    for tool in toolchain.GATEWAY_CONFORMANCE_PINS:
        assert tool.version == toolchain.GATEWAY_API_VERSION
    assert _pin("gateway-conformance").package == "sigs.k8s.io/gateway-api/conformance"
    assert _pin("echo-basic").package == "sigs.k8s.io/gateway-api/conformance/echo-basic"


def test_test_binary_is_compiled_with_go_test_and_named_like_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDERATION_CACHE", str(tmp_path))
    suite = _pin("gateway-conformance")
    assert toolchain.binary_path(suite) == (
        tmp_path / "bin" / "gateway-conformance-v1.6.3" / "gateway-conformance.test"
    )
    out = tmp_path / "out"
    assert toolchain.go_build_argv("go", suite, out) == [
        "go", "test", "-c", "-trimpath", "-ldflags", "-s -w", "-o", str(out),
        "sigs.k8s.io/gateway-api/conformance",
    ]  # fmt: skip
    assert toolchain.go_build_env(suite) == {}


def test_echo_basic_is_a_static_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDERATION_CACHE", str(tmp_path))
    echo = _pin("echo-basic")
    assert toolchain.binary_path(echo) == tmp_path / "bin" / "echo-basic-v1.6.3" / "echo-basic"
    argv = toolchain.go_build_argv("go", echo, tmp_path / "out")
    assert argv[:2] == ["go", "build"]
    assert argv[-1] == "sigs.k8s.io/gateway-api/conformance/echo-basic"
    assert toolchain.go_build_env(echo) == {"CGO_ENABLED": "0"}


def test_commands_keep_their_build_and_version_stamps() -> None:
    apiserver = next(t for t in toolchain.PINS if t.name == "kube-apiserver")
    argv = toolchain.go_build_argv("go", apiserver, Path("/o"))
    assert argv[:2] == ["go", "build"]
    ldflags = argv[argv.index("-ldflags") + 1]
    assert ldflags.startswith("-s -w -X k8s.io/component-base/version.gitVersion=v1.36.3")
    assert toolchain.go_build_env(apiserver) == {}


def test_setup_builds_the_gateway_suite_with_the_node_tier_tests_only() -> None:
    full = [t.name for t in toolchain.setup_steps(nodes=True, test_tools=True)]
    assert full[-2:] == ["gateway-conformance", "echo-basic"]
    assert full.index("coredns") < full.index("gateway-conformance")
    assert len(full) == len(set(full))
    no_nodes = [t.name for t in toolchain.setup_steps(nodes=False, test_tools=True)]
    assert no_nodes == ["etcd", "kube-apiserver", "helm"]
    demo = [t.name for t in toolchain.setup_steps(nodes=False, test_tools=False)]
    assert demo == ["etcd", "kube-apiserver"]
    assert "gateway-conformance" not in [
        t.name for t in toolchain.setup_steps(nodes=True, test_tools=False)
    ]


def test_locating_the_gateway_suite_before_it_is_built_says_to_run_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDERATION_CACHE", str(tmp_path))
    with pytest.raises(toolchain.ToolchainError, match=r"gateway-conformance .* run \./e2e/dev"):
        toolchain.locate_gateway_conformance()


IMPLEMENTATION = gateway_conformance.Implementation(
    organization="federation",
    project="federation",
    url="https://example.invalid/federation",
    version="0.1.0",
    contact=("@federation/maintainers",),
)


def test_suite_command_line_passes_the_profiles_core_features() -> None:
    argv = gateway_conformance.suite_argv(
        Path("/bin/gateway-conformance.test"),
        kubeconfig=Path("/tmp/kubeconfig"),
        gateway_class="federation",
    )
    assert argv == [
        "/bin/gateway-conformance.test",
        "-test.run=^TestConformance$",
        "-test.v",
        "-test.timeout=3600s",
        "-kubeconfig=/tmp/kubeconfig",
        "-gateway-class=federation",
        "-supported-features=GRPCRoute,Gateway,HTTPRoute,ReferenceGrant",
        "-conformance-profiles=GATEWAY-HTTP,GATEWAY-GRPC",
    ]


def test_suite_command_line_can_leave_the_features_to_the_gateway_class() -> None:
    argv = gateway_conformance.suite_argv(
        Path("suite.test"), kubeconfig=Path("kc"), gateway_class="federation",
        supported_features=None,
    )  # fmt: skip
    assert not [a for a in argv if a.startswith("-supported-features")]


def test_suite_command_line_with_a_report_names_the_implementation() -> None:
    argv = gateway_conformance.suite_argv(
        Path("suite.test"),
        kubeconfig=Path("kc"),
        gateway_class="federation",
        profiles=("GATEWAY-HTTP",),
        supported_features=("HTTPRouteQueryParamMatching", "Gateway", "HTTPRoute"),
        skip_tests=("HTTPRouteTimeoutRequest", "GatewayWithAttachedRoutes"),
        report=Path("/tmp/report.yaml"),
        implementation=IMPLEMENTATION,
        timeout_s=600,
        cleanup_base_resources=False,
    )
    assert "-supported-features=Gateway,HTTPRoute,HTTPRouteQueryParamMatching" in argv
    assert "-conformance-profiles=GATEWAY-HTTP" in argv
    assert "-skip-tests=GatewayWithAttachedRoutes,HTTPRouteTimeoutRequest" in argv
    assert "-test.timeout=600s" in argv
    assert argv[-7:] == [
        "-report-output=/tmp/report.yaml",
        "-organization=federation",
        "-project=federation",
        "-url=https://example.invalid/federation",
        "-version=0.1.0",
        "-contact=@federation/maintainers",
        "-cleanup-base-resources=false",
    ]


def test_suite_command_line_refuses_what_the_suite_would_stop_on() -> None:
    kwargs: dict[str, Any] = {"kubeconfig": Path("kc"), "gateway_class": "federation"}
    with pytest.raises(ValueError, match="implementation"):
        gateway_conformance.suite_argv(Path("s"), report=Path("r.yaml"), **kwargs)
    with pytest.raises(ValueError, match="every detail"):
        gateway_conformance.suite_argv(
            Path("s"),
            report=Path("r.yaml"),
            implementation=dataclasses.replace(IMPLEMENTATION, contact=()),
            **kwargs,
        )
    with pytest.raises(ValueError, match=r"unknown .*MESH-HTTP"):
        gateway_conformance.suite_argv(Path("s"), profiles=("MESH-HTTP",), **kwargs)
    with pytest.raises(ValueError, match="at least one"):
        gateway_conformance.suite_argv(Path("s"), profiles=(), **kwargs)
    one = gateway_conformance.suite_argv(
        Path("s"), profiles=(), run_test="HTTPRouteSimpleSameNamespace", **kwargs
    )
    assert "-run-test=HTTPRouteSimpleSameNamespace" in one
    assert not any(arg.startswith("-conformance-profiles") for arg in one)


MANIFEST = """apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      containers:
        - name: infra-backend-v1
          # image: not/this:one
          image: registry.k8s.io/gateway-api/echo-basic:v1.5.1
        - image: "registry.k8s.io/coredns/coredns:v1.12.2"
          name: coredns
      initContainers:
      - image: 'example.local/init:1'  # a comment
"""


def test_image_references_are_read_with_their_lines() -> None:
    assert gateway_conformance.image_references(MANIFEST) == [
        (9, "registry.k8s.io/gateway-api/echo-basic:v1.5.1"),
        (10, "registry.k8s.io/coredns/coredns:v1.12.2"),
        (13, "example.local/init:1"),
    ]


def test_suite_images_say_where_each_is_used_and_which_are_not_provided(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "manifests.yaml").write_text(MANIFEST)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "tcproute.yaml").write_text(
        "      containers:\n        - image: registry.k8s.io/gateway-api/echo-basic:v1.5.1\n"
    )
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "manifests.yaml").write_text("  image: example.local/mesh:1\n")
    found = gateway_conformance.suite_images(tmp_path)
    assert found == {
        "registry.k8s.io/gateway-api/echo-basic:v1.5.1": [
            "base/manifests.yaml:9",
            "tests/tcproute.yaml:2",
        ],
        "registry.k8s.io/coredns/coredns:v1.12.2": ["base/manifests.yaml:10"],
        "example.local/init:1": ["base/manifests.yaml:13"],
    }
    assert gateway_conformance.unprovided(found, images.GATEWAY_CONFORMANCE_IMAGES) == [
        "example.local/init:1 (base/manifests.yaml:13)"
    ]


def test_echo_basic_images_carry_the_suites_tags_and_run_as_upstreams() -> None:
    assert images.ECHO_BASIC == (
        "registry.k8s.io/gateway-api/echo-basic:v1.5.1",
        "registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2",
        "registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.3",
    )
    assert images.CONFORMANCE_COREDNS in images.GATEWAY_CONFORMANCE_IMAGES


def test_image_user_is_written_into_its_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDERATION_CACHE", str(tmp_path))
    layer = images._files_layer("echo", {"/echo-basic": b"\x7fELF"})
    for user, expected in (("65532:65532", "65532:65532"), ("", None)):
        image = images.Image("example.local/e:1", (layer,), entrypoint=("/echo-basic",), user=user)
        manifest = json.loads(image.manifest().path.read_text())
        config = json.loads(images.blob_path(manifest["config"]["digest"]).read_text())
        assert config["config"].get("User") == expected


REPORT = """
apiVersion: gateway.networking.k8s.io/v1
kind: ConformanceReport
gatewayAPIChannel: standard
gatewayAPIVersion: v1.6.3
profiles:
- core:
    failedTests:
    - HTTPRouteHostnameIntersection
    result: failure
    statistics:
      Failed: 1
      Passed: 30
      Skipped: 0
  name: GATEWAY-HTTP
  summary: Core tests failed with 1 test failures.
  extended:
    result: success
    statistics:
      Failed: 0
      Passed: 0
      Skipped: 0
    unsupportedFeatures:
    - HTTPRouteQueryParamMatching
- core:
    result: success
    statistics:
      Failed: 0
      Passed: 12
      Skipped: 0
  name: GATEWAY-GRPC
  summary: Core tests succeeded.
"""

OUTPUT = """=== RUN   TestConformance
    conformance.go:120: 2026-01-02T03:04:05.123456789Z: Running conformance tests with:
=== RUN   TestConformance/GatewaySecretReferenceGrantAllInNamespace
=== PAUSE TestConformance/GatewaySecretReferenceGrantAllInNamespace
=== RUN   TestConformance/HTTPRouteHostnameIntersection
=== RUN   TestConformance/HTTPRouteHostnameIntersection/0_request_to_'/s1'
    http.go:240: 2026-01-02T03:04:06Z: Request passed
=== NAME  TestConformance/HTTPRouteHostnameIntersection
    helpers.go:300: 2026-01-02T03:04:06Z: Accepted was False, expected True
    helpers.go:320:
        \tError Trace:\t/go/helpers.go:320
        \t            \t\t\t\t/go/hostname.go:55
        \tError:      \tReceived unexpected error:
        \t            \tcontext deadline exceeded
        \tTest:       \tTestConformance/HTTPRouteHostnameIntersection
        \tMessages:   \tHTTPRoute conditions never matched
=== RUN   TestConformance/HTTPRouteTimeout
    timeout.go:50: 2026-01-02T03:04:07Z: Applying tests/httproute-timeout.yaml
    timeout.go:66: 2026-01-02T03:04:37Z: timed out waiting for 504, got 200
=== CONT  TestConformance/GatewaySecretReferenceGrantAllInNamespace
    gateway.go:10: 2026-01-02T03:04:08Z: ok
=== RUN   TestConformance/HTTPRouteQueryParamMatching
    conformance.go:56: Skipping HTTPRouteQueryParamMatching: suite does not support it
--- FAIL: TestConformance (60.00s)
    --- FAIL: TestConformance/HTTPRouteHostnameIntersection (12.00s)
        --- PASS: TestConformance/HTTPRouteHostnameIntersection/0_request_to_'/s1' (0.1s)
    --- FAIL: TestConformance/HTTPRouteTimeout (30.00s)
    --- SKIP: TestConformance/HTTPRouteQueryParamMatching (0.00s)
    --- PASS: TestConformance/GatewaySecretReferenceGrantAllInNamespace (1.00s)
FAIL
"""


def test_report_totals_per_profile_and_level() -> None:
    import yaml

    profiles = gateway_conformance.read_report(yaml.safe_load(REPORT))
    http, grpc = profiles["GATEWAY-HTTP"], profiles["GATEWAY-GRPC"]
    core = (http.core.result, http.core.passed, http.core.failed, http.core.skipped)
    assert core == ("failure", 30, 1, 0)
    assert http.core.failed_tests == ["HTTPRouteHostnameIntersection"]
    assert http.extended is not None and http.extended.passed == 0
    assert http.unsupported_features == ["HTTPRouteQueryParamMatching"]
    assert (grpc.core.result, grpc.core.passed, grpc.extended) == ("success", 12, None)


def test_suite_output_gives_each_tests_result_and_first_error() -> None:
    output = gateway_conformance.SuiteOutput.parse(OUTPUT)
    assert output.tests() == {
        "HTTPRouteHostnameIntersection": "FAIL",
        "HTTPRouteTimeout": "FAIL",
        "HTTPRouteQueryParamMatching": "SKIP",
        "GatewaySecretReferenceGrantAllInNamespace": "PASS",
    }
    assert output.first_error("HTTPRouteHostnameIntersection") == (
        "Received unexpected error: context deadline exceeded "
        "(HTTPRoute conditions never matched); last logged: Accepted was False, expected True"
    )
    # No testify assertion: the last line the failed test logged, without its timestamp.
    assert output.first_error("HTTPRouteTimeout") == "timed out waiting for 504, got 200"
    assert output.first_error("Nothing").startswith("(no error line")


def _policy_crd(kind: str, messages: list[str]) -> str:
    rules = [{"message": m, "rule": "upstream"} for m in messages]
    crd = {
        "spec": {
            "names": {"kind": kind},
            "versions": [
                {
                    "name": "v1alpha1",
                    "schema": {
                        "openAPIV3Schema": {
                            "properties": {"spec": {"x-kubernetes-validations": rules}}
                        }
                    },
                }
            ],
        }
    }
    return str(yaml.safe_dump(crd))


def test_policy_crds_get_printer_columns_and_btp_admits_a_serviceimport_target() -> None:
    other = "mergeType can only be used with xRoute targets"
    text = toolchain.adapted_crd(
        _policy_crd("BackendTrafficPolicy", [*toolchain.SERVICE_IMPORT_TARGETS, other])
    )
    (version,) = yaml.safe_load(text)["spec"]["versions"]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == ["Accepted", "Reason", "Gateway", "Age"]
    rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert all("ServiceImport" in r["rule"] for r in rules[:2])
    assert rules[2] == {"message": other, "rule": "upstream"}  # nothing else changes
    # Other policies keep their rules; a BackendTrafficPolicy whose rules moved is refused.
    plain = toolchain.adapted_crd(
        _policy_crd("SecurityPolicy", list(toolchain.SERVICE_IMPORT_TARGETS))
    )
    assert "ServiceImport" not in plain
    with pytest.raises(toolchain.ToolchainError, match="0 of the 2 targetRefs rules"):
        toolchain.adapted_crd(_policy_crd("BackendTrafficPolicy", [other]))
