"""Federation's exception hierarchy.

Every error the project raises on purpose derives from :class:`FederationError`.
Errors of the libraries underneath (redis, grpc, kubernetes) are translated
into these at the client boundary and chained with ``raise ... from``, so
callers handle one family of exceptions.
"""


class FederationError(Exception):
    """Base of every error Federation raises on purpose."""


class InvalidInputError(FederationError, ValueError):
    """A value from a user, a cluster or the registry breaks a documented rule."""


class ClusterIdentityError(FederationError):
    """This cluster's id (ClusterProperty cluster.clusterset.k8s.io) is missing or invalid."""
