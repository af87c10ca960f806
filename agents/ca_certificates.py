"""The agent's reading of the CA certificates that its Gateways' client certificate
validation names (``spec.tls.frontend``, and ClientTrafficPolicies'
``tls.clientValidation``).

They are ConfigMaps (public certificates, never keys) with a ``ca.crt`` of PEM
certificates. The agent reads each one a Gateway names, in its own namespace or another
whose ReferenceGrant allows it (:func:`federation.translate.gateway.frontend_tls.ca_references`
says which), and its record of the Gateway carries what it found
(:class:`~federation.registry.gatewayapi.CACertificate`): the certificates, or why there
are none. The first translation stage turns that into the listener's conditions and its
Envoy's validation context. ConfigMaps are watched, so a changed CA reaches the Envoys at
the next sync (:meth:`agents.gateway.GatewayAgent.on_config_map`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from cryptography import x509

from agents import kinds as k
from agents.kinds import KubeObject
from agents.kube import Kube, KubeError
from federation.registry import gatewayapi as g
from federation.registry import policies as p
from federation.translate.gateway.frontend_tls import ca_references, policy_ca_references
from federation.translate.gateway.refs import gateway_may_use

log = logging.getLogger(__name__)

CA_KEY = "ca.crt"
PARALLEL_READS = 8


def read_ca(namespace: str, name: str, config_map: KubeObject | None) -> g.CACertificate:
    """What ConfigMap ``namespace/name`` (``config_map``: as read; None: not found) gives."""
    what = f"ConfigMap {namespace}/{name}"
    if config_map is None:
        return g.CACertificate(namespace, name, message=f"{what} does not exist")
    pem = (config_map.get("data") or {}).get(CA_KEY)
    if not pem:
        return g.CACertificate(namespace, name, message=f"{what} has no {CA_KEY}")
    try:
        x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        return g.CACertificate(
            namespace, name, message=f"{what}: {CA_KEY} holds no PEM certificate that parses"
        )
    return g.CACertificate(namespace, name, pem=pem)


class CACertificates:
    """The CA ConfigMaps of the cluster's Gateways, as last read."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._read: dict[tuple[str, str], g.CACertificate] = {}

    def wanted(
        self,
        gateways: Iterable[g.GatewayRecord],
        grants: Iterable[g.ReferenceGrantRecord],
        policies: Iterable[p.ClientTrafficPolicyRecord] = (),
    ) -> list[tuple[str, str]]:
        grants = list(grants)
        found = {
            (ns, name)
            for gateway in gateways
            for ns, name in ca_references(gateway)
            if gateway_may_use(grants, gateway.namespace, "ConfigMap", ns, name)
        }
        found |= {key for policy in policies for key in policy_ca_references(policy)}
        return sorted(found)

    async def refresh(
        self,
        gateways: Iterable[g.GatewayRecord],
        grants: Iterable[g.ReferenceGrantRecord],
        policies: Iterable[p.ClientTrafficPolicyRecord] = (),
    ) -> None:
        """Read every ConfigMap the Gateways and ClientTrafficPolicies may use. A failed
        read keeps what was last read of it (or raises, when nothing was)."""
        wanted = self.wanted(gateways, grants, policies)
        limit = asyncio.Semaphore(PARALLEL_READS)

        async def one(key: tuple[str, str]) -> g.CACertificate:
            async with limit:
                try:
                    found = await self.kube.get(k.CONFIG_MAPS.path(*key))
                except KubeError as err:
                    if err.status == 403:
                        return g.CACertificate(
                            *key, message=f"ConfigMap {key[0]}/{key[1]}: the agent may not get it"
                        )
                    if key in self._read:
                        log.warning("keeping the last CA of ConfigMap %s/%s: %s", *key, err)
                        return self._read[key]
                    raise
                return read_ca(*key, found)

        results = await asyncio.gather(*(one(key) for key in wanted))
        for key, ca in zip(wanted, results, strict=True):
            if self._read.get(key) != ca and ca.message is not None:
                log.warning("client CA %s/%s: %s", *key, ca.message)
        self._read = dict(zip(wanted, results, strict=True))

    def for_gateway(self, gateway: g.GatewayRecord) -> tuple[g.CACertificate, ...]:
        """What was read of the ConfigMaps ``gateway`` names, sorted."""
        return tuple(self._read[key] for key in ca_references(gateway) if key in self._read)

    def for_policy(self, policy: p.ClientTrafficPolicyRecord) -> tuple[g.CACertificate, ...]:
        """What was read of the ConfigMaps ``policy`` names, sorted."""
        return tuple(self._read[key] for key in policy_ca_references(policy) if key in self._read)

    def names(self, namespace: str, name: str) -> bool:
        """Whether ConfigMap ``namespace/name`` is one a Gateway names."""
        return (namespace, name) in self._read
