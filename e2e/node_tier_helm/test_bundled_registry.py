"""The hub chart's bundled registry on a real node: the hub reads it with its generated
read-only credentials, a member cluster's user made by ``fedctl add-cluster`` survives
the registry pod's restart (saved in the ACL file on its volume), and an upgrade keeps
the passwords."""

from __future__ import annotations

import base64

import pytest
from redis import Redis
from redis.exceptions import NoPermissionError

from e2e import pods
from e2e.federation import fedctl
from e2e.helm_install import CHARTS, HUB_CLUSTER, Installed, diagnosis, helm
from e2e.nodes import NodeCluster
from e2e.processes import HarnessError, wait_until
from e2e.traffic import DEADLINE
from federation.cli.members import ADMIN_URL_ENV

NS = "fed-bundled"
RELEASE = "bundled"
NAME = "bundled-federation-hub"


def _persistent_volume(cluster: NodeCluster) -> dict[str, object]:
    """A hostPath volume inside the environment's own directory (the node tier has no
    storage provisioner), writable by the registry's non-root user."""
    path = cluster.node_dir / "pv-registry"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "registry-pv"},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual", "hostPath": {"path": str(path)},
            "persistentVolumeReclaimPolicy": "Retain",
        },
    }  # fmt: skip


def _secret(cluster: NodeCluster, key: str) -> str:
    out = cluster.kubectl(
        "get", "secret", f"{NAME}-registry", "-n", NS, "-o", f"jsonpath={{.data.{key}}}"
    ).stdout
    return base64.b64decode(out).decode()


def _hub_log(cluster: NodeCluster) -> str:
    done = cluster.kubectl(
        "logs", "-n", NS, "-l", "app.kubernetes.io/component=hub", "--tail=-1", check=False
    )
    return done.stdout


def _registry_address(cluster: NodeCluster) -> str:
    ip = next(iter(pods.wait_ready_pods(
        cluster, NS, "app.kubernetes.io/component=registry", 1
    ).values()))  # fmt: skip
    return cluster.forward_to_pod(ip, 6379, name="registry")


def test_the_bundled_registry_keeps_members_across_restarts(installed: Installed) -> None:
    cluster = installed.env.cluster(HUB_CLUSTER)
    pods.apply(cluster, pods.namespace(NS), _persistent_volume(cluster))
    installed.xds_secret(cluster, "hub", NS)
    values = ["--set", "registry.bundled.enabled=true",
              "--set", "registry.bundled.persistence.storageClass=manual"]  # fmt: skip
    helm(cluster, "install", RELEASE, str(CHARTS / "federation-hub"), "-n", NS, *values)
    try:
        address = _registry_address(cluster)
        # The hub read the (empty) registry as its generated user: it says it has no
        # members yet, and stays unready until one joins, as after a flush.
        wait_until(
            lambda: "the registry has no member clusters" in _hub_log(cluster),
            timeout=DEADLINE * 3,
            what="the hub to read the bundled registry",
        )
    except HarnessError as err:
        raise HarnessError(f"{err}\n{diagnosis(installed.env, NS, [HUB_CLUSTER])}") from err
    assert "WRONGPASS" not in _hub_log(cluster) and "NOAUTH" not in _hub_log(cluster)
    admin_password = _secret(cluster, "admin-password")
    hub_url = _secret(cluster, "url")
    assert hub_url.startswith(f"redis://hub:{_secret(cluster, 'hub-password')}@{NAME}-registry:")
    host, port = address.rsplit(":", 1)
    with Redis(host=host, port=int(port), username="hub",
               password=_secret(cluster, "hub-password")) as hub:  # fmt: skip
        assert hub.hget("fed:v2:{z}:records", "x") is None  # reads
        with pytest.raises(NoPermissionError):
            hub.hset("fed:v2:{z}:records", "x", "1")  # and only reads

    done = fedctl(
        "add-cluster", "z", env={ADMIN_URL_ENV: f"redis://default:{admin_password}@{address}/0"}
    )
    assert done.returncode == 0, done.stderr
    password = done.stdout.split("redis://agent-z:", 1)[1].split("@", 1)[0]

    def member_can_write(where: str) -> bool:
        host, port = where.rsplit(":", 1)
        try:
            with Redis(host=host, port=int(port), username="agent-z", password=password) as r:
                return bool(r.hset("fed:v2:{z}:records", "probe", "1") is not None)
        except OSError:
            return False

    assert member_can_write(address)
    cluster.kubectl("delete", "pod", "-n", NS, "-l", "app.kubernetes.io/component=registry")
    address = _registry_address(cluster)
    wait_until(lambda: member_can_write(address), timeout=DEADLINE,
               what="agent-z's user back after the registry restarted")  # fmt: skip

    helm(cluster, "upgrade", RELEASE, str(CHARTS / "federation-hub"), "-n", NS, *values,
         "--set", "logLevel=DEBUG")  # fmt: skip
    assert _secret(cluster, "admin-password") == admin_password
    assert member_can_write(_registry_address(cluster))
    helm(cluster, "uninstall", RELEASE, "-n", NS, "--wait")
