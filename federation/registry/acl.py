"""Redis 7 ACL users for the registry: least privilege for agents and the hub.

The agent of cluster A may write only A's keys and stream, so a compromised
or buggy agent cannot change another cluster's records; the hub reads
everything. The functions here build ``ACL SETUSER``
argument lists (user name first); :func:`apply_users` runs them with an
admin connection. Called by whoever provisions Redis: the e2e harness, the
tests, and operators' tooling.

What an agent (user ``agent-<cluster>``) gets:

* read access to every ``fed:v2:*`` key (``%R~``): each agent also watches the
  whole clusterset;
* read and write access to ``fed:v2:{<cluster>}:*`` only (``%RW~``);
* on ``fed:v2:members``, SADD and nothing else, through an ACL selector: the
  root permissions give that key read access only, so SREM, DEL or SPOP on it
  are refused, and one agent cannot remove another cluster from the set;
* on ``fed:v2:{_doorbell}:stream``, XADD and nothing else, through a second
  selector: on a Redis Cluster the agent rings it after each change;
* only the command categories its writer and reader use: streams, hashes,
  sets, strings, keyspace commands (DEL, EXISTS), transactions and
  connection commands, and CLUSTER SLOTS (a Redis Cluster client's slot map).

The hub user gets read access to ``fed:v2:*``, and may write (HSET, HDEL) only its
own keys under ``fed:v2:{_hub}:``, where it publishes what the Envoys applied.

Key patterns restrict only commands that name keys. KEYS and SCAN take a
pattern, not a key, so they would list every key of the database; FLUSHALL
and FLUSHDB take no key at all, so they would delete every cluster's records
however narrow the key patterns are. Both users are therefore denied these by
name (and RANDOMKEY, which also reveals key names), besides the @dangerous,
@admin and @scripting categories. Pub/sub channels are not granted: the
registry does not use them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis

from federation.errors import InvalidInputError
from federation.registry import keys
from federation.registry.store import RegistryUnavailableError
from federation.registry.tls_errors import tls_failure
from federation.registry.topology import (
    CLIENT_ERRORS,
    client_from_url,
    data_nodes,
    node_client,
)

#: Commands denied by name to every registry user (see the module docstring).
DENIED_COMMANDS = ("keys", "scan", "randomkey", "flushall", "flushdb")
DENIED_CATEGORIES = ("@dangerous", "@admin", "@scripting")
#: What a Redis Cluster client asks a node before its first command: the slot map.
_CLUSTER_CLIENT = ("+cluster|slots",)

# A cluster id is an RFC 1123 subdomain (federation.identity). Checked
# again here because the id becomes a key *pattern*: a glob character such as
# "*" or "[" in it would grant write access to other clusters' keys.
_SAFE_CLUSTER = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_SAFE_USER = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.:]*$")


def agent_user(cluster: str) -> str:
    """The Redis user of ``cluster``'s agent."""
    return f"agent-{cluster}"


def _credentials(user: str, password: str) -> list[str]:
    if not _SAFE_USER.match(user):
        raise InvalidInputError(f"Redis user name {user!r} is not a plain identifier")
    if not password:
        raise InvalidInputError(f"Redis user {user!r} needs a password")
    # "reset" first: applying the rules again replaces the user entirely (old
    # passwords, keys, selectors), so the result never depends on history.
    return [user, "reset", "on", f">{password}", "resetchannels"]


def _denials() -> list[str]:
    return [f"-{c}" for c in DENIED_CATEGORIES] + [f"-{c}" for c in DENIED_COMMANDS]


def agent_user_rules(cluster: str, password: str) -> list[str]:
    """``ACL SETUSER`` arguments for ``cluster``'s agent, user name first."""
    if not _SAFE_CLUSTER.match(cluster):
        raise InvalidInputError(f"cluster id {cluster!r} is not an RFC 1123 subdomain")
    return [
        *_credentials(agent_user(cluster), password),
        f"%R~{keys.PREFIX}*",
        f"%RW~{keys.cluster_prefix(cluster)}*",
        "-@all",
        "+@stream",
        "+@hash",
        "+@set",
        "+@string",
        "+@keyspace",
        "+@transaction",
        "+@connection",
        *_CLUSTER_CLIENT,
        # Denials come after the grants: ACL rules apply left to right.
        *_denials(),
        # A selector is checked on its own: SADD (only) with write access to
        # the members key, which the root permissions above leave read-only.
        f"(%W~{keys.MEMBERS} +sadd)",
        # On a Redis Cluster, rings of the doorbell: XADD to that one key.
        f"(%W~{keys.DOORBELL} +xadd)",
    ]


def hub_user_rules(user: str, password: str) -> list[str]:
    """``ACL SETUSER`` arguments for a hub user, user name first.

    It reads every key, and writes only the hub's own (``fed:v2:{_hub}:*``), with the
    hash commands it publishes Gateway state with.
    """
    return [
        *_credentials(user, password),
        f"%R~{keys.PREFIX}*",
        f"%RW~{keys.HUB_PREFIX}*",
        "-@all",
        "+@read",
        "+hset",
        "+hdel",
        "+@transaction",
        "+@connection",
        *_CLUSTER_CLIENT,
        *_denials(),
    ]


async def apply_users(admin_client: Redis, rules_list: Iterable[Sequence[str]]) -> None:
    """Create or replace each user with ``ACL SETUSER <rules...>``.

    ``admin_client`` must be allowed to run ACL SETUSER. Redis keeps users in
    memory: after a restart without an ACL file they are gone and must be
    applied again.
    """
    for rules in rules_list:
        user = rules[0] if rules else "?"
        try:
            # redis-py's acl_setuser() takes structured arguments, not rule strings.
            await admin_client.execute_command(  # type: ignore[no-untyped-call]
                "ACL", "SETUSER", *rules
            )
        except CLIENT_ERRORS as err:
            raise tls_failure(err, admin_client) or RegistryUnavailableError(
                f"ACL SETUSER {user} failed: {_redact(str(err), rules)}"
            ) from err


async def apply_users_everywhere(
    admin_url: str, options: dict[str, Any], rules_list: Sequence[Sequence[str]]
) -> int:
    """Create or replace each user on every data node behind ``admin_url``; the number
    of nodes. Redis keeps ACL users per node, unreplicated: a replica promoted by a
    failover must have them already. A node with an ACL file (the hub chart's bundled
    one) keeps them across restarts once they are saved there (ACL SAVE).

    ``options`` are the admin's redis-py keyword arguments (TLS files). A node added to
    the cluster later has none of them: run this again (``fedctl add-cluster`` does).
    """
    try:
        nodes = await data_nodes(admin_url, options)
    except CLIENT_ERRORS as err:
        raise RegistryUnavailableError(f"finding the registry's nodes failed: {err}") from err
    clients = (
        [node_client(admin_url, node, options) for node in nodes]
        if nodes
        else [client_from_url(admin_url, options)]
    )
    try:
        for client in clients:
            assert isinstance(client, Redis)
            await apply_users(client, rules_list)
            await _save_if_acl_file(client)
    finally:
        for client in clients:
            await client.aclose()
    return len(clients)


async def _save_if_acl_file(client: Redis) -> None:
    try:
        config = await client.config_get("aclfile")
        if config.get("aclfile") or config.get(b"aclfile"):  # type: ignore[call-overload]
            await client.execute_command("ACL", "SAVE")  # type: ignore[no-untyped-call]
    except CLIENT_ERRORS as err:
        raise tls_failure(err, client) or RegistryUnavailableError(
            f"saving registry users failed: {err}"
        ) from err


def _redact(message: str, rules: Sequence[str]) -> str:
    # Redis quotes the rule it rejects, which may be a password rule.
    for rule in rules:
        if len(rule) > 1 and rule[0] in ">#<":
            message = message.replace(rule[1:], "***")
    return message
