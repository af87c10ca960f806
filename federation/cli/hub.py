"""``federation-hub``: serves the whole clusterset to every Envoy over xDS.

    FEDERATION_REGISTRY_URL=redis://hub:PASSWORD@host:6379/0 \\
    federation-hub --xds-address 0.0.0.0:18000 --http-address 127.0.0.1:18080 \\
        --xds-tls-cert hub.crt --xds-tls-key hub.key --xds-client-ca ca.crt \\
        [--listener-address [CLUSTER=]HOST:PORT ...] [--ip-family [CLUSTER=]IPv4|IPv6 ...]
        [--address-map CLUSTER=FROM_CIDR=TO_CIDR ...]

The xDS port serves mTLS: every Envoy presents a client certificate signed by the client
CA and naming its cluster (``spiffe://<trust domain>/cluster/<id>``, see
``fedctl pki``), and is served that cluster's configuration only. The files are re-read
for new connections when they change. Plain text, where any client may claim any
cluster, needs ``--insecure-xds-plaintext``.

Parses arguments and wires the hub's core (:mod:`federation.hub`) to the ADS server
(:mod:`federation.xds.server`): the hub follows the registry and keeps every node group's
snapshot current; until it has loaded the whole registry it serves nothing and
``/readyz`` says 503.

HTTP (``--http-address``, loopback by default): ``/healthz``, ``/readyz``,
``/metrics`` and ``/debug/proxy-status`` (what ``fedctl proxy-status`` reads).

The registry URL, with the hub's read-only credentials, comes from the environment
variable ``FEDERATION_REGISTRY_URL``, never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

import grpc

from federation.errors import InvalidInputError
from federation.hub.core import Hub
from federation.hub.extension import (
    DEFAULT_TRANSLATION_TYPES,
    TRANSLATION_TYPES,
    ExtensionSettings,
    ExtensionStage,
    Hook,
)
from federation.hub.http import serve_hub_http
from federation.hub.snapshots import DEFAULT_LISTENER, SnapshotOptions
from federation.pki import DEFAULT_TRUST_DOMAIN, check_trust_domain
from federation.process import configure_logging, run_until_stopped, split_host_port
from federation.registry.hub_state import RedisHubState
from federation.registry.location import registry_location
from federation.registry.redis_store import RedisReader
from federation.translate.clusterset import check_listener_address
from federation.translate.gateway.patches import ENABLE_FLAG
from federation.translate.inputs import (
    DEFAULT_IP_FAMILY,
    TranslateOptions,
    address_maps_from_flags,
    ip_families_from_flags,
)
from federation.translate.proxy import DEFAULT_SECRET_DIR
from federation.xds.peers import CertificateGroup, NodeGroup, ServerLimits, claimed_group
from federation.xds.server import serve
from federation.xds.snapshot import SnapshotCache
from federation.xds.status import SyncRegistry, XdsMetrics
from federation.xds.stream import StreamSettings
from federation.xds.tls import TlsFiles, reloading_credentials

log = logging.getLogger("federation.hub")


def _listener_flags(values: Sequence[str]) -> tuple[dict[str, str], str | None]:
    """``--listener-address [CLUSTER=]IP:PORT`` values, checked now with the translator's
    own rule, so that a bad flag stops the hub at start instead of at its first build."""
    per_cluster: dict[str, str] = {}
    default = None
    for value in values:
        cluster, sep, address = value.partition("=")
        if not sep:
            default = address = value
        else:
            per_cluster[cluster] = address
        what = "--listener-address" + (f" for {cluster}" if sep else "")
        host, port = split_host_port(address, what)
        try:
            check_listener_address(host, port)
        except InvalidInputError as err:
            raise InvalidInputError(f"{what}: {err}") from err
        if ipaddress.ip_address(host).is_unspecified:
            log.warning(
                "%s %s listens on every address of the Envoy's host: whoever reaches it "
                "reaches every exported service of the clusterset; inside a pod that is "
                "the pod's own addresses, elsewhere guard it with a firewall",
                what,
                address,
            )
    return per_cluster, default


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="federation-hub",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--xds-address", default="127.0.0.1:18000", help="gRPC ADS HOST:PORT")
    parser.add_argument(
        "--http-address",
        default="127.0.0.1:18080",
        help="HOST:PORT for health, metrics and /debug/proxy-status",
    )
    parser.add_argument(
        "--listener-address",
        action="append",
        default=[],
        metavar="[CLUSTER=]HOST:PORT",
        help="where each cluster's Envoys listen for clusterset traffic (repeatable; "
        f"without CLUSTER= it is the default, {DEFAULT_LISTENER}). Anyone who reaches "
        "this address reaches every exported service: in a pod, the pod's own address "
        "(or 0.0.0.0 there, which is the pod's addresses only) behind a NetworkPolicy",
    )
    parser.add_argument(
        "--address-map",
        action="append",
        default=[],
        metavar="CLUSTER=FROM_CIDR=TO_CIDR",
        help="translate a cluster's endpoint addresses (repeatable), for pod "
        "networks that Envoys reach through another range",
    )
    parser.add_argument(
        "--secret-dir",
        default=DEFAULT_SECRET_DIR,
        help="where each Envoy finds the TLS Secrets of its Gateways' HTTPS listeners, "
        "mounted as <dir>/<namespace>/<name>/tls.crt and tls.key (keys never pass "
        f"through the hub; default {DEFAULT_SECRET_DIR})",
    )
    parser.add_argument(
        "--check-consistency",
        action="store_true",
        help="check every snapshot before serving it (every route's cluster exists, every "
        "EDS cluster has its endpoints) and refuse a broken one; costs CPU, for tests",
    )
    parser.add_argument(
        "--ip-family",
        action="append",
        default=[],
        metavar="[CLUSTER=]IPv4|IPv6",
        help="the address family of the endpoints a cluster's Envoys are given (repeatable; "
        f"without CLUSTER= it is the default, {DEFAULT_IP_FAMILY}). One family per cluster: "
        "a dual-stack Service's pods are listed once, not once per family",
    )
    parser.add_argument(
        ENABLE_FLAG,
        action="store_true",
        help="apply the Gateways' EnvoyPatchPolicies (JSON patches on the generated Envoy "
        "configuration); off by default, as in Envoy Gateway: a patch can change anything",
    )
    parser.add_argument(
        "--no-local-first",
        action="store_true",
        help="spread traffic over all clusters instead of preferring the local one",
    )
    parser.add_argument(
        "--withdraw-stale-after",
        type=float,
        default=None,
        help="drop a stale cluster's endpoints after this many seconds "
        "(default: never; fail-static)",
    )
    parser.add_argument(
        "--registry-behind-after",
        type=_positive_seconds,
        default=None,
        help="say not ready in /readyz once reads of the registry have failed for this many "
        "seconds, so that a replica cut off from Redis takes no new Envoys while others "
        "serve a newer view (default: never; when Redis is down for every replica, every "
        "one goes unready and new Envoys find none)",
    )
    _xds_arguments(parser)
    _extension_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def _extension_arguments(parser: argparse.ArgumentParser) -> None:
    ext = parser.add_argument_group(
        "extension server (Envoy Gateway's extension protocol; none unless --extension-server)"
    )
    ext.add_argument("--extension-server", metavar="HOST:PORT", help="where it listens (gRPC)")
    ext.add_argument(
        "--extension-hook",
        action="append",
        default=[],
        choices=[h.value for h in Hook],
        help="a hook to call (repeatable; Envoy Gateway's hooks.xdsTranslator.post names)",
    )
    ext.add_argument(
        "--extension-timeout", type=float, default=1.0, help="seconds per call (default 1)"
    )
    ext.add_argument(
        "--extension-fail-open",
        action="store_true",
        help="when it fails, serve the translation unmodified (default: fail closed, keeping "
        "the last result it accepted)",
    )
    ext.add_argument(
        "--extension-translation-type",
        action="append",
        default=[],
        choices=list(TRANSLATION_TYPES),
        help="what PostTranslateModify also sends and replaces (repeatable: listeners, "
        "routes; clusters and secrets always, as Envoy Gateway's defaults)",
    )
    ext.add_argument("--extension-tls-ca", help="CA of its serving certificate (default: plain)")
    ext.add_argument("--extension-tls-cert", help="the hub's client certificate (PEM)")
    ext.add_argument("--extension-tls-key", help="its private key (PEM)")
    ext.add_argument("--extension-server-name", help="the name its certificate must carry")


def extension_settings(args: argparse.Namespace) -> ExtensionSettings | None:
    """The extension server the flags name (None: none); InvalidInputError when they
    do not fit together."""
    if not args.extension_server:
        used = [a for a in ("extension_hook", "extension_tls_ca") if getattr(args, a)]
        if used:
            raise InvalidInputError("--extension-* flags need --extension-server HOST:PORT")
        return None
    split_host_port(args.extension_server, "--extension-server")

    def path(value: str | None) -> Path | None:
        return None if value is None else Path(value)

    types = args.extension_translation_type
    return ExtensionSettings(
        address=args.extension_server,
        hooks=tuple(Hook(h) for h in dict.fromkeys(args.extension_hook)),
        timeout=args.extension_timeout,
        fail_open=args.extension_fail_open,
        translation_types=DEFAULT_TRANSLATION_TYPES | {TRANSLATION_TYPES[t] for t in types},
        tls_ca=path(args.extension_tls_ca),
        tls_cert=path(args.extension_tls_cert),
        tls_key=path(args.extension_tls_key),
        server_name=args.extension_server_name,
    )


def _xds_arguments(parser: argparse.ArgumentParser) -> None:
    tls = parser.add_argument_group("xDS security (mTLS unless --insecure-xds-plaintext)")
    tls.add_argument("--xds-tls-cert", help="the hub's serving certificate (PEM chain)")
    tls.add_argument("--xds-tls-key", help="its private key (PEM)")
    tls.add_argument("--xds-client-ca", help="CA bundle that signs the Envoys' certificates")
    tls.add_argument(
        "--trust-domain",
        default=DEFAULT_TRUST_DOMAIN,
        help="the SPIFFE trust domain of the clusters' certificate URIs "
        f"(default {DEFAULT_TRUST_DOMAIN})",
    )
    tls.add_argument(
        "--insecure-xds-plaintext",
        action="store_true",
        help="serve xDS without TLS: anyone who reaches the port may claim any cluster and "
        "read the clusterset's names, ports and pod addresses. Trusted networks only",
    )
    limits = parser.add_argument_group("xDS limits (per client)")
    default = ServerLimits()
    for flag, attr, kind, text in (
        ("first-request-timeout", "first_request_timeout", float, "seconds to first request"),
        ("max-streams-per-peer", "max_streams_per_peer", int, "streams of one cluster/address"),
        ("max-streams-per-connection", "max_streams_per_connection", int, "per HTTP/2 connection"),
        ("max-message-bytes", "max_message_bytes", int, "largest request"),
        ("max-names-per-peer", "max_names_per_peer", int, "names of one peer's streams"),
        ("max-connection-age", "max_connection_age", float, "seconds before GOAWAY"),
        ("max-connection-age-grace", "max_connection_age_grace", float, "seconds after GOAWAY"),
    ):
        limits.add_argument(
            f"--xds-{flag}",
            dest=f"xds_{attr}",
            type=kind,
            default=getattr(default, attr),
            help=f"{text} (default {getattr(default, attr)})",
        )
    limits.add_argument(
        "--xds-max-subscribed-names",
        type=int,
        default=StreamSettings().max_subscribed_names,
        help="resource names one stream may subscribe to "
        f"(default {StreamSettings().max_subscribed_names})",
    )


def xds_security(
    args: argparse.Namespace, metrics: XdsMetrics
) -> tuple[grpc.ServerCredentials | None, NodeGroup]:
    """Credentials and the node-group function the flags ask for; InvalidInputError when
    they ask for neither mTLS nor, explicitly, plain text."""
    files = (args.xds_tls_cert, args.xds_tls_key, args.xds_client_ca)
    if args.insecure_xds_plaintext:
        if any(files):
            raise InvalidInputError(
                "--insecure-xds-plaintext contradicts --xds-tls-cert/--xds-tls-key/"
                "--xds-client-ca: give one or the other"
            )
        log.warning(
            "xDS is PLAIN TEXT (--insecure-xds-plaintext): any client that reaches %s may "
            "claim any cluster and read its configuration",
            args.xds_address,
        )
        return None, claimed_group
    if not all(files):
        raise InvalidInputError(
            "xDS needs mTLS: --xds-tls-cert, --xds-tls-key and --xds-client-ca (fedctl pki "
            "mints them), or --insecure-xds-plaintext on a trusted network"
        )
    credentials = reloading_credentials(
        TlsFiles(Path(args.xds_tls_cert), Path(args.xds_tls_key), Path(args.xds_client_ca)),
        metrics.tls_reloaded,
    )
    return credentials, CertificateGroup(check_trust_domain(args.trust_domain))


def xds_limits(args: argparse.Namespace) -> tuple[ServerLimits, StreamSettings]:
    limits = ServerLimits(
        first_request_timeout=args.xds_first_request_timeout,
        max_streams_per_peer=args.xds_max_streams_per_peer,
        max_streams_per_connection=args.xds_max_streams_per_connection,
        max_message_bytes=args.xds_max_message_bytes,
        max_names_per_peer=args.xds_max_names_per_peer,
        max_connection_age=args.xds_max_connection_age,
        max_connection_age_grace=args.xds_max_connection_age_grace,
    )
    return limits, StreamSettings(max_subscribed_names=args.xds_max_subscribed_names)


async def run(args: argparse.Namespace) -> None:
    listeners, default_listener = _listener_flags(args.listener_address)
    families, default_family = ip_families_from_flags(args.ip_family)
    options = SnapshotOptions(
        translate=TranslateOptions(
            local_first=not args.no_local_first,
            address_maps=address_maps_from_flags(args.address_map),
            ip_families=families,
            default_ip_family=default_family,
        ),
        listener_addresses=listeners,
        default_listener=default_listener or DEFAULT_LISTENER,
        secret_dir=args.secret_dir,
        check_consistency=args.check_consistency,
        patches_allowed=args.enable_envoy_patch_policy,
    )
    extension = extension_settings(args)
    cache = SnapshotCache()
    sync = SyncRegistry(cache.snapshot_versions)
    registry = registry_location()  # the URL and its TLS files, from the environment
    url, tls = registry.url, registry.client_options()
    reader = RedisReader.from_url(url, **tls)
    hub_state = RedisHubState.from_url(url, **tls)
    hub = Hub(
        reader,
        cache,
        options,
        withdraw_stale_after=args.withdraw_stale_after,
        hub_state=hub_state,
        sync=sync,
        extension=None if extension is None else ExtensionStage(extension),
        behind_after=args.registry_behind_after,
    )
    xds = XdsMetrics()
    limits, settings = xds_limits(args)
    credentials, node_group = xds_security(args, xds)
    server = await serve(
        cache,
        sync,
        args.xds_address,
        metrics=xds,
        credentials=credentials,
        node_group=node_group,
        limits=limits,
        settings=settings,
        # An Envoy that comes from another replica is never served an older view.
        caught_up=hub.watcher.caught_up,
    )
    runner = await serve_hub_http(hub, sync, xds, args.http_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    hub_task = asyncio.create_task(hub.run(), name="hub")
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait([hub_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    hub_task.cancel()  # once: its own cleanup stops its tasks (stop_tasks)
    results = await asyncio.gather(hub_task, return_exceptions=True)
    await server.stop(grace=1.0)
    await hub.withdraw()  # its Envoys are counted by the replicas they move to
    await runner.cleanup()
    await reader.close()
    await hub_state.close()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    return run_until_stopped("federation-hub", run(args))


if __name__ == "__main__":
    raise SystemExit(main())
