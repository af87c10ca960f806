"""Reads this cluster's id from the apiserver, for the agent's start-up.

The id is the ClusterProperty ``cluster.clusterset.k8s.io`` (KEP-2149). A
missing or invalid property stops the agent with a message that says how to
fix it: running under a guessed id would publish records under the wrong keys.
"""

from __future__ import annotations

from agents.kube import Kube, KubeError
from federation.errors import ClusterIdentityError, InvalidInputError
from federation.identity import CLUSTER_ID_PROPERTY, ClusterId, parse_cluster_id

GROUP, PLURAL = "about.k8s.io", "clusterproperties"
#: Newest first: a cluster may have an older about-api CRD that serves v1alpha1 only.
VERSIONS = ("v1beta1", "v1alpha1")


async def _get_property(kube: Kube) -> object:
    for version in VERSIONS:
        prop = await kube.get(f"/apis/{GROUP}/{version}/{PLURAL}/{CLUSTER_ID_PROPERTY}")
        if prop is not None:
            return prop
    return None


async def read_cluster_id(kube: Kube) -> ClusterId:
    """The validated id of the cluster ``kube`` talks to."""
    try:
        prop = await _get_property(kube)
    except KubeError as err:
        raise ClusterIdentityError(
            f"reading ClusterProperty {CLUSTER_ID_PROPERTY} failed: {err}"
        ) from err
    if prop is None:
        raise ClusterIdentityError(
            f"ClusterProperty {CLUSTER_ID_PROPERTY} not found (or its CRD is not installed): "
            "create it with spec.value set to this cluster's id, e.g. "
            f"'kubectl create -f -' of kind ClusterProperty, name {CLUSTER_ID_PROPERTY}"
        )
    spec = prop.get("spec") if isinstance(prop, dict) else None
    value = spec.get("value") if isinstance(spec, dict) else None
    if not isinstance(value, str):
        raise ClusterIdentityError(f"ClusterProperty {CLUSTER_ID_PROPERTY} has no spec.value")
    try:
        return parse_cluster_id(value)
    except InvalidInputError as err:
        raise ClusterIdentityError(str(err)) from err
