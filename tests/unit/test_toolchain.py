"""The toolchain's pure parts: wrapper modules and tool lookup errors."""

from pathlib import Path

import pytest

from e2e import toolchain

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
