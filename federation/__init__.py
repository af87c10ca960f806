"""Federation: multi-cluster service federation for Kubernetes.

The hub and the library shared with the per-cluster agents. Layers, from the
bottom (checked by import-linter, see pyproject.toml): ``registry`` (Redis
records and change feed), ``model`` (the clusterset), ``translate`` (pure
model -> xDS), ``xds`` (the gRPC server) and ``cli`` (``fedctl``).
"""
