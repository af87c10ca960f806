"""``fedctl``: the operator's command line.

    fedctl bootstrap --cluster a --xds 10.0.0.5:18000 --tls-cert F --tls-key F --tls-ca F \\
        [--admin 127.0.0.1:9901] [--delta]
    fedctl pki init --dir pki --hub-name HOST --cluster a --cluster b
    fedctl proxy-status [--hub http://127.0.0.1:18080 ...] [-o json]
    fedctl config-dump --cluster b [--hub URL] [--type clusters ...] [-o yaml|json]
        [--node ID] [--envoy-admin HOST:PORT]
    fedctl trace service NAMESPACE/NAME [--hub URL] --agent CLUSTER=URL ... [-o json]
    fedctl dns hello.demo.svc.clusterset.local [--type SRV] --agent http://AGENT_B:9464
    fedctl coredns add --service federation/federation-agent-dns | fedctl coredns remove
    FEDERATION_REGISTRY_ADMIN_URL=redis://admin:PW@HOST:6379/0 \\
        fedctl add-cluster a [--registry-address redis://HOST:PORT/0] [--namespace NS]
    FEDERATION_REGISTRY_ADMIN_URL=... fedctl add-hub [--user hub]

``bootstrap`` prints the Envoy bootstrap for a member cluster's Envoy (see
``federation.cli.bootstrap``). ``proxy-status`` asks the hub which Envoys are
connected and, per xDS type, whether each is synced, stale or NACKed (with
the NACK's message): "is every Envoy in sync, and with what?"; given several hub
replicas (``--hub`` again for each), it shows every replica's Envoys, with a HUB column.
``config-dump`` shows
exactly what the hub serves a cluster's Envoys, and how a given Envoy differs
(``federation.cli.config_dump``); ``trace`` follows the latest change of one export
through agent, registry, hub, each Envoy and each importing cluster
(``federation.cli.trace``); ``dns`` what a cluster's agent answers to a
``clusterset.local`` question, and why (``federation.dns.explain``); ``coredns`` adds
or removes CoreDNS's block that forwards the zone to the agent
(``federation.cli.coredns``). ``add-cluster`` and
``add-hub`` create a registry user and print the Secret that hands it its URL (see
``federation.cli.members``). ``pki`` mints the certificates of the hub's mTLS xDS port
(see ``federation.cli.pki``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from federation.cli import config_dump, coredns, members, pki, registry_config, trace
from federation.cli.bootstrap import BootstrapOptions, BootstrapTls, bootstrap
from federation.debug_payloads import DnsExplanation
from federation.dns.explain import parse_question
from federation.dns.explain import render as render_dns
from federation.errors import FederationError, InvalidInputError
from federation.pki import DEFAULT_TRUST_DOMAIN
from federation.registry.kinds import Kind

DEFAULT_HUB = "http://127.0.0.1:18080"
TYPES = (
    ("CDS", "Cluster"),
    ("EDS", "ClusterLoadAssignment"),
    ("SDS", "Secret"),
    ("LDS", "Listener"),
    ("RDS", "RouteConfiguration"),
)


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    except (OSError, ValueError) as err:
        raise FederationError(f"cannot read {url}: {err}") from err


def _dns(args: argparse.Namespace) -> str:
    qname, rdtype = parse_question(args.name, args.type)  # refuse a bad question here
    query = urllib.parse.urlencode({"name": qname.to_text(), "type": rdtype.name})
    answer: DnsExplanation = _get_json(f"{args.agent.rstrip('/')}/debug/dns?{query}")
    return json.dumps(answer, indent=2) + "\n" if args.output == "json" else render_dns(answer)


def _shown(value: object) -> str:
    """``value`` as text safe for a terminal: node ids and messages come from clients."""
    return "".join(c if c.isprintable() else "?" for c in str(value))


def _type_state(entry: dict[str, Any], short: str) -> str:
    for type_url, state in (entry.get("types") or {}).items():
        if type_url.endswith("." + short):
            return str(state.get("state", "?"))
    return "-"


def _proxies_of_every_hub(hubs: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every hub replica's proxy-status entries, each with the ``hub`` it came from
    when there are several; and an error per replica that could not be read (the others
    are still shown: a replica down is when the table matters most)."""
    out, errors = [], []
    for hub in hubs:
        try:
            entries = _get_json(hub.rstrip("/") + "/debug/proxy-status")
        except FederationError as err:
            errors.append(str(err))
            continue
        out += [{**e, "hub": hub} if len(hubs) > 1 else e for e in entries]
    return out, errors


def _proxy_status(args: argparse.Namespace) -> int:
    """Print every replica's Envoys; 1 when a replica could not be read."""
    proxies, errors = _proxies_of_every_hub(args.hub or [DEFAULT_HUB])
    if proxies or not errors:
        print(
            json.dumps(proxies, indent=2)
            if args.output == "json"
            else render_proxy_status(proxies, hub_column=len(args.hub) > 1),
            end="",
        )
    for error in errors:
        print(f"fedctl: {error}", file=sys.stderr)
    return 1 if errors else 0


def render_proxy_status(proxies: list[dict[str, Any]], *, hub_column: bool = False) -> str:
    """A table: one row per Envoy with its node group (a cluster's shared Envoys, or
    ``cluster/namespace/gateway``), one column per xDS type (``-``: not subscribed, as SDS
    without HTTPS listeners), then NACK messages. ``hub_column``: which replica each
    entry came from (its ``hub``), first."""
    header = ["NODE", "GROUP", "PROTOCOL", *(t for t, _ in TYPES), "SYNCED"]
    header = ["HUB", *header] if hub_column else header
    rows = [header]
    nacks = []
    for p in sorted(proxies, key=lambda p: (str(p.get("group")), str(p.get("node_id")))):
        lead = [_shown(str(p.get("hub", "?")))] if hub_column else []
        refused = p.get("refused")
        if refused:
            unknown = refused.get("reason") in ("unknown-cluster", "unknown-gateway")
            verdict = "UNKNOWN" if unknown else "REFUSED"
            rows.append(
                [*lead, _shown(p.get("node_id") or "?"), _shown(p.get("group") or "?"), "-"]
                + ["-"] * len(TYPES)
                + [verdict]
            )
            nacks.append(
                _shown(
                    f"{p.get('node_id') or '?'} from {p.get('peer')} refused "
                    f"{refused.get('count')}x ({refused.get('reason')}, {refused.get('code')}): "
                    f"{refused.get('message')}"
                )
            )
            continue
        rows.append(
            [
                *lead,
                _shown(p.get("node_id", "?")),
                _shown(p.get("group", "?")),
                str(p.get("protocol", "?")),
                *(_type_state(p, short) for _, short in TYPES),
                "yes" if p.get("synced") else "NO",
            ]
        )
        for type_url, state in (p.get("types") or {}).items():
            nack = state.get("last_nack")
            if nack:
                nacks.append(
                    f"{p.get('node_id')} {type_url.rsplit('.', 1)[-1]} NACKed "
                    f"version {nack.get('version')}: {nack.get('message')}"
                )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append("(no Envoy connected)")
    return "\n".join(lines + nacks) + "\n"


async def _add_user(args: argparse.Namespace) -> dict[str, Any]:
    admin = members.admin_url()
    address = args.registry_address or members.default_address(admin)
    user = (
        members.agent_registry_user(args.cluster, address)
        if args.command == "add-cluster"
        else members.hub_registry_user(args.user, address)
    )
    await members.create(admin, [user])
    return members.secret_manifest(args.secret_name or "federation-registry", args.namespace, user)


#: What ``fedctl trace`` follows: an export, or a Gateway API record of one cluster (a
#: route, or one of Envoy Gateway's policies).
TRACED_KINDS = (
    "service",
    "httproute",
    "grpcroute",
    Kind.BACKEND_TRAFFIC_POLICY.value,
    Kind.SECURITY_POLICY.value,
    Kind.CLIENT_TRAFFIC_POLICY.value,
)


def _trace(args: argparse.Namespace) -> trace.Trace:
    namespace, sep, name = args.name.partition("/")
    if not sep or not namespace or not name:
        raise InvalidInputError(f"{args.name!r}: expected NAMESPACE/NAME")
    if (args.kind == "service") == bool(args.cluster):
        raise InvalidInputError(
            "--cluster names a route's or policy's cluster: required for one, not for a service"
        )
    fields = {"namespace": namespace, "name": name, "kind": args.kind}
    query = urllib.parse.urlencode(fields | ({"cluster": args.cluster} if args.cluster else {}))
    agents = {
        cluster: _get_json(f"{url}/debug/trace?{query}")
        for cluster, url in trace.agent_urls(args.agent).items()
    }
    if not agents:
        raise InvalidInputError("give every cluster's agent: --agent CLUSTER=http://HOST:PORT")
    hub = _get_json(f"{args.hub.rstrip('/')}/debug/trace?{query}")
    subject = f"{args.kind} {args.name}" + (f" in {args.cluster}" if args.cluster else "")
    return trace.timeline(subject, agents, hub)


def _config_dump(args: argparse.Namespace) -> tuple[str, bool]:
    """The dump, or its comparison with a node or an Envoy; True when they differ."""
    hub = args.hub.rstrip("/")
    query = urllib.parse.urlencode({"cluster": args.cluster})
    dump = config_dump.dump_of(
        _get_json(f"{hub}/debug/config-dump?{query}"), config_dump.types_of(args.type)
    )
    if not args.node and not args.envoy_admin:
        return config_dump.render(dump, args.output), bool(dump.errors)
    proxies = [p for p in _get_json(f"{hub}/debug/proxy-status") if "refused" not in p]
    text, differs = "", False
    if args.node:
        proxy = next((p for p in proxies if p.get("node_id") == args.node), None)
        if proxy is None:
            raise FederationError(f"no Envoy with node id {args.node!r} is connected to the hub")
        text += config_dump.render_node(dump, proxy)
        differs = any(
            (proxy.get("types") or {}).get(t, {}).get("state") != "synced" for t in dump.resources
        )
    if args.envoy_admin:
        envoy = config_dump.envoy_resources(
            _get_json(f"http://{args.envoy_admin}/config_dump?include_eds")
        )
        proxy = next((p for p in proxies if p.get("node_id") == envoy.node_id), None)
        comparison = config_dump.compare(dump, envoy, proxy)
        text += config_dump.render_comparison(comparison, envoy, args.envoy_admin)
        differs = differs or comparison.differs
    return text, differs


def _bootstrap_tls(args: argparse.Namespace) -> BootstrapTls | None:
    files = (args.tls_cert, args.tls_key, args.tls_ca)
    if not any(files):
        return None
    if not all(files):
        raise InvalidInputError("--tls-cert, --tls-key and --tls-ca go together")
    return BootstrapTls(
        args.tls_cert,
        args.tls_key,
        args.tls_ca,
        args.trust_domain,
        args.tls_server_name,
        args.agent_server_name,
    )


def _command(
    sub: Any, name: str, help_text: str, module: ModuleType | None = None, *, hub: bool = False
) -> argparse.ArgumentParser:
    """A subcommand described by ``module``'s docstring; ``hub``: it reads the hub."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=None if module is None else module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if hub:
        parser.add_argument("--hub", default=DEFAULT_HUB, help="the hub's HTTP address")
    return parser


def _inspect_arguments(sub: Any) -> None:
    """config-dump, trace and dns: what is served, where a change went, what DNS says."""
    dump = _command(
        sub,
        "config-dump",
        "exactly what the hub serves a cluster's Envoys, and how one Envoy differs",
        config_dump,
        hub=True,
    )
    dump.add_argument("--cluster", required=True, help="the member cluster (node group)")
    dump.add_argument(
        "--type", action="append", default=[], choices=list(config_dump.TYPES),
        help="only this type (repeatable; default: all)",
    )  # fmt: skip
    dump.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    dump.add_argument("--node", help="also: what this connected Envoy (node id) last ACKed")
    dump.add_argument("--envoy-admin", help="HOST:PORT of an Envoy's admin: print differences")
    follow = _command(
        sub, "trace", "where the latest change of one export went, step by step", trace, hub=True
    )
    follow.add_argument("kind", choices=TRACED_KINDS, help="what to trace")
    follow.add_argument("name", metavar="NAMESPACE/NAME")
    follow.add_argument("--cluster", help="the cluster of a route or policy (not for a service)")
    follow.add_argument(
        "--agent", action="append", default=[], metavar="CLUSTER=URL",
        help="an agent's metrics address (repeatable: every cluster you want in the trace)",
    )  # fmt: skip
    follow.add_argument("-o", "--output", choices=("text", "json"), default="text")
    ask = _command(sub, "dns", "what a cluster's clusterset.local server answers, and why")
    ask.add_argument("name", help="e.g. hello.demo.svc.clusterset.local")
    ask.add_argument("--type", default="A", help="record type (default A)")
    ask.add_argument(
        "--agent", required=True, metavar="URL",
        help="the metrics address of the agent of the cluster asked, http://HOST:PORT",
    )  # fmt: skip
    ask.add_argument("-o", "--output", choices=("text", "json"), default="text")


def _coredns_arguments(sub: Any) -> None:
    parser = _command(
        sub, "coredns", "add or remove CoreDNS's block forwarding clusterset.local", coredns
    )
    actions = parser.add_subparsers(dest="action", required=True)
    for action, what in (("add", "forward the zone to the agent"), ("remove", "stop that")):
        one = actions.add_parser(action, help=what)
        one.add_argument("--configmap", default="kube-system/coredns", metavar="NS/NAME")
        one.add_argument("--kubeconfig", help="default: in-cluster, then ~/.kube/config")
        if action == "add":
            one.add_argument("--service", required=True, metavar="NS/NAME",
                             help="the agent's DNS Service")  # fmt: skip


def _bootstrap_arguments(sub: Any) -> None:
    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap for a member cluster")
    boot.add_argument("--cluster", required=True, help="member cluster id (node.cluster)")
    boot.add_argument(
        "--xds",
        required=True,
        help="HOST:PORT of the hub's xDS server (its Service), or IP:PORT,IP:PORT,... of hub "
        "replicas, preferred in that order",
    )
    boot.add_argument("--admin", default="127.0.0.1:9901", help="admin HOST:PORT (loopback)")
    boot.add_argument("--node-id", help="default: envoy-<cluster>[-<namespace>-<name>]")
    boot.add_argument(
        "--ready",
        metavar="HOST:PORT",
        help="also answer GET /ready there (the admin interface's readiness, for a "
        "kubelet probe) and GET /stats/prometheus (Envoy's metrics, for Prometheus), the "
        "admin interface staying where --admin says",
    )
    boot.add_argument(
        "--gateway",
        metavar="NAMESPACE/NAME",
        help="an Envoy of this Gateway's own, served that Gateway only "
        "(default: a shared Envoy of the cluster, served its clusterset listener)",
    )
    boot.add_argument(
        "--agent-address",
        metavar="HOST:PORT",
        help="with --gateway: the cluster's agent, which serves the Envoy its basic auth "
        "and API key credentials (without it, the Envoy refuses a listener that needs them)",
    )
    boot.add_argument("--agent-server-name", help="SNI to the agent (default: its host name)")
    boot.add_argument("--delta", action="store_true", help="use delta xDS")
    boot.add_argument(
        "--source-cluster-stats",
        action="store_true",
        help="tag Envoy's per-source-cluster statistics (envoy_cluster_zone_upstream_rq_*"
        "{local_cluster,source_cluster}); costs CPU on every statistic Envoy creates "
        "(about 2 s per 1,000 clusters received at once)",
    )
    boot.add_argument("--tls-cert", help="the cluster's client certificate, as Envoy reads it")
    boot.add_argument("--tls-key", help="its private key, as Envoy reads it")
    boot.add_argument("--tls-ca", help="the CA that signed the hub's certificate")
    boot.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN)
    boot.add_argument("--tls-server-name", help="SNI (default: the hub's host name)")
    boot.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="reach a hub started with --insecure-xds-plaintext, without TLS",
    )
    boot.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    boot.add_argument("--file", help="write it to this file instead of standard output")


def _pki_arguments(sub: Any) -> None:
    pki_parser = _command(sub, "pki", "mint a CA and the hub's and clusters' xDS certificates", pki)
    actions = pki_parser.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="a new CA, the hub's and each cluster's certificate")
    init.add_argument("--dir", required=True, help="where to write them")
    init.add_argument("--cluster", action="append", default=[], help="a member (repeatable)")
    init.add_argument("--hub-name", action="append", default=[], help="DNS name Envoys dial")
    init.add_argument("--hub-ip", action="append", default=[], help="IP address Envoys dial")
    init.add_argument("--trust-domain", default=DEFAULT_TRUST_DOMAIN)
    init.add_argument("--days", type=int, default=365, help="validity (default 365)")
    add = actions.add_parser(
        "add-cluster", help="a new or renewed cluster certificate, and its agent's"
    )
    add.add_argument("--dir", required=True)
    add.add_argument("cluster")
    add.add_argument("--days", type=int, default=365)
    secret = actions.add_parser("secret", help="print hub's or a cluster's Secret as YAML")
    secret.add_argument("--dir", required=True)
    secret.add_argument("who", help="hub, clusters/<id> or agents/<id>")
    secret.add_argument(
        "--name",
        help=f"default: {pki.HUB_SECRET} for the hub, {pki.CLUSTER_SECRET} for a cluster "
        f"(different, since the hub's cluster is often a member too), {pki.AGENT_SECRET} "
        "for its agent",
    )
    secret.add_argument("--namespace", default="federation")


def _pki(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    if args.action == "init":
        for path in pki.init(
            directory,
            clusters=args.cluster,
            hub_names=args.hub_name,
            hub_ips=args.hub_ip,
            trust_domain=args.trust_domain,
            days=args.days,
        ):
            print(f"wrote {path}/tls.crt, tls.key, ca.crt")
        print(f"wrote {directory}/ca.crt and {directory}/ca.key (keep the key offline)")
    elif args.action == "add-cluster":
        for path in pki.add_cluster(directory, args.cluster, days=args.days):
            print(f"wrote {path}/tls.crt, tls.key, ca.crt")
    else:
        name = args.name or pki.default_secret_name(args.who)
        manifest = pki.secret_manifest(directory, args.who, name, args.namespace)
        print(yaml.safe_dump(manifest, sort_keys=False), end="")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fedctl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _bootstrap_arguments(sub)
    status = _command(sub, "proxy-status", "which Envoys are in sync, and with what")
    status.add_argument(
        "--hub",
        action="append",
        default=[],
        help=f"a hub replica's HTTP address (repeatable; default {DEFAULT_HUB})",
    )
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")
    for name, what in (("add-cluster", "a member cluster's agent"), ("add-hub", "the hub")):
        add = _command(sub, name, f"create the registry user of {what}; print its Secret", members)
        if name == "add-cluster":
            add.add_argument("cluster", help="the member cluster's id")
        else:
            add.add_argument("--user", default="hub", help="the hub's Redis user (default hub)")
        add.add_argument(
            "--registry-address",
            help="redis://HOST:PORT/DB as the user reaches the registry "
            f"(default: that of ${members.ADMIN_URL_ENV})",
        )
        add.add_argument("--namespace", default="federation", help="the Secret's namespace")
        add.add_argument("--secret-name", help="default: federation-registry")
    conf = _command(
        sub,
        "registry-config",
        "write the bundled registry's redis.conf and ACL file (the hub chart runs it)",
        registry_config,
    )
    conf.add_argument("--data-dir", required=True, help="redis-server's data directory")
    conf.add_argument("--port", type=int, default=6379)
    conf.add_argument("--hub-user", default="hub")
    _inspect_arguments(sub)
    _coredns_arguments(sub)
    _pki_arguments(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "pki":
            _pki(args)
        elif args.command == "trace":
            print(trace.render(_trace(args), args.output), end="")
        elif args.command == "dns":
            print(_dns(args), end="")
        elif args.command == "coredns":
            core = coredns.api(args.kubeconfig)
            if args.action == "add":
                print(coredns.add(core, args.configmap, args.service))
            else:
                print(coredns.remove(core, args.configmap))
        elif args.command == "config-dump":
            text, differs = _config_dump(args)
            print(text, end="")
            return 1 if differs else 0
        elif args.command == "registry-config":
            registry_config.write(Path(args.data_dir), port=args.port, hub_user=args.hub_user)
        elif args.command in ("add-cluster", "add-hub"):
            print(yaml.safe_dump(asyncio.run(_add_user(args)), sort_keys=False), end="")
        elif args.command == "bootstrap":
            config = bootstrap(
                BootstrapOptions(
                    cluster=args.cluster,
                    xds_address=args.xds,
                    admin_address=args.admin,
                    node_id=args.node_id,
                    delta=args.delta,
                    tls=_bootstrap_tls(args),
                    insecure_plaintext=args.insecure_plaintext,
                    gateway=args.gateway,
                    ready_address=args.ready,
                    agent_address=args.agent_address,
                    source_cluster_stats=args.source_cluster_stats,
                )
            )
            text = (
                json.dumps(config, indent=2)
                if args.output == "json"
                else yaml.safe_dump(config, sort_keys=False)
            )
            if args.file:
                Path(args.file).write_text(text)
            else:
                print(text, end="")
        else:
            return _proxy_status(args)
    except FederationError as err:
        print(f"fedctl: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
