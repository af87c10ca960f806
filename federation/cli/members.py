"""``fedctl add-cluster`` and ``fedctl add-hub``: registry users and their Secrets.

Adding a member cluster means creating its agent's Redis ACL user (it may write only
its own cluster's keys, see :mod:`federation.registry.acl`) and handing the agent its
credentials. These commands create or replace the user with a fresh password, using
an admin connection whose URL comes from ``FEDERATION_REGISTRY_ADMIN_URL`` (never
from argv), and print a Kubernetes Secret manifest that holds the user's registry URL
under the key ``url``, which the charts read. Apply it in the member cluster (or the
hub's), in the namespace of the release. With a ``rediss://`` admin URL the admin
connection uses TLS, verified with the CA in ``FEDERATION_REGISTRY_CA_FILE`` (and a client
certificate from ``FEDERATION_REGISTRY_CERT_FILE``/``_KEY_FILE`` when set), and the printed
URLs keep the ``rediss://`` scheme; each agent gets its CA (and certificate) separately.

Running a command again rotates the password: apply the new Secret and restart the
agent (or hub).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from federation.errors import InvalidInputError
from federation.identity import parse_cluster_id
from federation.registry.acl import (
    agent_user,
    agent_user_rules,
    apply_users_everywhere,
    hub_user_rules,
)
from federation.registry.location import SCHEMES, location_of, registry_url
from federation.registry.topology import parse as parse_topology

ADMIN_URL_ENV = "FEDERATION_REGISTRY_ADMIN_URL"
SECRET_KEY = "url"


@dataclass(frozen=True)
class RegistryUser:
    """A registry user to create: its ACL rules, and the URL it connects with."""

    user: str
    rules: list[str]
    url: str


def _user_url(address: str, user: str, password: str) -> str:
    """``address`` (``redis[s]://HOST:PORT/DB``, a cluster's or sentinels'
    ``redis+cluster://HOST:PORT,...``, ``redis+sentinel://HOST:PORT,.../SERVICE``; no
    credentials) with the user's."""
    parts = urlsplit(address)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise InvalidInputError(
            "--registry-address must be redis://HOST:PORT/DB, rediss://…, "
            f"redis+cluster://HOST:PORT,… or redis+sentinel://HOST:PORT,…/SERVICE, got {address!r}"
        )
    parse_topology(address, "--registry-address")
    if parts.username or parts.password:
        raise InvalidInputError("--registry-address must not hold credentials")
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return parts._replace(netloc=netloc).geturl()


def agent_registry_user(cluster: str, address: str, password: str | None = None) -> RegistryUser:
    cluster = parse_cluster_id(cluster)
    password = password or secrets.token_urlsafe(24)
    user = agent_user(cluster)
    return RegistryUser(
        user, agent_user_rules(cluster, password), _user_url(address, user, password)
    )


def hub_registry_user(user: str, address: str, password: str | None = None) -> RegistryUser:
    password = password or secrets.token_urlsafe(24)
    return RegistryUser(user, hub_user_rules(user, password), _user_url(address, user, password))


def secret_manifest(name: str, namespace: str, user: RegistryUser) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "federation"},
            "annotations": {"federation.dev/registry-user": user.user},
        },
        "type": "Opaque",
        "stringData": {SECRET_KEY: user.url},
    }


def admin_url(environ: Mapping[str, str] | None = None) -> str:
    """The admin connection's URL, from ``FEDERATION_REGISTRY_ADMIN_URL``."""
    return registry_url(environ, ADMIN_URL_ENV, "an admin's (a user allowed to run ACL SETUSER)")


def default_address(admin: str) -> str:
    """The admin URL without its credentials: where users connect unless told otherwise."""
    parts = urlsplit(admin)
    host = parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=host).geturl()


async def create(
    admin: str, users: Sequence[RegistryUser], environ: Mapping[str, str] | None = None
) -> None:
    """Create or replace ``users`` in the registry behind ``admin``.

    On a Redis Cluster or a sentinel set, on every data node. A ``rediss://`` admin URL
    (or ``rediss+…``) connects over TLS with the files of ``FEDERATION_REGISTRY_CA_FILE``,
    ``FEDERATION_REGISTRY_CERT_FILE`` and ``FEDERATION_REGISTRY_KEY_FILE`` in ``environ``
    (the process's environment by default): the admin's own, like the URL.
    """
    location = location_of(admin, environ, ADMIN_URL_ENV)
    # Every data node: a Redis Cluster's or a sentinel set's replicas need the users
    # before a failover promotes them.
    await apply_users_everywhere(admin, location.client_options(), [u.rules for u in users])
