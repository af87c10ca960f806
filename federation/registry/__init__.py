"""The registry: typed records about each cluster's exports, kept in Redis.

Bottom layer of ``federation``. ``records`` (types and codec) and ``keys``
(key layout) are pure; ``store`` defines the store Protocols that the Redis
store (``redis_store``) implements, as does the tests' in-memory store
(``tests/memory_store.py``);
``watcher`` turns a reader into an always-current view of the whole
clusterset. Import submodules directly: this package imports nothing, so pure
layers can use ``records`` without pulling in redis.
"""
