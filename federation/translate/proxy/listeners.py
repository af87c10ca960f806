"""IR listeners into Envoy listeners: HTTP, and HTTPS with certificates named over SDS.

Called by :mod:`federation.translate.proxy` for every listener it serves, the clusterset's
and the Gateways'. Every listener's HTTP connection manager (:func:`connection_manager`,
the only one) gets its routes over RDS, runs the HTTP filters of the features in their
table's order (:mod:`.features`), allows WebSocket upgrades, applies no request timeout,
so long streams last as long as client and backend want, and logs every request as a
JSON line on Envoy's standard output (:mod:`.access_log`). A ClientTrafficPolicy's
settings change that (:mod:`.client`).

HTTPS: one filter chain per Gateway listener, chosen by SNI (``server_names``; none: the
catch-all chain), each terminating TLS with its certificates, and each with the
listener's route configuration or one of its own (:func:`route_configs`). A chain names
its certificates as SDS Secrets over ADS (:mod:`.secrets`), never inlines them: Envoy
reloads a renewed certificate only when it came over SDS, and the Secret holds file
paths only, so private keys never travel through the registry or xDS.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from federation.translate.ir import ClientIR, FilterChainIR, ListenerIR, VirtualHostIR
from federation.translate.proxy.access_log import add_access_log
from federation.translate.proxy.client import (
    CONNECTION_LIMIT,
    PROXY_PROTOCOL,
    connection_limit_filter,
    keepalive_options,
    patch_connection_manager,
    patch_tls,
    proxy_protocol_filter,
    validate_clients,
)
from federation.translate.proxy.common import HCM_FILTER, ads
from federation.translate.proxy.features import HTTP_FILTER_HOOKS
from federation.translate.proxy.secrets import DEFAULT_SECRET_DIR, secret_name

__all__ = [
    "DEFAULT_SECRET_DIR",
    "TLS_INSPECTOR",
    "TLS_TRANSPORT",
    "connection_manager",
    "listener",
    "route_config_name",
    "route_configs",
]

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TLS_TRANSPORT = "envoy.transport_sockets.tls"


def route_config_name(ir: ListenerIR) -> str:
    """The route configuration a listener gets over RDS (its chains without their own)."""
    return ir.route_config or ir.name


def route_configs(ir: ListenerIR) -> dict[str, tuple[VirtualHostIR, ...]]:
    """The virtual hosts of every route configuration the listener's chains use, by name:
    each chain's own, and the listener's when a chain has none (or it is plain HTTP)."""
    out = {c.route_config: c.virtual_hosts for c in ir.tls if c.route_config is not None}
    if not ir.tls or any(c.route_config is None for c in ir.tls):
        out[route_config_name(ir)] = ir.virtual_hosts
    return out


def connection_manager(ir: ListenerIR, routes: str | None = None) -> hcm_pb2.HttpConnectionManager:
    """The HTTP connection manager of every listener and chain, getting route
    configuration ``routes`` (None: the listener's); its stats are named after it."""
    routes = routes or route_config_name(ir)
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=routes.replace("/", "-").replace("*", "_"),
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=routes),
    )
    hcm.upgrade_configs.add(upgrade_type="websocket")
    add_access_log(hcm, ir.access_logs)
    if ir.client is not None:
        patch_connection_manager(ir.client, hcm)
    for hook in HTTP_FILTER_HOOKS:
        hcm.http_filters.extend(hook(ir))
    return hcm


def _tls(chain: FilterChainIR, client: ClientIR | None) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    for cert in chain.certificates:
        context.common_tls_context.tls_certificate_sds_secret_configs.add(
            name=secret_name(cert), sds_config=ads()
        )
    context.common_tls_context.alpn_protocols.extend(["h2", "http/1.1"])
    context.common_tls_context.tls_params.tls_minimum_protocol_version = (
        common_pb2.TlsParameters.TLSv1_2
    )
    if chain.client_validation is not None:
        validate_clients(context, chain.client_validation)
    if client is not None:
        patch_tls(client, context)
    return context


def listener(ir: ListenerIR, host: str, secret_dir: str | None = None) -> listener_pb2.Listener:
    """``ir`` bound to its own address, else to ``host`` (the node group's).

    ``secret_dir`` is unused (still accepted from older callers): where certificates are
    read is their Secrets' business (:func:`.secrets.certificate_secret`).
    """
    address = ir.address or host
    out = listener_pb2.Listener(
        name=ir.name,
        address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(
                address=address, port_value=ir.bind_port or ir.port
            )
        ),
    )
    if ir.client is not None:
        out.socket_options.extend(keepalive_options(ir.client))
        proxy_protocol = proxy_protocol_filter(ir.client)
        if proxy_protocol is not None:  # first: the header precedes the TLS handshake
            added = out.listener_filters.add(name=PROXY_PROTOCOL)
            added.typed_config.Pack(proxy_protocol, deterministic=True)
    shared = connection_manager(ir)
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
            chain.transport_socket.typed_config.Pack(_tls(chain_ir, ir.client), deterministic=True)
        own = None if chain_ir is None else chain_ir.route_config
        hcm = shared if own is None else connection_manager(ir, own)
        limit = None if ir.client is None else connection_limit_filter(ir.client, hcm.stat_prefix)
        if limit is not None:
            chain.filters.add(name=CONNECTION_LIMIT).typed_config.Pack(limit, deterministic=True)
        hcm_filter = chain.filters.add(name=HCM_FILTER)
        hcm_filter.typed_config.Pack(hcm, deterministic=True)
    return out
