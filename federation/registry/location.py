"""Where a process finds the registry: the Redis URL, credentials included.

Used by the hub and the agent at start-up. The URL is read from the environment
variable ``FEDERATION_REGISTRY_URL``, never from the command line, where ``ps`` and
``/proc/<pid>/cmdline`` show it to every user of the machine. In a pod it comes from
a Secret (``env.valueFrom.secretKeyRef``); locally, from the shell or the harness.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from federation.errors import InvalidInputError

REGISTRY_URL_ENV = "FEDERATION_REGISTRY_URL"
SCHEMES = ("redis", "rediss", "unix")


def registry_url(
    environ: Mapping[str, str] | None = None,
    variable: str = REGISTRY_URL_ENV,
    whose: str = "this process's",
) -> str:
    """The registry URL in ``variable`` of the environment, checked; a clear error
    without it. ``whose`` names whose credentials it must carry, for that error."""
    env = os.environ if environ is None else environ
    url = env.get(variable, "").strip()
    if not url:
        raise InvalidInputError(
            f"{variable} is not set: it must hold the registry's Redis URL with "
            f"{whose} credentials, redis://USER:PASSWORD@HOST:PORT/DB (it is read "
            "from the environment so that the password never appears in a command line)"
        )
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise InvalidInputError(
            f"{variable} must be a {', '.join(s + '://' for s in SCHEMES)} URL, "
            f"not {scheme + '://' if scheme else 'one without a scheme'}"
        )
    return url
