"""The translate layer: the clusterset model turned into Envoy xDS resources.

Pure: values in, protobuf messages out; no I/O, no clock, no
globals, sorted and deterministic output, so equal inputs give equal bytes.
Its caller is the hub's snapshot builder, which serializes the resulting
messages for the xDS server. Two stages meet in one IR (``ir``): the first
(``clusterset`` for ServiceImports, ``gateway`` for Gateway API) resolves inputs
into IR and statuses, the second (``proxy``) renders the IR into Envoy resources,
one module per HTTP filter or cluster feature (``proxy/features``). ``names`` is
the naming scheme shared with the xDS layer and ``fedctl``; ``inputs`` holds the
typed inputs and options. See docs/architecture.md.

Imports nothing that does I/O (redis, grpc, kopf, kubernetes); import-linter
checks it.
"""
