"""``federation-agent``: the per-cluster agent's command line and kopf wiring.

    FEDERATION_REGISTRY_URL=redis://agent-a:PASSWORD@127.0.0.1:6379/0 \\
    federation-agent [--kubeconfig PATH] [--cluster-id ID] [--lease-ttl 10] \\
        [--withdraw-stale-after SECONDS]

The cluster id comes from the ClusterProperty ``cluster.clusterset.k8s.io``
unless ``--cluster-id`` is given (then both must agree). kopf watches
ServiceExports, Services, EndpointSlices and Namespaces cluster-wide (and, when
the Gateway API CRDs are installed, GatewayClasses, Gateways, HTTPRoutes,
GRPCRoutes and ReferenceGrants) and hands every event to
:class:`agents.agent.Agent`; the agent runs its own tasks
beside kopf in the same event loop. SIGTERM/SIGINT stop both cleanly and
release the lease (records stay: fail-static). The registry URL, with the agent's
credentials, comes from ``FEDERATION_REGISTRY_URL``, never from the command line; for a
``rediss://`` URL, the CA and an optional client certificate come from
``FEDERATION_REGISTRY_CA_FILE``, ``FEDERATION_REGISTRY_CERT_FILE`` and
``FEDERATION_REGISTRY_KEY_FILE`` (:mod:`federation.registry.location`). A certificate that
does not verify stops the agent at start-up with a one-line message.

With ``--credentials-address`` the agent also serves its Gateways' Envoys the
configuration of their basic auth and API key filters (:mod:`agents.credentials`), over
mTLS with ``--credentials-tls-dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import kopf
from kopf._core.engines.peering import Identity  # kopf exports no public alias
from kubernetes.client import Configuration

from agents import gateway, infra_objects, metrics
from agents import kinds as k
from agents.agent import Agent, AgentOptions
from agents.credentials import CredentialServer
from agents.dns import DnsServer
from agents.identity import read_cluster_id
from agents.infra import InfraManager
from agents.infra_objects import InfraSettings
from agents.kube import Kube, bearer_token, load_configuration
from federation.errors import FederationError
from federation.identity import parse_cluster_id
from federation.process import configure_logging, run_until_stopped
from federation.registry.hub_state import RedisHubState
from federation.registry.location import registry_location
from federation.registry.redis_store import RedisReader, RedisWriter
from federation.xds.peers import CertificateGroup
from federation.xds.tls import TlsFiles, reloading_credentials

log = logging.getLogger("agents")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="federation-agent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    parser.add_argument("--cluster-id", help="must match the ClusterProperty when both are set")
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=10.0,
        help="seconds until this cluster counts as stale (default 10)",
    )
    parser.add_argument(
        "--resync-interval",
        type=float,
        default=60.0,
        help="seconds between full re-lists (default 60)",
    )
    parser.add_argument(
        "--withdraw-stale-after",
        type=float,
        default=None,
        help="withdraw a stale cluster's exports after this many seconds "
        "(default: never; fail-static)",
    )
    parser.add_argument(
        "--metrics-address",
        default="127.0.0.1:9464",
        help="host:port for /metrics, /healthz and /readyz (default 127.0.0.1:9464)",
    )
    parser.add_argument(
        "--dns-address",
        default="",
        help="host:port to serve this cluster's clusterset.local DNS zone on, UDP and TCP "
        "(default: not served); the cluster's CoreDNS forwards the zone there",
    )
    infra = parser.add_argument_group(
        "Gateway Envoys",
        "the infra manager runs each Gateway's own Envoys as a Deployment; "
        "off unless --gateway-envoy-image is given",
    )
    infra.add_argument("--gateway-envoy-image", default="", help="the Envoy image")
    infra.add_argument(
        "--gateway-bootstrap-image",
        default="",
        help="the image whose fedctl writes the Envoys' bootstrap (the agent's own)",
    )
    infra.add_argument("--gateway-hub-address", default="", help="HOST:PORT of the hub's xDS")
    infra.add_argument(
        "--gateway-hub-tls-secret",
        default="",
        help="Secret (in --namespace) with the cluster's xDS client certificate "
        "(tls.crt, tls.key, ca.crt); empty: plain text to the hub",
    )
    infra.add_argument("--gateway-trust-domain", default="federation.local")
    infra.add_argument("--gateway-tls-server-name", default="")
    infra.add_argument("--gateway-image-pull-policy", default="IfNotPresent")
    infra.add_argument("--gateway-delta", action="store_true", help="delta xDS")
    infra.add_argument(
        "--gateway-source-cluster-stats",
        action="store_true",
        help="fedctl bootstrap --source-cluster-stats for the Gateways' Envoys",
    )
    infra.add_argument(
        "--namespace",
        default=os.environ.get("POD_NAMESPACE", "federation-system"),
        help="the agent's namespace (default: $POD_NAMESPACE)",
    )
    creds = parser.add_argument_group(
        "Credentials",
        "the agent serves its Gateways' Envoys the configuration of their basic auth and "
        "API key filters, credentials included (they never leave the cluster), over ECDS; "
        "off unless --credentials-address is given, and SecurityPolicies that need it "
        "are refused meanwhile",
    )
    creds.add_argument(
        "--credentials-address", default="", help="HOST:PORT to serve them on (gRPC)"
    )
    creds.add_argument(
        "--credentials-tls-dir",
        default="",
        help="tls.crt and tls.key (the agent's certificate: spiffe://<trust domain>/"
        "cluster/<id>/agent, as 'fedctl pki' writes agents/<id>) and ca.crt (the CA "
        "of the Envoys' client certificates); Envoys must present their cluster's",
    )
    creds.add_argument(
        "--credentials-insecure-plaintext",
        action="store_true",
        help="serve them without TLS, to any client that claims a Gateway: trusted networks only",
    )
    creds.add_argument(
        "--gateway-agent-address",
        default="",
        help="HOST:PORT at which the Gateway Envoys the infra manager runs reach "
        "--credentials-address (the agent's Service)",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


async def start_credential_server(
    args: argparse.Namespace, cluster: str
) -> CredentialServer | None:
    """The agent's credential server, started (None: --credentials-address not given)."""
    if not args.credentials_address:
        if args.credentials_tls_dir or args.credentials_insecure_plaintext:
            raise FederationError(
                "--credentials-tls-dir and --credentials-insecure-plaintext "
                "need --credentials-address"
            )
        return None
    if args.gateway_envoy_image and not args.gateway_agent_address:
        # The Envoys would get listeners whose credential filters name a cluster their
        # bootstrap lacks, and refuse them.
        raise FederationError(
            "--credentials-address with the infra manager (--gateway-envoy-image) needs "
            "--gateway-agent-address: where the Gateways' Envoys reach it"
        )
    if bool(args.credentials_tls_dir) == args.credentials_insecure_plaintext:
        raise FederationError(
            "--credentials-address needs --credentials-tls-dir (mTLS) or "
            "--credentials-insecure-plaintext, not both"
        )
    server = CredentialServer(cluster)
    if args.credentials_insecure_plaintext:
        await server.start(args.credentials_address, None)
        return server
    directory = Path(args.credentials_tls_dir)
    files = TlsFiles(directory / "tls.crt", directory / "tls.key", directory / "ca.crt")
    await server.start(
        args.credentials_address,
        reloading_credentials(files),
        CertificateGroup(args.gateway_trust_domain),
    )
    return server


def infra_settings(args: argparse.Namespace, cluster: str) -> InfraSettings | None:
    """The infra manager's settings, or None when it is off (no Envoy image given)."""
    if not args.gateway_envoy_image:
        return None
    if not (args.gateway_bootstrap_image and args.gateway_hub_address):
        raise FederationError(
            "--gateway-envoy-image needs --gateway-bootstrap-image and --gateway-hub-address"
        )
    return InfraSettings(
        cluster=cluster,
        envoy_image=args.gateway_envoy_image,
        bootstrap_image=args.gateway_bootstrap_image,
        hub_address=args.gateway_hub_address,
        hub_tls_secret=args.gateway_hub_tls_secret or None,
        trust_domain=args.gateway_trust_domain,
        tls_server_name=args.gateway_tls_server_name or None,
        namespace=args.namespace,
        image_pull_policy=args.gateway_image_pull_policy,
        delta=args.gateway_delta,
        agent_address=args.gateway_agent_address or None,
        source_cluster_stats=args.gateway_source_cluster_stats,
    )


def _kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # no Kubernetes Events for watch-only handlers
    settings.scanning.disabled = True  # cluster-wide only: no namespace/CRD scanning
    settings.watching.server_timeout = 300
    return settings


def build_registry(
    agent: Agent, conf: Configuration, *, gateway_api: bool = True, failover_api: bool = True
) -> kopf.OperatorRegistry:
    """kopf handlers, registered on an explicit registry (no import-time globals).

    ``gateway_api``: whether the Gateway API CRDs are installed (their kinds are watched
    only then; a cluster without them simply has no Gateways); ``failover_api``: whether
    the FailoverPolicy CRD is (the federation-crds chart installs it).
    """
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # The same credentials as the agent's own client, whatever their source; kopf
        # calls this again after a 401, which picks up a rotated in-cluster token.
        return kopf.ConnectionInfo(
            server=conf.host,
            ca_path=conf.ssl_ca_cert,
            certificate_path=conf.cert_file,
            private_key_path=conf.key_file,
            token=bearer_token(conf),
            insecure=not conf.verify_ssl,
        )

    def route(handler: Any) -> Any:
        def on_event(type: str | None, body: kopf.Body, **_: Any) -> None:
            handler(type, dict(body))

        return on_event

    handlers = (
        (k.SERVICE_EXPORTS, agent.on_export_event),
        (k.SERVICE_IMPORTS, agent.on_import_event),
        (k.SERVICES, agent.on_service_event),
        (k.ENDPOINT_SLICES, agent.on_slice_event),
        (k.NAMESPACES, agent.on_namespace_event),
    )
    for kind, handler in handlers:
        kopf.on.event(kind.group, kind.version, kind.plural, registry=registry)(route(handler))
    if gateway_api:  # client CA certificates, and the Envoys' parameters
        configmaps = k.CONFIG_MAPS
        kopf.on.event(configmaps.group, configmaps.version, configmaps.plural, registry=registry)(
            route(agent.on_config_map_event)
        )
    if gateway_api and agent.gateway.infra is not None:
        for kind in infra_objects.WATCHED:
            if kind is k.SERVICES:
                continue  # already watched; on_service_event passes ours on

            def on_infra_event(
                type: str | None, body: kopf.Body, plural: str = kind.plural, **_: Any
            ) -> None:
                agent.on_infra_event(plural, type, dict(body))

            kopf.on.event(
                kind.group,
                kind.version,
                kind.plural,
                labels={infra_objects.MANAGED_BY: infra_objects.MANAGER},
                registry=registry,
            )(on_infra_event)
    if gateway_api or failover_api:
        for kind in gateway.WATCHED:
            if not gateway_api and kind is not k.FAILOVER_POLICIES:
                continue  # without Gateway API, only FailoverPolicies
            if kind is k.FAILOVER_POLICIES and not failover_api:
                continue

            def on_gateway_event(
                type: str | None, body: kopf.Body, plural: str = kind.plural, **_: Any
            ) -> None:
                agent.on_gateway_event(plural, type, dict(body))

            kopf.on.event(kind.group, kind.version, kind.plural, registry=registry)(
                on_gateway_event
            )
    return registry


async def run(args: argparse.Namespace) -> None:
    kube = Kube(load_configuration(args.kubeconfig))
    try:
        await _run(args, kube)
    finally:
        await kube.close()


async def _run(args: argparse.Namespace, kube: Kube) -> None:
    property_id = await read_cluster_id(kube)
    if args.cluster_id and parse_cluster_id(args.cluster_id) != property_id:
        raise FederationError(
            f"--cluster-id {args.cluster_id} does not match the ClusterProperty ({property_id})"
        )
    cluster = property_id
    registry = registry_location()  # the URL and its TLS files, from the environment
    url, tls = registry.url, registry.client_options()
    writer = RedisWriter.from_url(url, cluster, **tls)
    reader = RedisReader.from_url(url, **tls)
    hub_state = RedisHubState.from_url(url, **tls)
    agent = Agent(
        AgentOptions(
            cluster=cluster,
            lease_ttl=args.lease_ttl,
            resync_interval=args.resync_interval,
            withdraw_stale_after=args.withdraw_stale_after,
        ),
        kube,
        writer,
        reader,
        hub_state,
    )
    settings = infra_settings(args, cluster)
    if settings is not None:
        agent.gateway.infra = InfraManager(kube, settings)
    gateway_api = await agent.kube.get(k.GATEWAY_CLASSES.path()) is not None
    if not gateway_api:
        log.info("the Gateway API CRDs are not installed: no Gateways to serve")
    failover_api = await agent.kube.get(k.FAILOVER_POLICIES.path()) is not None
    if not failover_api:
        log.warning("the FailoverPolicy CRD is not installed (federation-crds chart)")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signals() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

    on_signals()
    runner = await metrics.serve(agent, args.metrics_address)
    agent.gateway.credential_server = await start_credential_server(args, cluster)
    if args.dns_address:
        agent.dns = DnsServer(agent.imports.zone, args.dns_address)
        await agent.dns.start()
    log.info("agent starting", extra={"cluster": cluster})
    agent_task = asyncio.create_task(agent.run(), name="agent")
    # kopf starts after the agent's initial LIST, so its listing only refreshes the caches.
    await asyncio.wait(
        [agent_task, asyncio.create_task(agent.ready.wait())], return_when=asyncio.FIRST_COMPLETED
    )

    async def close() -> None:
        await writer.close()
        await reader.close()
        await hub_state.close()
        await runner.cleanup()
        if agent.dns is not None:
            await agent.dns.close()
        if agent.gateway.credential_server is not None:
            await agent.gateway.credential_server.stop()

    if agent_task.done():  # start-up failed (e.g. the registry's certificate): no kopf
        await close()
        agent_task.result()  # raises the agent's error
    kopf_stop, kopf_ready = asyncio.Event(), asyncio.Event()
    kopf_task = asyncio.create_task(
        kopf.operator(
            registry=build_registry(
                agent, kube.configuration, gateway_api=gateway_api, failover_api=failover_api
            ),
            settings=_kopf_settings(),
            clusterwide=True,
            standalone=True,
            # kopf would derive it from the user name, which a pod's arbitrary uid has not.
            identity=Identity(f"federation-agent-{cluster}@{socket.gethostname()}"),
            stop_flag=kopf_stop,
            ready_flag=kopf_ready,
        ),
        name="kopf",
    )
    # kopf takes SIGTERM and SIGINT for itself as it starts; take them back. Stopping,
    # the agent goes first: kopf waits up to 5 s for every task started after it, which
    # would include the agent's own.
    ready_task = asyncio.create_task(kopf_ready.wait())
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait([kopf_task, ready_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    ready_task.cancel()
    on_signals()
    await asyncio.wait([agent_task, kopf_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
    agent_task.cancel()  # once: its own cleanup stops its tasks (stop_tasks) and the lease
    agent_result = (await asyncio.gather(agent_task, return_exceptions=True))[0]
    kopf_stop.set()
    results = [agent_result, *(await asyncio.gather(kopf_task, return_exceptions=True))]
    await close()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
    log.info("agent stopped", extra={"cluster": cluster})


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    logging.getLogger("kopf").setLevel(logging.WARNING)
    return run_until_stopped("federation-agent", run(args))


if __name__ == "__main__":
    raise SystemExit(main())
