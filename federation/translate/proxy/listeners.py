"""IR listeners into Envoy listeners: HTTP, and HTTPS with certificates read from disk.

Called by :mod:`federation.translate.proxy` for every listener it serves, the clusterset's
and the Gateways'. Every listener's HTTP connection manager (:func:`connection_manager`,
the only one) gets its routes over RDS, runs the HTTP filters of the features in their
table's order (:mod:`.features`), allows WebSocket upgrades and applies no request timeout,
so long streams last as long as client and backend want.

HTTPS: one filter chain per Gateway listener, chosen by SNI (``server_names``; none: the
catch-all chain), each terminating TLS with its certificates. Private keys never travel
through the registry or xDS: Envoy reads ``<secret dir>/<namespace>/<name>/tls.crt`` and
``tls.key`` from its own disk, where the Secret is mounted, and watches the directory,
so a renewed certificate is picked up without a configuration change.
"""

from __future__ import annotations

import posixpath

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from federation.translate.ir import CertificateIR, FilterChainIR, ListenerIR
from federation.translate.proxy.common import HCM_FILTER, ads
from federation.translate.proxy.features import HTTP_FILTER_HOOKS

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TLS_TRANSPORT = "envoy.transport_sockets.tls"
#: Where Envoys find mounted certificate Secrets unless told otherwise.
DEFAULT_SECRET_DIR = "/etc/federation/secrets"


def route_config_name(ir: ListenerIR) -> str:
    """The route configuration a listener gets over RDS."""
    return ir.route_config or ir.name


def connection_manager(ir: ListenerIR) -> hcm_pb2.HttpConnectionManager:
    """The HTTP connection manager of every listener; its stats are named after its routes."""
    routes = route_config_name(ir)
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=routes.replace("/", "-"),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=routes),
    )
    hcm.upgrade_configs.add(upgrade_type="websocket")
    for hook in HTTP_FILTER_HOOKS:
        http_filter = hook(ir)
        if http_filter is not None:
            hcm.http_filters.append(http_filter)
    return hcm


def certificate_paths(cert: CertificateIR, secret_dir: str) -> tuple[str, str, str]:
    """(directory, certificate chain, private key) of a mounted TLS Secret."""
    directory = posixpath.join(secret_dir, cert.namespace, cert.name)
    return directory, posixpath.join(directory, "tls.crt"), posixpath.join(directory, "tls.key")


def _tls(chain: FilterChainIR, secret_dir: str) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    for cert in chain.certificates:
        directory, crt, key = certificate_paths(cert, secret_dir)
        context.common_tls_context.tls_certificates.add(
            certificate_chain=base_pb2.DataSource(filename=crt),
            private_key=base_pb2.DataSource(filename=key),
            watched_directory=base_pb2.WatchedDirectory(path=directory),
        )
    context.common_tls_context.alpn_protocols.extend(["h2", "http/1.1"])
    context.common_tls_context.tls_params.tls_minimum_protocol_version = (
        common_pb2.TlsParameters.TLSv1_2
    )
    return context


def listener(ir: ListenerIR, host: str, secret_dir: str) -> listener_pb2.Listener:
    """``ir`` bound to its own address, else to ``host`` (the node group's)."""
    address = ir.address or host
    out = listener_pb2.Listener(
        name=ir.name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=address, port_value=ir.port)
        ),
    )
    hcm = connection_manager(ir)
    chains: list[FilterChainIR | None] = list(ir.tls) if ir.tls else [None]
    if ir.tls:
        inspector = out.listener_filters.add(name=TLS_INSPECTOR)
        inspector.typed_config.Pack(tls_inspector_pb2.TlsInspector(), deterministic=True)
    for chain_ir in chains:
        chain = out.filter_chains.add()
        if chain_ir is not None:
            chain.filter_chain_match.CopyFrom(
                listener_components_pb2.FilterChainMatch(server_names=list(chain_ir.server_names))
            )
            chain.transport_socket.name = TLS_TRANSPORT
            chain.transport_socket.typed_config.Pack(_tls(chain_ir, secret_dir), deterministic=True)
        hcm_filter = chain.filters.add(name=HCM_FILTER)
        hcm_filter.typed_config.Pack(hcm, deterministic=True)
    return out
