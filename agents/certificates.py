"""The agent's check of the certificate Secrets that its Gateways' HTTPS listeners name.

A Gateway's Envoys read each listener certificate from the Secret mounted into their pods
(:mod:`agents.infra`); the private key never leaves the cluster. What the registry gets is
the agent's verdict on each Secret (:class:`~federation.registry.gatewayapi.CertificateCheck`
on the Gateway's record): usable, or why not. The first translation stage, run alike by
the hub and the agent, leaves a listener without a usable certificate unserved and gives
it ``ResolvedRefs=False/InvalidCertificateRef`` with that message, before anything about
it reaches an Envoy.

A Secret is usable when Envoy would load it (checked against Envoy 1.40):

* it exists, is of type ``kubernetes.io/tls`` and has non-empty ``tls.crt`` and ``tls.key``;
* ``tls.crt`` holds PEM certificates (the first one is the one served) and ``tls.key`` an
  unencrypted PEM private key;
* the key is the first certificate's, and of a kind Envoy serves: RSA of 2048 bits or more,
  ECDSA on P-256, P-384 or P-521, or Ed25519.

An expired certificate is still usable (Envoy serves it; clients decide). A Secret in
another namespace than its Gateway is read only when a ReferenceGrant there allows the
Gateway's namespace to refer to it (without one, the first stage says ``RefNotPermitted``
and nothing of it is read); a pod mounts Secrets of its own namespace only, so the infra
manager copies such a Secret next to the Gateway (:mod:`agents.infra`).

Reading: one GET per referenced Secret (the agent may not list or watch Secrets), on every
sync of the Gateway side (:mod:`agents.secret_reads`). Nothing watches a Secret, so
:class:`GatewayAgent <agents.gateway.GatewayAgent>` also re-checks on a timer. A verdict
is kept per Secret and ``resourceVersion``, so an unchanged Secret is not parsed again; the
material itself is dropped as soon as it is checked.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agents.kinds import KubeObject
from agents.kube import Kube
from agents.secret_reads import SecretReads
from federation.registry import gatewayapi as g
from federation.translate.gateway.refs import gateway_may_use

log = logging.getLogger(__name__)

ObjectName = tuple[str, str]

TLS_SECRET_TYPE = "kubernetes.io/tls"
TLS_KEYS = ("tls.crt", "tls.key")
#: The smallest RSA key Envoy serves.
MIN_RSA_BITS = 2048
#: The ECDSA curves Envoy serves.
EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")


def referenced(gateway: g.GatewayRecord) -> list[ObjectName]:
    """(namespace, name) of every Secret the Gateway's HTTPS listeners name, sorted."""
    found = set()
    for listener in gateway.spec.listeners:
        if listener.protocol != "HTTPS" or listener.tls is None:
            continue
        for ref in listener.tls.certificate_refs:
            if (ref.group or "", ref.kind or "Secret") == ("", "Secret"):
                found.add((ref.namespace or gateway.namespace, ref.name))
    return sorted(found)


def check_secret(namespace: str, name: str, secret: KubeObject | None) -> g.CertificateCheck:
    """The verdict on Secret ``namespace/name`` (``secret``: as read; None: not found)."""
    what = f"Secret {namespace}/{name}"

    def unusable(message: str) -> g.CertificateCheck:
        return g.CertificateCheck(namespace, name, usable=False, message=message)

    if secret is None:
        return unusable(f"{what} does not exist")
    kind = secret.get("type") or "Opaque"
    if kind != TLS_SECRET_TYPE:
        return unusable(f"{what} is of type {kind}, not {TLS_SECRET_TYPE}")
    data = secret.get("data") or {}
    missing = [key for key in TLS_KEYS if not data.get(key)]
    if missing:
        return unusable(f"{what} has no {' or '.join(missing)}")
    try:
        crt, key = (base64.b64decode(data[k], validate=True) for k in TLS_KEYS)
    except (binascii.Error, TypeError, ValueError):
        return unusable(f"{what}: tls.crt or tls.key is not base64")
    problem = pair_problem(crt, key)
    if problem is not None:
        return unusable(f"{what}: {problem}")
    return g.CertificateCheck(namespace, name, usable=True)


def pair_problem(crt: bytes, key: bytes) -> str | None:
    """Why Envoy could not serve the PEM certificate chain ``crt`` with the PEM private
    key ``key`` (None: it can). The message quotes nothing of either."""
    try:
        leaf = x509.load_pem_x509_certificates(crt)[0]
    except ValueError:
        return "tls.crt holds no PEM certificate that parses"
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except TypeError:
        return "tls.key is encrypted; Envoy needs an unencrypted private key"
    except (ValueError, UnsupportedAlgorithm):
        return "tls.key holds no PEM private key that parses"
    try:
        public = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "the certificate in tls.crt has a public key of a kind Envoy does not serve"
    unsupported = _unsupported_key(public)
    if unsupported is not None:
        return unsupported
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*spki) != public.public_bytes(*spki):
        return "tls.key is not the private key of the first certificate in tls.crt"
    return None


def _unsupported_key(public: object) -> str | None:
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < MIN_RSA_BITS:
            return (
                f"the certificate's RSA key has {public.key_size} bits; Envoy serves "
                f"{MIN_RSA_BITS} or more"
            )
        return None
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in EC_CURVES:
            return (
                f"the certificate's ECDSA key is on curve {public.curve.name}; Envoy serves "
                "P-256, P-384 and P-521"
            )
        return None
    if isinstance(public, ed25519.Ed25519PublicKey):
        return None
    kind = type(public).__name__.removeprefix("_").removesuffix("PublicKey")  # DSA, Ed448
    return f"the certificate's key is {kind}; Envoy serves RSA, ECDSA and Ed25519 keys"


def _forbidden(namespace: str, name: str) -> g.CertificateCheck:
    message = f"Secret {namespace}/{name} cannot be checked: the agent may not get it"
    return g.CertificateCheck(namespace, name, usable=False, message=message)


class CertificateChecker:
    """The verdicts on the Secrets this cluster's Gateways name, refreshed by GETs."""

    def __init__(self, kube: Kube) -> None:
        self._reads = SecretReads(kube, lambda ns, n, s: check_secret(ns, n, s), _forbidden)
        self._checked: Mapping[ObjectName, g.CertificateCheck] = {}

    async def refresh(
        self,
        gateways: Iterable[g.GatewayRecord],
        grants: Iterable[g.ReferenceGrantRecord] = (),
    ) -> None:
        """Read every Secret a Gateway names in its own namespace, or in another whose
        ReferenceGrants allow it, and keep only their verdicts (:class:`SecretReads
        <agents.secret_reads.SecretReads>`: a 403 is a verdict, another failure keeps the
        last one)."""
        grants = list(grants)
        wanted = {
            (ns, name)
            for gateway in gateways
            for ns, name in referenced(gateway)
            if gateway_may_use(grants, gateway.namespace, "Secret", ns, name)
        }
        checked = await self._reads.refresh(wanted)
        for key, check in checked.items():
            before = self._checked.get(key)
            if before is None or before != check:
                if check.usable:
                    log.info("certificate Secret %s/%s is usable", *key)
                else:
                    log.warning("certificate Secret %s/%s: %s", *key, check.message)
        self._checked = checked

    def checks_for(self, gateway: g.GatewayRecord) -> tuple[g.CertificateCheck, ...]:
        """The verdicts on the Secrets ``gateway`` names, sorted (none for a Secret not
        read: not yet, or of another namespace that grants nothing)."""
        return tuple(self._checked[key] for key in referenced(gateway) if key in self._checked)

    def usable(self, namespace: str, name: str) -> bool:
        """Whether the Secret was read and found usable."""
        found = self._checked.get((namespace, name))
        return found is not None and found.usable

    @property
    def failing(self) -> bool:
        """Whether a Secret read is unusable (re-checked sooner)."""
        return any(not check.usable for check in self._checked.values())

    @property
    def watched(self) -> bool:
        """Whether any Secret is read at all."""
        return bool(self._checked)
