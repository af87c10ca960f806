"""Certificates and keys for a local cluster's apiserver and node components.

Used by :mod:`e2e.cluster` and :mod:`e2e.nodes` (and tests that need a throwaway CA).
Each local cluster gets its own CA; the CA signs the apiserver's serving certificate and
client certificates, which is how the harness mints identities: the certificate's common
name is the user and its organizations are the groups (kube-apiserver's x509
authenticator). Built on the product's own :mod:`federation.pki`.
"""

from __future__ import annotations

import datetime

from cryptography.hazmat.primitives import serialization

from federation import pki
from federation.pki import KeyPair, new_key, pem_key

__all__ = ["CertificateAuthority", "KeyPair", "service_account_keys"]

_VALIDITY = datetime.timedelta(days=7)


class CertificateAuthority(pki.CertificateAuthority):
    """A throwaway CA (valid a week) for one local cluster or test."""

    def __init__(self, common_name: str) -> None:
        super().__init__(*pki.self_signed_ca(common_name, _VALIDITY))

    def serving(self, *hosts: str) -> KeyPair:
        """The apiserver's serving certificate: for ``hosts`` (IPs) and the in-cluster names."""
        names = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local")  # fmt: skip
        return self.server_pair("kube-apiserver", ips=hosts, names=names, validity=_VALIDITY)

    def server_for(self, *names: str) -> KeyPair:
        """A serving certificate for DNS ``names`` (a Gateway listener's hostnames)."""
        return self.server_pair(names[0], names=names, validity=_VALIDITY)


def service_account_keys() -> KeyPair:
    """A signing key for service account tokens; ``cert_pem`` holds the public key."""
    key = new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(public, pem_key(key))
