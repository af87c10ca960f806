"""The agent's side of basic auth and API keys: the credentials stay in their cluster.

A SecurityPolicy's ``basicAuth`` names a Secret of users (key ``.htpasswd``), its
``apiKeyAuth`` Secrets of API keys (each data key a client id, its value that client's
key). The registry, and so the hub, never sees any of it: the policy's record carries
only the agent's verdict on each Secret (:class:`~federation.registry.policies.SecretCheck`,
:meth:`Credentials.checks_for`), the hub's listener names each policy's filter and
leaves its configuration to be discovered
(:mod:`federation.translate.proxy.features.credential_auth`), and the agent serves that
configuration, credentials included, to the Envoys of its own cluster's Gateways over
the extension config discovery service (ECDS, :class:`CredentialServer`). Each Gateway's
Envoys get the configuration of the policies that cover their routes, and no other; an
Envoy proves its cluster with the cluster's client certificate, as it does to the hub.

What makes a Secret usable is what Envoy loads:

* users: lines ``name:{SHA}<base64 SHA-1>`` (Envoy checks SHA-1 only; ``htpasswd -s``
  writes them), blank lines and ``#`` comments skipped, a name at most once;
* API keys: at least one; no key empty, none shared by two clients (Envoy refuses the
  whole configuration). A client named again in a later Secret of the same policy keeps
  its first key, as Envoy Gateway documents.

Reading is :mod:`agents.secret_reads` (GETs only, at every sync, and on the Gateway
side's re-check timer since nothing watches a Secret): a Secret changed in Kubernetes
reaches the Envoys at the next re-check (``recheck_interval``, 60 s by default).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from agents.kinds import KubeObject
from agents.kube import Kube
from agents.secret_reads import SecretReads
from federation.node_groups import gateway_group
from federation.registry.gatewayapi import ReferenceGrantRecord
from federation.registry.policies import SecretCheck, SecurityPolicyRecord
from federation.translate.gateway.credential_settings import SecretRef, credential_secrets
from federation.translate.ir import CredentialAuthIR, GatewayIR
from federation.translate.proxy.features.base import listener_routes
from federation.translate.proxy.features.credential_auth import (
    api_key_auth_config,
    api_key_auth_name,
    basic_auth_config,
    basic_auth_name,
    extension_config,
)
from federation.xds.peers import NodeGroup, ServerLimits, claimed_group
from federation.xds.server import EXTENSION_SERVICE, serve
from federation.xds.snapshot import Resource, Snapshot, SnapshotCache
from federation.xds.status import SyncRegistry, XdsMetrics

log = logging.getLogger(__name__)

ObjectName = tuple[str, str]
HTPASSWD_KEY = ".htpasswd"
#: The length of a base64 SHA-1 digest, the only hash Envoy's basic auth checks.
SHA1_BASE64_LENGTH = 28


@dataclass(frozen=True)
class SecretData:
    """A Secret as read: its data (None: it does not exist), or why it cannot be used at
    all (``problem``). Values are decoded as text where they are used, so that a key
    nobody reads never makes the Secret unusable."""

    data: Mapping[str, str | bytes] | None = None
    problem: str | None = None

    def text(self, key: str) -> tuple[str | None, str]:
        """(why ``key`` cannot be used or None, its value as text)."""
        value = (self.data or {}).get(key, "")
        if isinstance(value, str):
            return None, value
        try:
            return None, value.decode()
        except UnicodeDecodeError:
            return f"its key {key!r} is not UTF-8 text", ""


def read_secret(namespace: str, name: str, secret: KubeObject | None) -> SecretData:
    """What :class:`SecretReads` keeps of a Secret: its data, base64-decoded."""
    if secret is None:
        return SecretData(problem="it does not exist")
    decoded: dict[str, str | bytes] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            decoded[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            return SecretData(problem=f"its key {key!r} is not base64")
    return SecretData(data=decoded)


def _forbidden(namespace: str, name: str) -> SecretData:
    return SecretData(problem="the agent may not get it")


def htpasswd_users(text: str) -> tuple[str | None, str]:
    """(why Envoy would refuse ``text`` or None, the users as Envoy gets them)."""
    seen: set[str] = set()
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip() or line.startswith("#"):
            continue
        user, colon, password = line.partition(":")
        where = f"{HTPASSWD_KEY} line {number}"
        if not colon or not user or not password:
            return f"{where} is not NAME:HASH", ""
        where += f" (user {user!r})"
        if not password.startswith("{SHA}"):
            return (
                f"{where}: the password is not a {{SHA}} hash, the only kind Envoy checks "
                "(htpasswd -s writes it)",
                "",
            )
        if len(password) - len("{SHA}") != SHA1_BASE64_LENGTH:
            return f"{where}: the {{SHA}} hash is not {SHA1_BASE64_LENGTH} base64 characters", ""
        if user in seen:
            return f"{where}: the user is named twice", ""
        seen.add(user)
        lines.append(line)
    if not lines:
        # Envoy refuses an empty user list and would keep the previous users in force.
        return f"{HTPASSWD_KEY} holds no user", ""
    return None, "".join(f"{line}\n" for line in lines)


@dataclass(frozen=True)
class PolicyCredentials:
    """One policy's verdicts and, when every Secret is usable, its filters' configuration
    by discovered name."""

    checks: tuple[SecretCheck, ...] = ()
    configs: Mapping[str, Any] = field(default_factory=dict)


def _check(ref: SecretRef, problem: str | None) -> SecretCheck:
    return SecretCheck(ref.namespace, ref.name, usable=problem is None, message=problem)


def policy_credentials(
    policy: SecurityPolicyRecord,
    grants: Iterable[ReferenceGrantRecord],
    secrets: Mapping[ObjectName, SecretData],
) -> PolicyCredentials:
    """The verdicts on ``policy``'s Secrets (read into ``secrets``) and the configuration
    of its filters (pure). A Secret the policy may not use is not read: no verdict."""
    basic_refs, key_refs = credential_secrets(policy, list(grants))
    spec = policy.spec
    checks: list[SecretCheck] = []
    configs: dict[str, Any] = {}
    name = f"{policy.namespace}/{policy.name}"
    if spec.basic_auth is not None and basic_refs and basic_refs[0].problem is None:
        ref = basic_refs[0]
        read = secrets.get((ref.namespace, ref.name), SecretData(problem="not read yet"))
        problem, users = read.problem, ""
        if problem is None and read.data is not None:
            if HTPASSWD_KEY not in read.data:
                problem = f"it has no {HTPASSWD_KEY!r} key"
            else:
                problem, text = read.text(HTPASSWD_KEY)
                if problem is None:
                    problem, users = htpasswd_users(text)
        checks.append(_check(ref, problem))
        if problem is None:
            forward = spec.basic_auth.forward_username_header
            configs[basic_auth_name(CredentialAuthIR(name))] = basic_auth_config(users, forward)
    if spec.api_key_auth is not None:
        keys = spec.api_key_auth
        clients: dict[str, str] = {}
        owners: dict[str, str] = {}
        usable = True
        for ref in key_refs:
            if ref.problem is not None:
                usable = False
                continue
            problem = _api_keys(
                secrets.get((ref.namespace, ref.name), SecretData(problem="not read yet")),
                clients,
                owners,
            )
            usable = usable and problem is None
            checks.append(_check(ref, problem))
        if usable:
            sources = [
                (kind, n)
                for source in keys.extract_from
                for kind, names in (
                    ("header", source.headers),
                    ("query", source.params),
                    ("cookie", source.cookies),
                )
                for n in names
            ]
            configs[api_key_auth_name(CredentialAuthIR(name))] = api_key_auth_config(
                sorted(clients.items()),
                sources,
                keys.forward_client_id_header,
                bool(keys.sanitize),
            )
    return PolicyCredentials(tuple(checks), configs)


def _api_keys(read: SecretData, clients: dict[str, str], owners: dict[str, str]) -> str | None:
    """Add a Secret's clients to ``clients`` (client -> key; ``owners``: key -> client);
    why it cannot be used, if it cannot."""
    if read.problem is not None or read.data is None:
        return read.problem
    if not read.data:
        return "it holds no API key"
    added: dict[str, str] = {}
    for client in sorted(read.data):
        problem, key = read.text(client)
        if problem is not None:
            return problem
        if not key:
            return f"the key of client {client!r} is empty"
        if client in clients:
            continue  # named by an earlier Secret of the policy: its first key is kept
        other = owners.get(key) or next((c for c, k in added.items() if k == key), None)
        if other is not None:
            return f"client {client!r} has the same key as client {other!r}"
        added[client] = key
    clients.update(added)
    owners.update({key: client for client, key in added.items()})
    return None


def gateway_resources(gateway: GatewayIR, configs: Mapping[str, Any]) -> list[Resource]:
    """The discovered configurations the Envoys of ``gateway`` need: those of the
    policies that cover its routes, and no other."""
    names = set()
    for listener in gateway.listeners:
        for route in listener_routes(listener):
            if route.basic_auth is not None:
                names.add(basic_auth_name(route.basic_auth))
            if route.api_key_auth is not None:
                names.add(api_key_auth_name(route.api_key_auth))
    return [Resource.of(extension_config(n, configs[n]), n) for n in sorted(names) if n in configs]


NOT_SERVED = (
    "this cluster's agent does not serve credentials to its Gateways' Envoys "
    "(federation-agent --credentials-address)"
)


def _not_served(
    policy: SecurityPolicyRecord, grants: list[ReferenceGrantRecord]
) -> PolicyCredentials:
    refs = [r for refs in credential_secrets(policy, grants) for r in refs if r.problem is None]
    return PolicyCredentials(tuple(_check(r, NOT_SERVED) for r in refs))


class Credentials:
    """The Secrets this cluster's SecurityPolicies name for basic auth and API keys."""

    def __init__(self, kube: Kube) -> None:
        self._reads = SecretReads(kube, read_secret, _forbidden)
        self._policies: dict[ObjectName, PolicyCredentials] = {}

    async def refresh(
        self,
        policies: Iterable[SecurityPolicyRecord],
        grants: Iterable[ReferenceGrantRecord],
        *,
        serving: bool = True,
    ) -> None:
        """Read every Secret the policies may use, and work out their verdicts and
        configurations. Not ``serving`` (no :class:`CredentialServer`), nothing is read
        and every Secret is unusable: the Envoys could not get it."""
        policies, grants = list(policies), list(grants)
        if not serving:
            self._policies = {(p.namespace, p.name): _not_served(p, grants) for p in policies}
            await self._reads.refresh(())
            return
        wanted = {
            (ref.namespace, ref.name)
            for policy in policies
            for refs in credential_secrets(policy, grants)
            for ref in refs
            if ref.problem is None
        }
        secrets = await self._reads.refresh(wanted)
        before = self._policies
        self._policies = {
            (p.namespace, p.name): policy_credentials(p, grants, secrets) for p in policies
        }
        for key, now in self._policies.items():
            old = before.get(key)
            if old is not None and old.checks == now.checks:
                continue
            for check in now.checks:
                if not check.usable:
                    log.warning(
                        "SecurityPolicy %s/%s: Secret %s/%s: %s",
                        *key,
                        check.namespace,
                        check.name,
                        check.message,
                    )

    def checks_for(self, policy: SecurityPolicyRecord) -> tuple[SecretCheck, ...]:
        found = self._policies.get((policy.namespace, policy.name))
        return () if found is None else found.checks

    @property
    def configs(self) -> dict[str, Any]:
        """Every usable policy's filter configurations, by discovered name."""
        return {n: c for p in self._policies.values() for n, c in p.configs.items()}

    @property
    def watched(self) -> bool:
        return bool(self._reads.readings)

    @property
    def failing(self) -> bool:
        return any(not c.usable for p in self._policies.values() for c in p.checks)


#: Every Envoy opens one stream per discovered filter (Envoy's gRPC subscriptions are not
#: aggregated), and all the Envoys of a cluster share its certificate, so they count as
#: one peer: allow Gateways x replicas x policies streams.
CREDENTIAL_LIMITS = ServerLimits(max_streams_per_peer=65_536)


class CredentialServer:
    """ECDS for this cluster's Gateway Envoys: each Gateway's group holds the filter
    configurations its routes need (:func:`gateway_resources`). Nothing is served before
    the first :meth:`update`: an Envoy keeps its last configuration (or, new, refuses
    the requests those filters guard) until the agent has read its Secrets."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.cache = SnapshotCache()
        self.sync = SyncRegistry()
        self.metrics = XdsMetrics()
        self.server: grpc.aio.Server | None = None

    async def start(
        self,
        address: str,
        credentials: grpc.ServerCredentials | None,
        node_group: NodeGroup = claimed_group,
    ) -> None:
        self.server = await serve(
            self.cache,
            self.sync,
            address,
            limits=CREDENTIAL_LIMITS,
            metrics=self.metrics,
            credentials=credentials,
            node_group=node_group,
            service=EXTENSION_SERVICE,
            server_name=f"the agent of cluster {self.cluster}",
        )

    def update(self, gateways: Iterable[GatewayIR], configs: Mapping[str, Any]) -> None:
        """Serve each Gateway's Envoys what its routes need now; forget Gateways gone."""
        groups = {}
        for gateway in gateways:
            group = gateway_group(self.cluster, gateway.namespace, gateway.name)
            groups[group] = Snapshot.build(gateway_resources(gateway, configs))
        for group in set(self.cache.groups()) - set(groups):
            self.cache.discard(group)
        for group, snapshot in groups.items():
            self.cache.set(group, snapshot)
        if not self.cache.ready:
            self.cache.mark_ready()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(1.0)
