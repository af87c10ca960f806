"""A small clusterset PKI: who is who on the hub's xDS port.

The hub serves each Envoy its member cluster's configuration, which holds the names,
ports and pod addresses of the whole clusterset, so it must know which cluster a
connection speaks for. Identity is a SPIFFE-style URI in the certificate's subject
alternative names:

* a member cluster's Envoys: ``spiffe://<trust domain>/cluster/<cluster id>``
  (client certificates);
* the hub: ``spiffe://<trust domain>/hub``, plus the DNS names and IP addresses that
  Envoys dial (a serving certificate).

:func:`cluster_of` reads the cluster back from a verified peer certificate's URIs; the
xDS server compares it with the ``node.cluster`` an Envoy claims. Certificates from
another issuer (cert-manager, a company CA) work the same way as long as they carry
such a URI.

``fedctl pki`` (:mod:`federation.cli.pki`) mints a CA, the hub's certificate and one
client certificate per cluster for people without a PKI of their own; the test
environment uses the same functions.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.errors import InvalidInputError
from federation.identity import parse_cluster_id, subdomain_errors

DEFAULT_TRUST_DOMAIN = "federation.local"
DEFAULT_VALIDITY = datetime.timedelta(days=365)
_CLUSTER_PATH = "/cluster/"
_HUB_PATH = "/hub"
_AGENT_PATH = "/agent"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def x509_name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name(attrs)


def check_trust_domain(trust_domain: str) -> str:
    """``trust_domain`` if it is a DNS-like name (lower case), else InvalidInputError."""
    errors = subdomain_errors(trust_domain)
    if errors:
        raise InvalidInputError(f"trust domain {trust_domain!r}: {'; '.join(errors)}")
    return trust_domain


def cluster_uri(trust_domain: str, cluster: str) -> str:
    return f"spiffe://{trust_domain}{_CLUSTER_PATH}{cluster}"


def hub_uri(trust_domain: str) -> str:
    return f"spiffe://{trust_domain}{_HUB_PATH}"


def agent_uri(trust_domain: str, cluster: str) -> str:
    """The identity of a member cluster's agent serving its Gateways' Envoys: not a
    cluster's (:func:`cluster_of` reads no cluster from it), so an agent's certificate
    never reads the hub's configuration, nor an Envoy's serves credentials."""
    return f"{cluster_uri(trust_domain, cluster)}{_AGENT_PATH}"


def cluster_of(uris: Iterable[str], trust_domain: str) -> str | None:
    """The member cluster named by the first URI ``spiffe://<trust_domain>/cluster/<id>``
    of ``uris``; None when there is none (another trust domain counts as none)."""
    prefix = f"spiffe://{trust_domain}{_CLUSTER_PATH}"
    for uri in uris:
        if uri.startswith(prefix):
            cluster = uri[len(prefix) :]
            if cluster and "/" not in cluster:
                return cluster
    return None


def _checked_ips(ips: Sequence[str], flag: str) -> list[str]:
    """``ips``, each an IP address (InvalidInputError naming ``flag`` when not)."""
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError as err:
            raise InvalidInputError(f"{flag} {ip!r} is not an IP address") from err
    return list(ips)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``<stem>.crt`` and ``<stem>.key`` (mode 0600) in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_bytes(self.cert_pem)
        key.touch(mode=0o600)
        key.chmod(0o600)
        key.write_bytes(self.key_pem)
        return cert, key


def self_signed_ca(
    common_name: str, validity: datetime.timedelta = DEFAULT_VALIDITY
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new CA certificate (signing leaves only) and its key."""
    key = new_key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509_name(common_name))
        .issuer_name(x509_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


class CertificateAuthority:
    """A CA that signs serving and client certificates; new, or loaded from PEM."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self._key = key

    @classmethod
    def create(
        cls, common_name: str, validity: datetime.timedelta = DEFAULT_VALIDITY
    ) -> CertificateAuthority:
        return cls(*self_signed_ca(common_name, validity))

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        """A CA from its PEM certificate and unencrypted PEM key (EC P-256)."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as err:
            raise InvalidInputError(f"cannot read the CA certificate or key: {err}") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidInputError("the CA key must be an EC key (fedctl pki makes P-256)")
        return cls(cert, key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return pem_key(self._key)

    def issue(
        self,
        subject: x509.Name,
        usages: Sequence[x509.ObjectIdentifier],
        sans: Sequence[x509.GeneralName] = (),
        validity: datetime.timedelta = DEFAULT_VALIDITY,
    ) -> KeyPair:
        """A leaf certificate for ``subject`` with extended key ``usages`` and ``sans``."""
        key = new_key()
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + validity, self.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), pem_key(key))

    def server_pair(
        self,
        common_name: str,
        *,
        ips: Sequence[str] = (),
        names: Sequence[str] = (),
        uris: Sequence[str] = (),
        validity: datetime.timedelta = DEFAULT_VALIDITY,
    ) -> KeyPair:
        """A serving certificate for IP addresses ``ips``, DNS ``names`` and ``uris``."""
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        sans += [x509.DNSName(n) for n in names]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        return self.issue(x509_name(common_name), [ExtendedKeyUsageOID.SERVER_AUTH], sans, validity)

    def hub(
        self,
        trust_domain: str,
        *,
        names: Sequence[str] = (),
        ips: Sequence[str] = (),
        validity: datetime.timedelta = DEFAULT_VALIDITY,
    ) -> KeyPair:
        """The hub's serving certificate, for the ``names`` and ``ips`` Envoys dial."""
        if not names and not ips:
            raise InvalidInputError(
                "the hub's certificate needs at least one DNS name or IP address that "
                "Envoys dial (--hub-name, --hub-ip)"
            )
        return self.server_pair(
            "federation-hub",
            ips=_checked_ips(ips, "--hub-ip"),
            names=names,
            uris=[hub_uri(check_trust_domain(trust_domain))],
            validity=validity,
        )

    def cluster(
        self, trust_domain: str, cluster: str, validity: datetime.timedelta = DEFAULT_VALIDITY
    ) -> KeyPair:
        """A member cluster's client certificate: its Envoys present it to the hub."""
        cluster_id = parse_cluster_id(cluster)
        uri = cluster_uri(check_trust_domain(trust_domain), cluster_id)
        return self.issue(
            x509_name(f"federation-cluster-{cluster_id}"),
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            [x509.UniformResourceIdentifier(uri)],
            validity,
        )

    def agent(
        self,
        trust_domain: str,
        cluster: str,
        names: Sequence[str] = (),
        ips: Sequence[str] = (),
        validity: datetime.timedelta = DEFAULT_VALIDITY,
    ) -> KeyPair:
        """A member cluster's agent's serving certificate: it serves the cluster's
        Gateway Envoys their credentials (basic auth, API keys) and proves itself with
        ``spiffe://<trust domain>/cluster/<id>/agent``."""
        cluster_id = parse_cluster_id(cluster)
        return self.server_pair(
            f"federation-agent-{cluster_id}",
            ips=_checked_ips(ips, "--agent-ip"),
            names=list(names),
            uris=[agent_uri(check_trust_domain(trust_domain), cluster_id)],
            validity=validity,
        )

    def client(self, user: str, groups: Sequence[str] = ()) -> KeyPair:
        """A client certificate without a URI (a Kubernetes user: CN user, O groups)."""
        return self.issue(x509_name(user, groups), [ExtendedKeyUsageOID.CLIENT_AUTH])


def uris_of(cert_pem: bytes) -> list[str]:
    """The URI subject alternative names of a PEM certificate."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(u) for u in ext.value.get_values_for_type(x509.UniformResourceIdentifier)]
