"""Python stubs of Envoy Gateway's extension protocol, generated at set-up time.

The protocol (``proto/extension/service.proto`` and ``context.proto``) is read from the
``github.com/envoyproxy/gateway`` Go module in the module cache (as its CRDs are) and
compiled with grpcio-tools' protoc into :data:`federation.extension_api.GENERATED`, which
git ignores: nothing upstream is kept in the repository. Its imports of Envoy's protos
resolve against the descriptors the ``xds-protos`` wheel already registers (the messages
the hub serves), handed to protoc as a descriptor set, so no Envoy ``.proto`` file is
needed. The generated ``from proto.extension import ...`` lines are pointed at this
package, so that no top-level ``proto`` package is created.

Run by ``python -m e2e.toolchain`` (:func:`e2e.toolchain.stage_extension_stubs`); rewrites
only what changed.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

from e2e.toolchain import write_if_changed

#: The extension protocol's files, inside the Envoy Gateway module.
PROTOS = ("proto/extension/context.proto", "proto/extension/service.proto")
#: The Envoy messages service.proto imports (each module's descriptor and its imports).
ENVOY_MODULES = (
    "envoy.config.cluster.v3.cluster_pb2",
    "envoy.config.endpoint.v3.endpoint_pb2",
    "envoy.config.listener.v3.listener_pb2",
    "envoy.config.route.v3.route_components_pb2",
    "envoy.config.route.v3.route_pb2",
    "envoy.extensions.transport_sockets.tls.v3.secret_pb2",
)
GENERATED_FILES = ("context_pb2.py", "service_pb2.py", "service_pb2_grpc.py")
PACKAGE = "federation.extension_api.generated"


class StubError(RuntimeError):
    pass


def envoy_descriptor_set() -> bytes:
    """A FileDescriptorSet of :data:`ENVOY_MODULES` and everything they import, in
    dependency order (what protoc's ``--descriptor_set_in`` wants)."""
    ordered: list[descriptor_pb2.FileDescriptorProto] = []
    seen: set[str] = set()

    def visit(file: Any) -> None:  # a protobuf FileDescriptor
        if file.name in seen:
            return
        seen.add(file.name)
        for dependency in file.dependencies:
            visit(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        ordered.append(proto)

    for module in ENVOY_MODULES:
        visit(importlib.import_module(module).DESCRIPTOR)
    data: bytes = descriptor_pb2.FileDescriptorSet(file=ordered).SerializeToString()
    return data


def generate(module_dir: Path, target: Path) -> tuple[Path, ...]:
    """Compile the protocol of the Envoy Gateway module at ``module_dir`` into
    ``target`` (a package); rewrite only the files whose content changed."""
    missing = [p for p in PROTOS if not (module_dir / p).is_file()]
    if missing:
        raise StubError(f"{module_dir} has no {', '.join(missing)}")
    with tempfile.TemporaryDirectory(prefix="extension-stubs-") as scratch:
        work = Path(scratch)
        deps = work / "envoy.pb"
        deps.write_bytes(envoy_descriptor_set())
        result = subprocess.run(
            [
                sys.executable, "-m", "grpc_tools.protoc",
                f"--descriptor_set_in={deps}", f"-I{module_dir}",
                f"--python_out={work}", f"--grpc_python_out={work}",
                *PROTOS,
            ],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise StubError(f"protoc failed: {result.stderr.strip() or result.stdout.strip()}")
        target.mkdir(parents=True, exist_ok=True)
        written = []
        for name in ("__init__.py", *GENERATED_FILES):
            source = work / "proto" / "extension" / name
            text = "" if name == "__init__.py" else source.read_text()
            text = text.replace("from proto.extension import", f"from {PACKAGE} import")
            write_if_changed(target / name, text.encode())
            written.append(target / name)
    return tuple(written)
