"""Gateway API hostname matching between listeners and routes.

A listener's ``hostname`` (None: any) and a route's ``hostnames`` (empty: any) meet in
the hostnames the route is served for on that listener. Either side may be a wildcard
``*.example.com``, which matches one or more leading labels (``a.example.com``,
``a.b.example.com``) but not ``example.com`` itself. Where both match, the more specific
of the two is served: ``a.example.com`` on a ``*.example.com`` listener.
"""

from __future__ import annotations

from collections.abc import Iterable

#: The domain of a virtual host that answers any hostname.
ANY = "*"


def _wildcard_covers(wildcard: str, name: str) -> bool:
    """``*.example.com`` covers ``a.example.com`` and ``*.a.example.com``."""
    suffix = wildcard[1:]  # ".example.com"
    return name.endswith(suffix) and len(name) > len(suffix)


def meet(listener: str | None, route: str) -> str | None:
    """The hostname served for ``route`` on a listener of hostname ``listener``, or None."""
    if listener is None or listener == route:
        return route
    if listener.startswith("*.") and _wildcard_covers(listener, route):
        return route
    if route.startswith("*.") and _wildcard_covers(route, listener):
        return listener
    return None


def served(listener: str | None, route_hostnames: Iterable[str]) -> tuple[str, ...]:
    """Every hostname a route is served for on the listener, sorted (``*``: any).

    Empty when the route's hostnames and the listener's do not meet: the route then does
    not attach to the listener (``NoMatchingListenerHostname``).
    """
    names = tuple(route_hostnames)
    if not names:
        return (listener if listener is not None else ANY,)
    return tuple(sorted({m for h in names if (m := meet(listener, h)) is not None}))


def overlap(first: Iterable[str], second: Iterable[str]) -> tuple[str, ...]:
    """The hostnames two routes served on one listener (:func:`served`) have in common,
    sorted; empty when they share none. ``*`` is any hostname."""
    out = set()
    for a in first:
        for b in second:
            common = a if b == ANY else meet(None if a == ANY else a, b)
            if common is not None:
                out.add(common)
    return tuple(sorted(out))
