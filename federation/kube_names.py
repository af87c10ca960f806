"""Kubernetes' rules for what object metadata may hold: label keys and values, annotations.

The agent checks a ServiceExport's ``exportedLabels`` and ``exportedAnnotations`` with
them before exporting: an invalid key or value would make every importing cluster's
apply fail, so the field is held back at the source (its last valid value is exported,
or none) and the exporter's ``ExportedMetadataValid`` condition names the key.
Cluster ids are label values too (``multicluster.kubernetes.io/source-cluster``).

The rules are the apiserver's (``k8s.io/apimachinery/pkg/util/validation``). Pure and
below every layer of ``federation``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from federation.identity import MAX_LABEL_LENGTH, subdomain_errors

#: The apiserver's limit on all of an object's annotations together (keys and values).
MAX_ANNOTATIONS_BYTES = 256 * 1024

_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def _name_errors(value: str, what: str) -> list[str]:
    """The rules a label value and a key's name part share (``what`` names which)."""
    errors = []
    if len(value) > MAX_LABEL_LENGTH:
        errors.append(f"{what} must be at most {MAX_LABEL_LENGTH} characters (has {len(value)})")
    if not _NAME.match(value):
        errors.append(
            f"{what} must consist of alphanumeric characters, '-', '_' or '.', and start and "
            "end with an alphanumeric character"
        )
    return errors


def label_value_errors(value: str) -> list[str]:
    """Why ``value`` is not a valid label value (empty is valid); empty when it is one."""
    return _name_errors(value, "it") if value else []


def qualified_name_errors(key: str) -> list[str]:
    """Why ``key`` is not a label or annotation key (``[prefix/]name``)."""
    prefix, slash, name = key.rpartition("/")
    if not key or (slash and not name):
        return ["the name part must not be empty"]
    errors = [f"prefix {prefix!r}: {e}" for e in subdomain_errors(prefix)] if slash else []
    return errors + _name_errors(name, "the name part")


def label_errors(labels: Mapping[str, str]) -> list[str]:
    """Every problem of ``labels``, each naming its key."""
    errors = []
    for key, value in sorted(labels.items()):
        errors += [f"key {key!r}: {e}" for e in qualified_name_errors(key)]
        errors += [f"value of {key!r}: {e}" for e in label_value_errors(value)]
    return errors


def annotation_errors(annotations: Mapping[str, str]) -> list[str]:
    """Every problem of ``annotations``: keys, and the size of them all."""
    errors = []
    for key in sorted(annotations):
        errors += [f"key {key!r}: {e}" for e in qualified_name_errors(key)]
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        errors.append(f"all together {size} bytes, more than {MAX_ANNOTATIONS_BYTES}")
    return errors
