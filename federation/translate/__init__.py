"""The translate layer: the clusterset model turned into Envoy xDS resources.

Pure: values in, protobuf messages out; no I/O, no clock, no
globals, sorted and deterministic output, so equal inputs give equal bytes.
Its caller is the hub's snapshot builder, which hands the resulting messages
to the xDS server. ``names`` is the naming scheme shared with the xDS layer and
``fedctl``; ``inputs`` holds the typed inputs and options; ``resources`` builds
clusters, ClusterLoadAssignments, the listener and the route configuration.

Imports nothing that does I/O (redis, grpc, kopf, kubernetes); import-linter
checks it.
"""
