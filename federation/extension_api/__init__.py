"""Envoy Gateway's extension protocol (``envoygateway.extension``, Envoy Gateway v1.9.1):
the service an extension server implements and the hub calls
(:mod:`federation.hub.extension`).

The stubs are generated when the project is set up (``python -m e2e.toolchain``, which
the README's two commands run) from ``proto/extension`` of the
``github.com/envoyproxy/gateway`` Go module, into ``generated/`` (ignored by git), so that
an existing extension server works unchanged and nothing upstream is copied here.
:func:`stubs` imports them, with a clear error when they were not generated.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from federation.errors import FederationError

#: Where the set-up writes the generated modules.
GENERATED = Path(__file__).parent / "generated"


@dataclass(frozen=True)
class Stubs:
    #: The request and response messages (``service_pb2``).
    messages: ModuleType
    #: The context messages (``context_pb2``).
    context: ModuleType
    #: The gRPC client and server classes (``service_pb2_grpc``).
    grpc: ModuleType


def stubs() -> Stubs:
    """The generated modules; FederationError when the set-up did not generate them."""
    try:
        return Stubs(
            importlib.import_module(f"{__name__}.generated.service_pb2"),
            importlib.import_module(f"{__name__}.generated.context_pb2"),
            importlib.import_module(f"{__name__}.generated.service_pb2_grpc"),
        )
    except ImportError as err:
        raise FederationError(
            f"Envoy Gateway's extension protocol stubs are missing ({err}): run "
            "`python -m e2e.toolchain` in the repository (the README's set-up does), which "
            f"generates them into {GENERATED}"
        ) from err
