"""The per-cluster agent: a kopf operator, one per member cluster.

It exports its cluster's ServiceExports into the registry and keeps the
cluster's ServiceImports in step with the registry. Depends on ``federation``;
``federation`` never imports it.
"""
