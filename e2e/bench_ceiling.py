"""The apiserver's own write rate for the objects an agent writes per import.

Printed beside the bulk import figure of ``./e2e/dev bench federation`` as its
ceiling: no agent can import faster than the apiserver accepts the same writes.
The objects are the ones an agent just wrote for one namespace (ServiceImport,
derived Service, imported EndpointSlices and the ServiceImport's status), copied
into another namespace and written in the same order per service, with many
services in flight at once, through the agent's own client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents import k8s_objects as objs
from agents import kinds as k
from agents.kube import Kube, load_configuration
from e2e.cluster import LocalCluster

OURS = f"{objs.OWNER_LABEL}={objs.OWNER}"
#: Services in flight at once per cluster (the client keeps up to 64 connections).
IN_FLIGHT = 64


@dataclass(frozen=True)
class ImportWrites:
    """One import's writes, in the agent's order."""

    derived: dict[str, Any] | None
    service_import: dict[str, Any]
    status: dict[str, Any]
    slices: list[dict[str, Any]]


def _desired(
    kind: k.ApiKind,
    kind_name: str,
    obj: dict[str, Any],
    namespace: str,
    drop_spec: Sequence[str] = (),
) -> dict[str, Any]:
    """``obj`` (an item of a LIST) as something to apply in ``namespace``: its kind, and
    no server-set fields."""
    meta = obj["metadata"]
    out = {key: value for key, value in obj.items() if key not in ("metadata", "status")}
    out["apiVersion"], out["kind"] = kind.api_version, kind_name
    out["metadata"] = {
        "name": meta["name"],
        "namespace": namespace,
        "labels": meta.get("labels") or {},
        "annotations": meta.get("annotations") or {},
    }
    if "spec" in out:
        out["spec"] = {key: v for key, v in out["spec"].items() if key not in drop_spec}
    return out


async def read_imports(kube: Kube, source: str, target: str) -> list[ImportWrites]:
    """What the agent wrote for the imports in namespace ``source``, to write in ``target``."""
    imports, services, slices = await asyncio.gather(
        *(
            kube.list_items(kind.path(source), OURS)
            for kind in (k.SERVICE_IMPORTS, k.SERVICES, k.ENDPOINT_SLICES)
        )
    )
    derived = {s["metadata"]["name"]: s for s in services}
    slices_of: dict[str, list[dict[str, Any]]] = {}
    for s in slices:
        slices_of.setdefault(s["metadata"]["labels"][objs.SERVICE_NAME_LABEL], []).append(s)
    writes = []
    for imp in imports:
        name = imp["metadata"]["name"]
        service = derived.get(objs.derived_service_name(name))
        writes.append(
            ImportWrites(
                derived=(
                    _desired(k.SERVICES, "Service", service, target, ("clusterIP", "clusterIPs"))
                    if service
                    else None
                ),
                service_import=_desired(k.SERVICE_IMPORTS, "ServiceImport", imp, target, ("ips",)),
                status=imp.get("status") or {},
                slices=[
                    _desired(k.ENDPOINT_SLICES, "EndpointSlice", s, target)
                    for s in slices_of.get(name, [])
                ],
            )
        )
    return writes


async def _write_one(kube: Kube, namespace: str, w: ImportWrites) -> None:
    name = w.service_import["metadata"]["name"]
    if w.derived is not None:
        await kube.apply(k.SERVICES.path(namespace, w.derived["metadata"]["name"]), w.derived)
    path = k.SERVICE_IMPORTS.path(namespace, name)
    await kube.apply(path, w.service_import)
    for s in w.slices:
        await kube.apply(k.ENDPOINT_SLICES.path(namespace, s["metadata"]["name"]), s)
    await kube.patch_status(path, w.status)


async def _write_all(kube: Kube, namespace: str, writes: Sequence[ImportWrites]) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(w: ImportWrites) -> None:
        async with gate:
            await _write_one(kube, namespace, w)

    await asyncio.gather(*(one(w) for w in writes))


async def _measure(clusters: Sequence[LocalCluster], source: str, target: str) -> float:
    kubes = [Kube(load_configuration(str(c.kubeconfig))) for c in clusters]
    try:
        writes = await read_imports(kubes[0], source, target)
        began = time.monotonic()
        await asyncio.gather(*(_write_all(kube, target, writes) for kube in kubes))
        return len(writes) / (time.monotonic() - began)
    finally:
        for kube in kubes:
            await kube.close()


def write_rate(clusters: Sequence[LocalCluster], source: str, target: str) -> float:
    """Services/s written into each of ``clusters`` at once (namespace ``target`` must
    exist in each): the imports of namespace ``source`` of the first cluster, copied."""
    return asyncio.run(_measure(clusters, source, target))
