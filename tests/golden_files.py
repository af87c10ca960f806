"""Golden-file cases: ``<case>.in.yaml`` inputs and ``<case>.out.yaml`` expected outputs.

Shared by the golden tests of the merge and of the translator. With ``--update-golden``
(see ``tests/conftest.py``) the outputs are rewritten instead of compared; review their
diff before committing them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent / "golden"

#: Protobuf map fields (and Structs): their JSON order is the map's, which varies between
#: processes.
MAP_FIELDS = (
    "typed_per_filter_config",
    "typed_extension_protocol_options",
    "policies",
    "providers",
    "requirement_map",
    "json_format",
)


def sorted_maps(value: Any) -> Any:
    """``value`` (a message in its JSON mapping) with the entries of every
    :data:`MAP_FIELDS` map sorted by key."""
    if isinstance(value, list):
        return [sorted_maps(v) for v in value]
    if not isinstance(value, dict):
        return value
    return {
        k: dict(sorted(sorted_maps(v).items())) if k in MAP_FIELDS else sorted_maps(v)
        for k, v in value.items()
    }


def cases(directory: Path) -> list[str]:
    """The case names of a golden directory, from its ``.in.yaml`` files."""
    return sorted(p.name.removesuffix(".in.yaml") for p in directory.glob("*.in.yaml"))


def orphan_outputs(directory: Path) -> list[str]:
    """Outputs whose input is gone (a renamed or deleted case leaves one behind)."""
    outputs = {p.name.removesuffix(".out.yaml") for p in directory.glob("*.out.yaml")}
    return sorted(outputs - set(cases(directory)))


def check(directory: Path, case: str, actual: str, update: bool) -> None:
    """Compare ``actual`` with the case's ``.out.yaml``, or rewrite it when ``update``."""
    out = directory / f"{case}.out.yaml"
    if update:
        out.write_text(actual)
        return
    if not out.exists():
        pytest.fail(f"{out} is missing: run pytest with --update-golden and review it")
    assert actual == out.read_text(), f"{out.name} differs; rerun with --update-golden if intended"
