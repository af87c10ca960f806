"""The clusterset model: merged imports, conflicts and conditions as typed, pure values.

Imports nothing that does I/O (redis, grpc, kopf, kubernetes).
"""
