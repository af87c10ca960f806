"""``fedctl coredns``: add or remove the block that forwards clusterset.local in CoreDNS.

    fedctl coredns add --service federation/federation-agent-dns \\
        [--configmap kube-system/coredns] [--kubeconfig PATH]
    fedctl coredns remove [--configmap kube-system/coredns] [--kubeconfig PATH]

``add`` reads the ClusterIP of the agent's DNS Service and writes the block of
:mod:`federation.dns.coredns` into the ``Corefile`` key of CoreDNS's ConfigMap (replacing
the block already there); ``remove`` takes it out (a ConfigMap or key that is not there
has nothing to remove: that is no error, so that an uninstall is never blocked). Every
other line stays as it was, and either run twice changes nothing more. A Corefile whose
markers are broken, or that has a ``clusterset.local`` block of someone else's, is left
alone with an error saying so. The write names the ConfigMap's resourceVersion,
so an edit made meanwhile by someone else is never overwritten: the command reads again
and retries. CoreDNS's ``reload`` plugin picks the change up.

The agent chart runs these as Helm hooks when ``dns.coreDNS.manage`` is set: ``add``
after install and upgrade, ``remove`` before uninstall. In a pod it uses the pod's
service account; elsewhere ``--kubeconfig`` or the usual kubeconfig.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_random_exponential

from federation.dns import coredns
from federation.errors import FederationError, InvalidInputError

COREFILE_KEY = "Corefile"


def _namespaced(value: str, what: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name:
        raise InvalidInputError(f"{what} must be NAMESPACE/NAME, got {value!r}")
    return namespace, name


def api(kubeconfig: str | None) -> client.CoreV1Api:
    """A client from ``kubeconfig``, else in-cluster, else the default kubeconfig."""
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        else:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as err:
        raise FederationError(f"no Kubernetes credentials: {err}") from err
    return client.CoreV1Api()


def service_ip(core: client.CoreV1Api, service: str) -> str:
    namespace, name = _namespaced(service, "--service")
    try:
        found: Any = core.read_namespaced_service(name, namespace)
    except ApiException as err:
        raise FederationError(f"Service {service}: {err.status} {err.reason}") from err
    ip = found.spec.cluster_ip
    if not ip or ip == "None":
        raise FederationError(f"Service {service} has no ClusterIP for CoreDNS to forward to")
    return str(ip)


def _conflict(err: BaseException) -> bool:
    return isinstance(err, ApiException) and err.status == 409


@retry(
    retry=retry_if_exception(_conflict),
    stop=stop_after_attempt(8),
    wait=wait_random_exponential(multiplier=0.1, max=2),
    reraise=True,
)
def _edit(core: client.CoreV1Api, configmap: str, server: str | None) -> bool:
    namespace, name = _namespaced(configmap, "--configmap")
    try:
        found: Any = core.read_namespaced_config_map(name, namespace)
    except ApiException as err:
        if err.status == 404 and server is None:
            return False  # nothing to remove the block from
        raise FederationError(f"ConfigMap {configmap}: {err.status} {err.reason}") from err
    data = dict(found.data or {})
    if COREFILE_KEY not in data:
        if server is None:
            return False
        raise FederationError(f"ConfigMap {configmap} has no {COREFILE_KEY} key")
    before = data[COREFILE_KEY]
    if server:
        after = coredns.with_block(before, server)  # checks the Corefile first
    else:
        coredns.check(before)
        after = coredns.without_block(before)
    if after == before:
        return False
    data[COREFILE_KEY] = after
    body = {"metadata": {"resourceVersion": found.metadata.resource_version}, "data": data}
    core.patch_namespaced_config_map(name, namespace, body)
    return True


def add(core: client.CoreV1Api, configmap: str, service: str) -> str:
    """Forward clusterset.local to ``service``'s ClusterIP; what was done, in words."""
    ip = service_ip(core, service)
    changed = _edit(core, configmap, ip)
    return (
        f"{configmap}: clusterset.local forwarded to {ip} ({'written' if changed else 'unchanged'})"
    )


def remove(core: client.CoreV1Api, configmap: str) -> str:
    """Take the block out; what was done, in words."""
    changed = _edit(core, configmap, None)
    return f"{configmap}: clusterset.local block {'removed' if changed else 'was not there'}"
