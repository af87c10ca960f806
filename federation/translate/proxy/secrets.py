"""IR certificates into SDS Secrets: file paths only, so Envoy reloads a renewed certificate.

Called by :mod:`federation.translate.proxy` for every certificate of an HTTPS listener, and
by :mod:`.listeners`, whose TLS contexts name the Secret. Envoy honours
``watched_directory`` only for a certificate that came over SDS: inlined in a listener,
the files are read once and a renewed certificate is never picked up. So each
certificate is a Secret of its own, sent over ADS, which holds only where the files are
(``<secret dir>/<namespace>/<name>/tls.crt`` and ``tls.key``, the mounted Kubernetes
Secret) and the directory to watch: kubelet renews a mounted Secret by swapping the
directory's ``..data`` symlink, which Envoy sees as a move in that directory and reloads
both files. Private keys never travel through the registry or xDS.
"""

from __future__ import annotations

import posixpath

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from federation.translate.ir import CertificateIR

#: Where Envoys find mounted certificate Secrets unless told otherwise.
DEFAULT_SECRET_DIR = "/etc/federation/secrets"


def secret_name(cert: CertificateIR) -> str:
    """The SDS name of a certificate: one per Kubernetes Secret, whoever uses it, so two
    listeners serving the same certificate share one Secret (and one file watch)."""
    return f"cert/{cert.namespace}/{cert.name}"


def certificate_paths(cert: CertificateIR, secret_dir: str) -> tuple[str, str, str]:
    """(directory, certificate chain, private key) of a mounted TLS Secret."""
    directory = posixpath.join(secret_dir, cert.namespace, cert.name)
    return directory, posixpath.join(directory, "tls.crt"), posixpath.join(directory, "tls.key")


def certificate_secret(cert: CertificateIR, secret_dir: str) -> secret_pb2.Secret:
    """The SDS Secret of ``cert``: where Envoy reads it, and the directory it watches."""
    directory, crt, key = certificate_paths(cert, secret_dir)
    return secret_pb2.Secret(
        name=secret_name(cert),
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(filename=crt),
            private_key=base_pb2.DataSource(filename=key),
            watched_directory=base_pb2.WatchedDirectory(path=directory),
        ),
    )
