"""The bundled registry's ACL file (federation.cli.registry_config)."""

from __future__ import annotations

from pathlib import Path

from federation.cli.registry_config import merged_acl, redis_conf

SAVED = (
    "user agent-z on #abc %R~fed:v2:* ~fed:v2:{z}:* resetchannels -@all +@stream\n"
    "user default on #old ~* &* +@all\n"
    "user hub on #old %R~fed:v2:* -@all +@read\n"
)


def test_ours_are_replaced_and_every_member_is_kept() -> None:
    lines = merged_acl(SAVED, "admin-pw", "hub", "hub-pw").splitlines()
    assert lines[0] == "user default reset on >admin-pw ~* &* +@all"
    assert lines[1].startswith("user hub reset on >hub-pw resetchannels %R~fed:v2:* ")
    assert "-flushall" in lines[1] and "+hset" in lines[1]
    assert lines[2:] == [SAVED.splitlines()[0]]  # agent-z, as Redis saved it
    assert not any("#old" in line for line in lines)


def test_a_first_start_has_only_ours() -> None:
    assert len(merged_acl("", "a", "hub", "h").splitlines()) == 2


def test_the_config_points_at_the_volume() -> None:
    conf = redis_conf(Path("/data"), 6379)
    assert 'aclfile "/data/users.acl"' in conf and 'dir "/data"' in conf
    assert "appendonly yes" in conf and "port 6379" in conf
