"""The clusterset model: identities, exports and imports as typed, pure values.

Imports nothing that does I/O (redis, grpc, kopf, kubernetes).
"""
