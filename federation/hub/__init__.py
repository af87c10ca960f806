"""The hub: the registry in, every node group's xDS snapshot out.

* :mod:`federation.hub.core`: :class:`~federation.hub.core.Hub`, the loop that follows the
  registry (through a registry watcher) and keeps the snapshot cache in step, with the
  "not ready, serve nothing" rule.
* :mod:`federation.hub.snapshots`: :class:`~federation.hub.snapshots.SnapshotBuilder`,
  which translates changed imports with the pure translator and puts the shared,
  serialized resources into each node group's snapshot (endpoint-only pushes included).
* :mod:`federation.hub.http`: health, readiness, metrics and proxy status over HTTP.

``federation-hub`` (:mod:`federation.cli.hub`) only parses arguments and wires these
to the xDS server (:mod:`federation.xds.server`).
"""
