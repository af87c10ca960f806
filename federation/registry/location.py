"""Where a process finds the registry: the Redis URL, credentials included, and the
files that secure its TLS connection.

Used by the hub, the agent and ``fedctl add-cluster``/``add-hub`` at start-up. Everything
is read from the environment, never from the command line, where ``ps`` and
``/proc/<pid>/cmdline`` show it to every user of the machine. In a pod it comes from a
Secret (``env.valueFrom.secretKeyRef``) and mounted files; locally, from the shell or
the harness.

* ``FEDERATION_REGISTRY_URL``: ``redis://USER:PASSWORD@HOST:PORT/DB``, or ``rediss://…``
  for TLS; ``redis+cluster://`` for a Redis Cluster and ``redis+sentinel://`` for a
  primary under Sentinel, each with a ``rediss+`` form (see :mod:`topology`).
  ``fedctl`` reads its admin URL from ``FEDERATION_REGISTRY_ADMIN_URL``.
* ``FEDERATION_REGISTRY_CA_FILE``: a PEM bundle of the CA(s) that must have signed the
  server's certificate; without it the system's trusted CAs are used.
* ``FEDERATION_REGISTRY_CERT_FILE`` and ``FEDERATION_REGISTRY_KEY_FILE``: a client
  certificate and its (unencrypted) key, for a server that asks for one; both or neither.

With ``rediss://`` (or ``rediss+…``) the server's certificate is always verified, its
host name or IP address included: nothing here or in the URL turns that off (``ssl_*``
query parameters are refused). The files are set only with ``rediss://``: a
``redis://`` URL with a CA would otherwise connect in clear text without anyone
noticing. Files are checked (read and parsed) when the settings are read, so that a
wrong path stops the process at start-up with the variable's name; a process reads them
again only when it restarts.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from federation.errors import InvalidInputError
from federation.registry.topology import SCHEMES as TOPOLOGY_SCHEMES
from federation.registry.topology import parse as parse_topology

REGISTRY_URL_ENV = "FEDERATION_REGISTRY_URL"
CA_FILE_ENV = "FEDERATION_REGISTRY_CA_FILE"
CERT_FILE_ENV = "FEDERATION_REGISTRY_CERT_FILE"
KEY_FILE_ENV = "FEDERATION_REGISTRY_KEY_FILE"
TLS_ENVS = (CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV)
SCHEMES = tuple(TOPOLOGY_SCHEMES)
TLS_SCHEME = "rediss"


def _tls(scheme: str) -> bool:
    return TOPOLOGY_SCHEMES.get(scheme, ("server", False))[1]


def registry_url(
    environ: Mapping[str, str] | None = None,
    variable: str = REGISTRY_URL_ENV,
    whose: str = "this process's",
) -> str:
    """The registry URL in ``variable`` of the environment, checked; a clear error
    without it. ``whose`` names whose credentials it must carry, for that error."""
    env = os.environ if environ is None else environ
    url = env.get(variable, "").strip()
    if not url:
        raise InvalidInputError(
            f"{variable} is not set: it must hold the registry's Redis URL with "
            f"{whose} credentials, redis://USER:PASSWORD@HOST:PORT/DB (it is read "
            "from the environment so that the password never appears in a command line)"
        )
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise InvalidInputError(
            f"{variable} must be a {', '.join(s + '://' for s in SCHEMES)} URL, "
            f"not {scheme + '://' if scheme else 'one without a scheme'}"
        )
    return url


@dataclass(frozen=True)
class RegistryLocation:
    """A registry URL and its TLS files, checked by :func:`location_of`.

    The URL holds a password: it is left out of ``repr``, which shows :attr:`address`.
    """

    url: str = field(repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @property
    def tls(self) -> bool:
        return _tls(urlsplit(self.url).scheme)

    @property
    def address(self) -> str:
        """The URL without credentials or database, for messages: ``rediss://HOST:PORT``."""
        parts = urlsplit(self.url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.asyncio.Redis.from_url`` (none without TLS)."""
        if not self.tls:
            return {}
        options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
        if self.ca_file:
            options["ssl_ca_certs"] = self.ca_file
        if self.cert_file:
            options["ssl_certfile"] = self.cert_file
            options["ssl_keyfile"] = self.key_file
        return options


def registry_location(
    environ: Mapping[str, str] | None = None,
    variable: str = REGISTRY_URL_ENV,
    whose: str = "this process's",
) -> RegistryLocation:
    """The registry URL in ``variable`` with the TLS files of the environment, checked."""
    env = os.environ if environ is None else environ
    return location_of(registry_url(env, variable, whose), env, variable)


def location_of(
    url: str, environ: Mapping[str, str] | None = None, variable: str = REGISTRY_URL_ENV
) -> RegistryLocation:
    """``url`` (read from ``variable``, named in errors) with the environment's TLS files.

    Raises :class:`InvalidInputError` for TLS files with a URL that is not ``rediss://``,
    a certificate without its key (or the reverse), a file that cannot be read or parsed,
    and ``ssl_*`` parameters in the URL's query.
    """
    env = os.environ if environ is None else environ
    ca, cert, key = (env.get(name, "").strip() or None for name in TLS_ENVS)
    parts = urlsplit(url)
    given = [name for name, value in zip(TLS_ENVS, (ca, cert, key), strict=True) if value]
    if given and not _tls(parts.scheme):
        raise InvalidInputError(
            f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} set but {variable} "
            f"is a {parts.scheme}:// URL, which connects without TLS: use "
            f"{TLS_SCHEME}://USER:PASSWORD@HOST:PORT/DB (the server's TLS port)"
        )
    query = sorted({name for name, _ in parse_qsl(parts.query) if name.startswith("ssl")})
    if query:
        raise InvalidInputError(
            f"{variable} must not set {', '.join(query)} in its query: TLS is configured "
            f"with {', '.join(TLS_ENVS)}, and certificates are always verified"
        )
    parse_topology(url, variable)  # a cluster or sentinel URL's nodes, service and query
    if bool(cert) != bool(key):
        have, lack = (CERT_FILE_ENV, KEY_FILE_ENV) if cert else (KEY_FILE_ENV, CERT_FILE_ENV)
        raise InvalidInputError(
            f"{have} is set without {lack}: a client certificate needs both (or neither)"
        )
    if ca:
        _check_ca(ca)
    if cert and key:
        _check_pair(cert, key)
    return RegistryLocation(url, ca, cert, key)


def _readable(variable: str, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as err:
        raise InvalidInputError(f"{variable}: cannot read {path}: {err.strerror}") from err


def _check_ca(path: str) -> None:
    _readable(CA_FILE_ENV, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as err:
        raise InvalidInputError(
            f"{CA_FILE_ENV}: {path} holds no PEM CA certificate ({err.reason or err})"
        ) from err


def _no_password() -> bytes:
    # A callback, so that OpenSSL never prompts on a terminal for an encrypted key.
    raise InvalidInputError("encrypted private keys are not supported")


def _check_pair(cert: str, key: str) -> None:
    _readable(CERT_FILE_ENV, cert)
    _readable(KEY_FILE_ENV, key)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, InvalidInputError) as err:
        reason = getattr(err, "reason", None) or err
        raise InvalidInputError(
            f"{CERT_FILE_ENV} ({cert}) and {KEY_FILE_ENV} ({key}) are not a PEM certificate "
            f"and its unencrypted private key ({reason})"
        ) from err
