"""The xDS layer: serves opaque, pre-serialized Envoy resources over ADS (gRPC).

* :mod:`federation.xds.snapshot`: :class:`~federation.xds.snapshot.Resource` (a serialized
  resource, its content-hash version and its wire bytes, built once and shared by every
  stream), :class:`~federation.xds.snapshot.Snapshot` (one node group's resources) and
  :class:`~federation.xds.snapshot.SnapshotCache` (the current snapshot of every node
  group, with change notification and the "not ready, serve nothing" gate).
* :mod:`federation.xds.server`: the grpc.aio Aggregated Discovery Service and
  :func:`~federation.xds.server.serve`; it runs one stream per Envoy:
  :mod:`federation.xds.sotw` (state of the world) or :mod:`federation.xds.delta`, both on
  :mod:`federation.xds.stream` (push loop, NACK re-offers, warm before route).
* :mod:`federation.xds.status`: what every connected Envoy was sent, ACKed and NACKed
  (:class:`~federation.xds.status.SyncRegistry`), the nodes it refused, and the server's
  counters.
* :mod:`federation.xds.peers`: which node group a client may read (the certificate's
  cluster with mTLS), refusals, and the limits per client; :mod:`federation.xds.tls`:
  the mTLS credentials, re-read when their files change.

The hub (:mod:`federation.hub`) creates the cache and the sync registry, fills
the cache from the translator's output, calls ``mark_ready()`` once the whole registry is
loaded, and calls :func:`~federation.xds.server.serve`. This layer never looks inside the
resources it serves (it imports neither ``federation.translate`` nor redis, kopf or
kubernetes), with one convention: a ClusterLoadAssignment has the name of its cluster.
"""
