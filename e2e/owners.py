"""Names of what a local environment leaves on the machine, and who owns each.

Network namespaces and cgroups of the node tier (:mod:`e2e.netns`, :mod:`e2e.cgroups`)
are named ``fed-<owner pid>-<n>-<what>``, and temp dirs of any environment
``federation-env-<owner pid>-...``: the owner is the process that made them, ``n`` tells
apart several environments of one process. A process killed with SIGKILL cannot clean
up; the next environment removes whatever belongs to an owner that is no longer alive
(:func:`dead`). Pids are those of this machine's pid namespace: environments that share
cgroups or /run across pid namespaces (containers on one host) are not supported.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from e2e.processes import pid_alive

PREFIX = "fed-"
TEMP_PREFIX = "federation-env-"
_OWNER = re.compile(r"^(?:fed|federation-env)-(\d+)-")
_sequence = itertools.count(1)


def new_token() -> str:
    """``<pid>-<n>``: unique among the live environments of this machine."""
    return f"{os.getpid()}-{next(_sequence)}"


def owner_of(name: str) -> int | None:
    match = _OWNER.match(name)
    return int(match.group(1)) if match else None


def dead(names: Iterable[str]) -> list[str]:
    """Those of ``names`` whose owner is known and no longer alive."""
    return sorted(n for n in names if (o := owner_of(n)) is not None and not pid_alive(o))


def temp_dir() -> Path:
    """A new temp dir for an environment, named after its owner."""
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))


def sweep_temp_dirs() -> list[str]:
    """Remove the temp dirs of environments whose owner is gone."""
    root = Path(tempfile.gettempdir())
    removed = dead(p.name for p in root.glob(TEMP_PREFIX + "*") if p.is_dir())
    for name in removed:
        shutil.rmtree(root / name, ignore_errors=True)
    return removed
