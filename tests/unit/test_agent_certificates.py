"""The agent's verdicts on listener certificate Secrets (agents.certificates)."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from agents import certificates as c
from agents.kube import KubeError
from federation.registry import gatewayapi as g

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


def certificate(key: PrivateKey, *, days: int = 30, start: datetime.datetime = NOW) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shop.example.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .sign(
            key,
            None
            if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
            else hashes.SHA256(),
        )
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: PrivateKey, fmt: serialization.PrivateFormat | None = None) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        fmt or serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def secret(crt: bytes | None, key: bytes | None, type_: str | None = c.TLS_SECRET_TYPE) -> Any:
    data = {
        name: base64.b64encode(value).decode()
        for name, value in (("tls.crt", crt), ("tls.key", key))
        if value is not None
    }
    out: dict[str, Any] = {
        "metadata": {"namespace": "edge", "name": "shop-cert", "resourceVersion": "7"},
        "data": data,
    }
    if type_ is not None:
        out["type"] = type_
    return out


def verdict(obj: Any) -> g.CertificateCheck:
    return c.check_secret("edge", "shop-cert", obj)


# --- the verdict on one Secret ------------------------------------------------------------


def test_a_tls_secret_whose_key_is_its_certificates_is_usable(rsa_key: rsa.RSAPrivateKey) -> None:
    good = verdict(secret(certificate(rsa_key), pem_key(rsa_key)))
    assert good == g.CertificateCheck("edge", "shop-cert", usable=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["p256", "p384", "ed25519"],
)
def test_the_keys_envoy_serves_are_usable(make: Callable[[], PrivateKey]) -> None:
    key = make()
    assert verdict(secret(certificate(key), pem_key(key))).usable


def test_a_chain_a_pkcs1_key_and_an_expired_certificate_are_usable(
    rsa_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    # The leaf first, then an intermediate; Envoy serves expired certificates too.
    chain = certificate(rsa_key) + certificate(other_key)
    pkcs1 = pem_key(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert verdict(secret(chain, pkcs1)).usable
    expired = certificate(rsa_key, days=1, start=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
    assert verdict(secret(expired, pem_key(rsa_key))).usable


def test_a_missing_secret_is_unusable() -> None:
    check = verdict(None)
    assert (check.usable, check.message) == (False, "Secret edge/shop-cert does not exist")


@pytest.mark.parametrize(
    ("type_", "shown"), [("Opaque", "Opaque"), (None, "Opaque"), ("kubernetes.io/ssh-auth", None)]
)
def test_a_secret_of_another_type_is_unusable(
    rsa_key: rsa.RSAPrivateKey, type_: str | None, shown: str | None
) -> None:
    check = verdict(secret(certificate(rsa_key), pem_key(rsa_key), type_))
    assert not check.usable
    assert check.message == (
        f"Secret edge/shop-cert is of type {shown or type_}, not kubernetes.io/tls"
    )


@pytest.mark.parametrize(
    ("crt", "key", "missing"),
    [(True, False, "tls.key"), (False, True, "tls.crt"), (False, False, "tls.crt or tls.key")],
)
def test_a_secret_without_its_certificate_or_key_is_unusable(
    rsa_key: rsa.RSAPrivateKey, crt: bool, key: bool, missing: str
) -> None:
    obj = secret(certificate(rsa_key) if crt else None, pem_key(rsa_key) if key else b"")
    check = verdict(obj)
    assert (check.usable, check.message) == (False, f"Secret edge/shop-cert has no {missing}")


@pytest.mark.parametrize(
    ("crt", "key", "problem"),
    [
        ("garbage", "good", "tls.crt holds no PEM certificate that parses"),
        ("truncated", "good", "tls.crt holds no PEM certificate that parses"),
        ("good", "garbage", "tls.key holds no PEM private key that parses"),
        ("good", "encrypted", "tls.key is encrypted; Envoy needs an unencrypted private key"),
    ],
)
def test_pem_that_does_not_parse_is_unusable(
    rsa_key: rsa.RSAPrivateKey, crt: str, key: str, problem: str
) -> None:
    good_crt = certificate(rsa_key)
    crts = {"good": good_crt, "garbage": b"not a certificate", "truncated": good_crt[:300]}
    keys = {
        "good": pem_key(rsa_key),
        "garbage": b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
        "encrypted": rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        ),
    }
    check = verdict(secret(crts[crt], keys[key]))
    assert (check.usable, check.message) == (False, f"Secret edge/shop-cert: {problem}")


def test_a_key_that_is_not_the_certificates_is_unusable(
    rsa_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    check = verdict(secret(certificate(rsa_key), pem_key(other_key)))
    assert not check.usable
    assert check.message == (
        "Secret edge/shop-cert: tls.key is not the private key of the first certificate in tls.crt"
    )
    # The key of the second certificate of a chain is not the served one's either.
    chain = certificate(rsa_key) + certificate(other_key)
    assert not verdict(secret(chain, pem_key(other_key))).usable


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
            "the certificate's RSA key has 1024 bits; Envoy serves 2048 or more",
        ),
        (
            lambda: ec.generate_private_key(ec.SECP256K1()),
            "the certificate's ECDSA key is on curve secp256k1; Envoy serves P-256, P-384 "
            "and P-521",
        ),
        (
            lambda: ed448.Ed448PrivateKey.generate(),
            "the certificate's key is Ed448; Envoy serves RSA, ECDSA and Ed25519 keys",
        ),
    ],
    ids=["rsa-1024", "secp256k1", "ed448"],
)
def test_keys_envoy_refuses_are_unusable(make: Callable[[], PrivateKey], problem: str) -> None:
    key = make()
    check = verdict(secret(certificate(key), pem_key(key)))
    assert (check.usable, check.message) == (False, f"Secret edge/shop-cert: {problem}")


def test_no_verdict_quotes_the_secret(
    rsa_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey
) -> None:
    crt, key = certificate(rsa_key), pem_key(other_key)
    for obj in (secret(crt, key), secret(b"x" + key, key), secret(crt, b"x" + crt)):
        text = repr(verdict(obj))
        assert "BEGIN" not in text and obj["data"]["tls.key"][:40] not in text


# --- which Secrets, and reading them -----------------------------------------------------


def gateway(*listeners: g.Listener, namespace: str = "edge") -> g.GatewayRecord:
    return g.GatewayRecord("b", namespace, "gw", g.GatewaySpec("ours", listeners))


def https(name: str, *refs: g.SecretObjectReference, protocol: str = "HTTPS") -> g.Listener:
    return g.Listener(name, 443, protocol, tls=g.GatewayTLSConfig(certificate_refs=refs))


def test_the_secrets_of_https_listeners_are_the_referenced_ones() -> None:
    gw = gateway(
        https(
            "a", g.SecretObjectReference("shop-cert"), g.SecretObjectReference("x", "", "Secret")
        ),
        https("b", g.SecretObjectReference("shop-cert", namespace="edge")),
        https("c", g.SecretObjectReference("wildcard", namespace="certs")),
        https("d", g.SecretObjectReference("cm", kind="ConfigMap")),
        https("e", g.SecretObjectReference("passthrough"), protocol="TLS"),
    )
    assert c.referenced(gw) == [("certs", "wildcard"), ("edge", "shop-cert"), ("edge", "x")]


class FakeKube:
    """Serves Secrets by API path and counts the GETs."""

    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects
        self.gets: list[str] = []
        self.fail: dict[str, KubeError] = {}

    async def get(self, path: str) -> Any:
        self.gets.append(path)
        if path in self.fail:
            raise self.fail[path]
        return self.objects.get(path)


SHOP = "/api/v1/namespaces/edge/secrets/shop-cert"


async def test_the_checker_reads_only_own_namespace_secrets_and_keeps_their_verdicts(
    rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = FakeKube({SHOP: secret(certificate(rsa_key), pem_key(rsa_key))})
    checker = c.CertificateChecker(kube)  # type: ignore[arg-type]
    gw = gateway(
        https("a", g.SecretObjectReference("shop-cert"), g.SecretObjectReference("gone")),
        https("b", g.SecretObjectReference("wildcard", namespace="certs")),
    )
    await checker.refresh([gw])
    # A Secret of another namespace that grants nothing is not read (the first stage
    # says RefNotPermitted).
    assert sorted(kube.gets) == ["/api/v1/namespaces/edge/secrets/gone", SHOP]
    checks = checker.checks_for(gw)
    assert [(x.namespace, x.name, x.usable) for x in checks] == [
        ("edge", "gone", False),
        ("edge", "shop-cert", True),
    ]
    assert (checker.watched, checker.failing) == (True, True)
    assert checker.usable("edge", "shop-cert") and not checker.usable("edge", "gone")

    # An unchanged Secret (same resourceVersion) is read but not parsed again.
    parsed: list[str] = []
    real = c.check_secret

    def counted(namespace: str, name: str, obj: Any) -> g.CertificateCheck:
        parsed.append(name)
        return real(namespace, name, obj)

    monkeypatch.setattr(c, "check_secret", counted)
    await checker.refresh([gw])
    assert parsed == ["gone"]  # read again as absent; shop-cert's version is unchanged

    # A Secret no Gateway names any more is forgotten.
    await checker.refresh([])
    assert (checker.checks_for(gw), checker.watched) == ((), False)


async def test_a_granted_secret_of_another_namespace_is_read(rsa_key: rsa.RSAPrivateKey) -> None:
    wildcard = "/api/v1/namespaces/certs/secrets/wildcard"
    kube = FakeKube({wildcard: secret(certificate(rsa_key), pem_key(rsa_key))})
    checker = c.CertificateChecker(kube)  # type: ignore[arg-type]
    gw = gateway(https("b", g.SecretObjectReference("wildcard", namespace="certs")))
    grant = g.ReferenceGrantRecord(
        "b",
        "certs",
        "allow-edge",
        g.ReferenceGrantSpec(
            from_=(g.ReferenceGrantFrom(g.GATEWAY_GROUP, "Gateway", "edge"),),
            to=(g.ReferenceGrantTo("", "Secret"),),
        ),
    )
    await checker.refresh([gw], [grant])
    assert kube.gets == [wildcard]
    (check,) = checker.checks_for(gw)
    assert (check.namespace, check.name, check.usable) == ("certs", "wildcard", True)
    assert checker.usable("certs", "wildcard")


async def test_a_failed_read_keeps_the_last_verdict_or_fails_the_sync(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    kube = FakeKube({SHOP: secret(certificate(rsa_key), pem_key(rsa_key))})
    checker = c.CertificateChecker(kube)  # type: ignore[arg-type]
    gw = gateway(https("a", g.SecretObjectReference("shop-cert")))
    await checker.refresh([gw])
    kube.fail[SHOP] = KubeError("GET: 503", 503)
    await checker.refresh([gw])  # an apiserver hiccup does not take the listener down
    assert checker.checks_for(gw)[0].usable
    with pytest.raises(KubeError):  # nothing known yet: the sync is retried
        await c.CertificateChecker(kube).refresh([gw])  # type: ignore[arg-type]
    kube.fail[SHOP] = KubeError("GET: 403: forbidden", 403)
    await checker.refresh([gw])
    (check,) = checker.checks_for(gw)
    assert (check.usable, check.message) == (
        False,
        "Secret edge/shop-cert cannot be checked: the agent may not get it",
    )
