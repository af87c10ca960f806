"""Telling a TLS misconfiguration of the registry connection from an outage.

redis-py reports a failed TLS handshake as a ``ConnectionError`` like any refused or
reset connection, with the :class:`ssl.SSLError` behind it. :func:`tls_failure` looks
for that error and, when it is one that retrying cannot fix (the server's certificate
did not verify; the server refused this process's certificate or wanted one), returns
a :class:`~federation.registry.store.RegistryTlsError` with a one-line message that
names the registry's address and the setting to look at. Other errors, an SSL error of
a connection cut half-way included, stay outages.

A server that refuses a client certificate (or wants one) sends a TLS alert, but usually
resets the connection before the client reads it: the client sees only "connection
reset", like a restarting server. :func:`refusal_hint` adds the likely cause to the
message of such an outage, which stays an outage.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

from federation.registry.location import CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV
from federation.registry.store import RegistryTlsError
from federation.registry.topology import RegistryClient, connection_kwargs, uses_tls

#: OpenSSL verify codes meaning "no trusted CA signed this certificate".
_UNTRUSTED = frozenset({2, 7, 18, 19, 20, 21})
#: OpenSSL verify codes meaning "the certificate is not for this host name or IP address".
_WRONG_NAME = frozenset({62, 64})
#: Alerts of a server that refused this client's certificate, or wanted one.
_CLIENT_REFUSED = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
    }
)


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _where(kwargs: dict[str, Any]) -> str:
    if kwargs.get("address"):
        return f"registry at {kwargs['address']}"
    if kwargs.get("path"):
        return f"registry at {kwargs['path']}"
    return f"registry at {kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def tls_failure(
    err: BaseException, client: RegistryClient | None = None
) -> RegistryTlsError | None:
    """A RegistryTlsError for ``err`` if a TLS misconfiguration caused it, else None.

    ``client`` is the client that failed; its address and files go into the message.
    """
    ssl_err = next((e for e in _chain(err) if isinstance(e, ssl.SSLError)), None)
    if ssl_err is None:
        return None
    kwargs: dict[str, Any] = {} if client is None else connection_kwargs(client)
    where = _where(kwargs)
    ca = kwargs.get("ssl_ca_certs")
    if isinstance(ssl_err, ssl.SSLCertVerificationError):
        code, detail = ssl_err.verify_code, ssl_err.verify_message
        if code in _UNTRUSTED:
            signer = (
                f"the CA in {CA_FILE_ENV} ({ca})"
                if ca
                else f"a CA this system trusts (set {CA_FILE_ENV} to the registry's CA)"
            )
            why = f"the server's certificate was not signed by {signer}"
        elif code in _WRONG_NAME:
            why = f"the server's certificate is not valid for {kwargs.get('host', 'its host')}"
        else:
            why = "the server's certificate was rejected"
        return RegistryTlsError(f"{where}: {why} ({detail})")
    reason = ssl_err.reason or ""
    if reason in _CLIENT_REFUSED:
        cert = kwargs.get("ssl_certfile")
        why = (
            f"the server refuses the client certificate in {CERT_FILE_ENV} ({cert})"
            if cert
            else f"the server requires a client certificate: set {CERT_FILE_ENV} and {KEY_FILE_ENV}"
        )
        return RegistryTlsError(f"{where}: {why} ({reason})")
    return None


def refusal_hint(err: BaseException, client: RegistryClient | None) -> str:
    """A hint for a TLS connection ``client`` had reset: the server may refuse its
    certificate (or want one). Empty for other errors and clients without TLS."""
    if client is None or not uses_tls(client):
        return ""
    if not any(isinstance(e, ConnectionResetError) for e in _chain(err)):
        return ""
    cert = connection_kwargs(client).get("ssl_certfile")
    if cert:
        return (
            " (if this persists, the server may refuse the client certificate in "
            f"{CERT_FILE_ENV} ({cert}))"
        )
    return (
        " (if this persists, the server may require a client certificate: "
        f"set {CERT_FILE_ENV} and {KEY_FILE_ENV})"
    )
