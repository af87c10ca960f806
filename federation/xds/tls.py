"""mTLS server credentials for the xDS port, reloaded when their files change.

:func:`reloading_credentials` builds gRPC server credentials from a certificate, key and
client CA on disk (a Secret mounted in a pod, which the kubelet replaces atomically when
cert-manager renews it). gRPC asks for the configuration at every new TLS handshake; the
files are re-read when their inode, modification time or size changed, so a renewed
certificate is used by the next connection while established streams keep theirs
(nothing is dropped). A set of files that cannot be read or does not parse (a rotation
caught half-way) is logged and the previous configuration kept.

Clients must present a certificate signed by the client CA: one without is refused in
the TLS handshake, before any request (gRPC logs "Handshake failed").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from federation.errors import InvalidInputError

log = logging.getLogger("federation.xds.tls")
#: Seconds after which files that could not be used are read again, changed or not (a
#: rotation caught half-way on a file system with coarse modification times).
RETRY_AFTER = 5.0


@dataclass(frozen=True)
class TlsFiles:
    """The hub's serving certificate and key, and the CA that signs clients' certificates."""

    cert: Path
    key: Path
    client_ca: Path

    def stamp(self) -> tuple[tuple[int, int, int], ...]:
        """Inode, modification time and size of each file (through symlinks, as the
        kubelet swaps a Secret volume's files): changes when one is replaced."""
        stats = [os.stat(p) for p in (self.cert, self.key, self.client_ca)]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, key, client CA) PEM, checked; InvalidInputError when not."""
        try:
            cert, key, ca = (p.read_bytes() for p in (self.cert, self.key, self.client_ca))
        except OSError as err:
            raise InvalidInputError(f"cannot read the xDS TLS files: {err}") from err
        pems = (("certificate", self.cert, cert), ("client CA", self.client_ca, ca))
        for what, path, data in pems:
            try:
                x509.load_pem_x509_certificates(data)
            except ValueError as err:
                raise InvalidInputError(f"xDS TLS {what} {path} is not PEM: {err}") from err
        try:
            private = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as err:
            raise InvalidInputError(
                f"xDS TLS key {self.key} is not an unencrypted PEM key: {err}"
            ) from err
        leaf = x509.load_pem_x509_certificates(cert)[0]
        if leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise InvalidInputError(f"xDS TLS key {self.key} does not belong to {self.cert}")
        try:
            usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            usages = None
        if usages is not None and ExtendedKeyUsageOID.SERVER_AUTH not in usages:
            # Envoys refuse it ("unsupported certificate purpose"): e.g. a cluster's client
            # certificate mounted where the hub's should be.
            raise InvalidInputError(
                f"xDS TLS certificate {self.cert} is not for serving (no serverAuth in its "
                "extended key usage): is it a cluster's client certificate?"
            )
        return cert, key, ca


def _configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    cert, key, ca = files.read()
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


class CertificateReloader:
    """gRPC's certificate configuration fetcher over :class:`TlsFiles`.

    ``on_reload`` is called (with True on success, False on a failed read) whenever the
    files changed, for the hub's metrics.
    """

    def __init__(self, files: TlsFiles, on_reload: Callable[[bool], None] | None = None) -> None:
        self.files = files
        self._on_reload = on_reload
        # Read now: bad files at start are an error, not a warning.
        self.initial = _configuration(files)
        self._stamp = files.stamp()
        self._failed_at: float | None = None

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration when the files changed since the last call, else None."""
        try:
            stamp = self.files.stamp()
        except OSError as err:
            log.warning("cannot stat the xDS TLS files, keeping the current ones: %s", err)
            return None
        retry = self._failed_at is not None and time.monotonic() - self._failed_at >= RETRY_AFTER
        if stamp == self._stamp and not retry:
            return None
        self._stamp = stamp
        try:
            config = _configuration(self.files)
        except InvalidInputError as err:
            if self._failed_at is None:
                log.warning("xDS TLS files changed but cannot be used, keeping the old: %s", err)
                self._report(False)
            self._failed_at = time.monotonic()  # read again after RETRY_AFTER
            return None
        self._failed_at = None
        log.info("xDS TLS certificate reloaded from %s", self.files.cert)
        self._report(True)
        return config

    def _report(self, ok: bool) -> None:
        if self._on_reload is not None:
            self._on_reload(ok)


def reloading_credentials(
    files: TlsFiles, on_reload: Callable[[bool], None] | None = None
) -> grpc.ServerCredentials:
    """Server credentials requiring a client certificate signed by ``files.client_ca``,
    re-reading the files for new connections when they change."""
    reloader = CertificateReloader(files, on_reload)
    return grpc.dynamic_ssl_server_credentials(
        reloader.initial, reloader, require_client_authentication=True
    )
