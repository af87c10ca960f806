"""``fedctl registry-config``: the configuration of the hub chart's bundled registry.

Run by an init container of the bundled redis-server before it starts. It writes
``redis.conf`` and the ACL file into the data directory (the persistent volume):
the admin user (``default``) and the hub's read-only user, with the passwords of the
release's Secret (given as environment variables, never argv), and every other user
already in the file kept as it is: the agents' users, which ``fedctl add-cluster``
creates and saves there (``ACL SAVE``), survive restarts and upgrades.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from federation.errors import InvalidInputError
from federation.registry.acl import hub_user_rules

ADMIN_PASSWORD_ENV = "FEDERATION_REGISTRY_ADMIN_PASSWORD"
HUB_PASSWORD_ENV = "FEDERATION_REGISTRY_HUB_PASSWORD"
ACL_FILE = "users.acl"
CONF_FILE = "redis.conf"


def redis_conf(data_dir: Path, port: int) -> str:
    return "\n".join(
        [
            f"port {port}",
            "bind * -::*",
            f'dir "{data_dir}"',
            f'aclfile "{data_dir / ACL_FILE}"',
            "appendonly yes",
            "appendfsync everysec",
            # Every user has a password; the listener is the pod's.
            "protected-mode no",
            "",
        ]
    )


def _line(rules: Sequence[str]) -> str:
    return "user " + " ".join(rules)


def _user_of(line: str) -> str:
    words = line.split()
    return words[1] if len(words) > 1 and words[0] == "user" else ""


def merged_acl(existing: str, admin_password: str, hub_user: str, hub_password: str) -> str:
    """The ACL file: ours (admin, hub) replaced, every other user's line kept."""
    ours = {"default", hub_user}
    kept = [line for line in existing.splitlines() if _user_of(line) not in ours | {""}]
    admin = ["default", "reset", "on", f">{admin_password}", "~*", "&*", "+@all"]
    return "\n".join([_line(admin), _line(hub_user_rules(hub_user, hub_password)), *kept]) + "\n"


def write(data_dir: Path, *, port: int, hub_user: str) -> None:
    """Write both files from the passwords in the environment."""
    passwords = {env: os.environ.get(env, "") for env in (ADMIN_PASSWORD_ENV, HUB_PASSWORD_ENV)}
    missing = [env for env, value in passwords.items() if not value]
    if missing:
        raise InvalidInputError(f"{', '.join(missing)} not set: the registry's passwords")
    acl = data_dir / ACL_FILE
    existing = acl.read_text() if acl.exists() else ""
    acl.write_text(
        merged_acl(existing, passwords[ADMIN_PASSWORD_ENV], hub_user, passwords[HUB_PASSWORD_ENV])
    )
    acl.chmod(0o600)
    (data_dir / CONF_FILE).write_text(redis_conf(data_dir, port))
