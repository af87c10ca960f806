"""Gateway API objects a platform team writes, requests through a Gateway, and statuses.

Used by the Gateway API e2e tests, the demo and the route benchmark. Objects are plain
Kubernetes JSON applied with kubectl, as a person would; statuses are read back with
``kubectl get ... -o yaml``, exactly what an operator sees.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from e2e import scenario as sc
from e2e.cluster import LocalCluster, free_port
from e2e.processes import wait_until
from federation.translate.gateway.status import CONTROLLER_NAME

GATEWAY_API = "gateway.networking.k8s.io/v1"
CLASS = "federation"
IMPORT = {"group": "multicluster.x-k8s.io", "kind": "ServiceImport"}
DEADLINE = 30.0

Obj = dict[str, Any]


def gateway_class() -> Obj:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "GatewayClass",
        "metadata": {"name": CLASS},
        "spec": {"controllerName": CONTROLLER_NAME},
    }


def listener_address(cluster: LocalCluster) -> str:
    """A free port on ``cluster``'s Envoy address, for a Gateway listener of one test."""
    host = cluster.envoy_listener.rpartition(":")[0]
    return f"{host}:{free_port(host)}"


def gateway(
    ns: str,
    name: str,
    port: int,
    *,
    hostname: str | None = None,
    certificate: str | None = None,
) -> Obj:
    """A Gateway of our class with one listener: HTTP, or HTTPS with the Secret
    ``certificate`` of its namespace."""
    listener: Obj = {
        "name": "https" if certificate else "http",
        "port": port,
        "protocol": "HTTPS" if certificate else "HTTP",
        "allowedRoutes": {"namespaces": {"from": "Same"}},
    }
    if hostname:
        listener["hostname"] = hostname
    if certificate:
        listener["tls"] = {"mode": "Terminate", "certificateRefs": [{"name": certificate}]}
    return {
        "apiVersion": GATEWAY_API,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"gatewayClassName": CLASS, "listeners": [listener]},
    }


def backend(name: str, port: int = 80, *, imported: bool = True, **extra: Any) -> Obj:
    """A backendRef: the ServiceImport ``name`` (or this cluster's Service)."""
    ref: Obj = {"name": name, "port": port, **extra}
    if imported:
        ref.update(IMPORT)
    return ref


def prefix(path: str) -> Obj:
    return {"path": {"type": "PathPrefix", "value": path}}


def http_route(ns: str, name: str, gateway_name: str, rules: Sequence[Obj]) -> Obj:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"name": gateway_name}], "rules": list(rules)},
    }


def grpc_route(ns: str, name: str, gateway_name: str, rules: Sequence[Obj]) -> Obj:
    return {
        "apiVersion": GATEWAY_API,
        "kind": "GRPCRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"parentRefs": [{"name": gateway_name}], "rules": list(rules)},
    }


def reference_grant(ns: str, name: str, from_ns: str, to_kind: str = "ServiceImport") -> Obj:
    group = "multicluster.x-k8s.io" if to_kind == "ServiceImport" else ""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "from": [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": from_ns}
            ],
            "to": [{"group": group, "kind": to_kind}],
        },
    }


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    address: str,
    path: str = "/",
    *,
    host: str = "gateway.test",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> Reply:
    """One HTTP/1.1 request to ``address`` (HOST:PORT on loopback)."""
    hostname, _, port = address.rpartition(":")
    conn = http.client.HTTPConnection(hostname, int(port), timeout=timeout)
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def try_request(address: str, path: str = "/", **kwargs: Any) -> Reply | None:
    try:
        return request(address, path, **kwargs)
    except OSError:
        return None


def wait_for_status(address: str, path: str, code: int, **kwargs: Any) -> Reply:
    """Poll until a request answers ``code``; the reply."""
    found: list[Reply] = []

    def answered() -> bool:
        reply = try_request(address, path, **kwargs)
        if reply is not None and reply.status == code:
            found.append(reply)
            return True
        return False

    wait_until(answered, timeout=DEADLINE, what=f"{path} at {address} to answer {code}")
    return found[-1]


def get_yaml(cluster: LocalCluster, kind: str, ns: str | None, name: str) -> Obj:
    """``kubectl get <kind> <name> -o yaml``, parsed."""
    args = ["get", kind, name, "-o", "yaml"]
    if ns is not None:
        args += ["-n", ns]
    obj: Obj = yaml.safe_load(cluster.kubectl(*args).stdout)
    return obj


def conditions(entries: Sequence[Obj] | None) -> dict[str, tuple[str, str]]:
    """type -> (status, reason) of a conditions list."""
    return {c["type"]: (c["status"], c["reason"]) for c in entries or []}


def route_conditions(
    cluster: LocalCluster, kind: str, ns: str, name: str
) -> dict[str, tuple[str, str]]:
    """Our parent entry's conditions of a route (empty until written)."""
    obj = get_yaml(cluster, kind, ns, name)
    for parent in (obj.get("status") or {}).get("parents") or []:
        if parent.get("controllerName") == CONTROLLER_NAME:
            return conditions(parent.get("conditions"))
    return {}


def gateway_conditions(cluster: LocalCluster, ns: str, name: str) -> dict[str, tuple[str, str]]:
    obj = get_yaml(cluster, "gateway", ns, name)
    return conditions((obj.get("status") or {}).get("conditions"))


def wait_conditions(
    read: Any, expected: Mapping[str, tuple[str, str]], what: str, timeout: float = DEADLINE
) -> dict[str, tuple[str, str]]:
    """Poll ``read()`` (type -> (status, reason)) until it includes ``expected``."""
    seen: list[dict[str, tuple[str, str]]] = [{}]

    def done() -> bool:
        seen[0] = read()
        return all(seen[0].get(k) == v for k, v in expected.items())

    try:
        wait_until(done, timeout=timeout, what=what)
    except Exception as err:
        raise AssertionError(f"{what}: last seen {seen[0]}") from err
    return seen[0]


def apply(cluster: LocalCluster, *objects: Obj) -> None:
    sc.apply(cluster, *objects)
