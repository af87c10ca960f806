"""A strict JSON codec for the registry's frozen dataclasses, driven by their type hints.

Used by :mod:`federation.registry.gatewayapi` for the Gateway API kinds of record, whose
shapes mirror the Kubernetes objects field for field (``backendRefs`` in JSON is
``backend_refs`` in Python). :func:`to_json` and :func:`from_json` handle ``str``,
``int``, ``float``, ``bool``, ``StrEnum`` subclasses, ``X | None``, ``tuple[X, ...]``,
``tuple[tuple[str, str], ...]`` maps and nested frozen dataclasses.

Strict: :func:`from_json` raises :class:`~federation.registry.records.InvalidRecordError`
naming the path of the first problem (a wrong type, a missing required field, a value
outside an enum). Unknown fields are errors in registry records (``unknown="error"``)
and ignored when reading a Kubernetes object (``unknown="ignore"``), where newer API
versions may add fields we do not use. ``None`` fields and empty optional lists are left
out of the JSON, and a field's absence decodes to its default, so records stay small and
equal records encode to equal bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Literal, TypeVar, get_args, get_origin

from federation.registry.records import InvalidRecordError

T = TypeVar("T")
Unknown = Literal["error", "ignore"]


#: A field's JSON name when :func:`camel` does not spell it (``sourceCIDR``):
#: ``field(default=None, metadata={JSON_NAME: "sourceCIDR"})``.
JSON_NAME = "json"


def camel(name: str) -> str:
    """``backend_refs`` -> ``backendRefs``; a trailing underscore is dropped (``from_``)."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@functools.cache
def _fields(cls: Any) -> tuple[tuple[str, str, Any, bool], ...]:
    """(python name, JSON name, type, required) of each field of a dataclass."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        out.append((f.name, f.metadata.get(JSON_NAME) or camel(f.name), hints[f.name], required))
    return tuple(out)


def to_json(value: Any) -> dict[str, Any]:
    """The JSON object of a dataclass instance (the inverse of :func:`from_json`)."""
    encoded: dict[str, Any] = _encode(type(value), value)
    return encoded


def _encode(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        (arg,) = [a for a in get_args(tp) if a is not type(None)]
        return _encode(arg, value)
    if origin is tuple:
        item = get_args(tp)[0]
        if get_origin(item) is tuple:
            return dict(value)  # a map of strings, kept as sorted pairs
        return [_encode(item, v) for v in value]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        out: dict[str, Any] = {}
        for name, key, field_type, required in _fields(tp):
            item = getattr(value, name)
            if item is None or (item == () and not required):
                continue  # absent decodes to the default again
            out[key] = _encode(field_type, item)
        return out
    if isinstance(value, StrEnum):
        return value.value
    return value


def from_json(cls: type[T], obj: Any, *, path: str = "", unknown: Unknown = "error") -> T:
    """Decode ``obj`` (parsed JSON) into the dataclass ``cls``; see the module docstring."""
    result: T = _decode(cls, obj, path or cls.__name__, unknown)
    return result


def _decode(tp: Any, obj: Any, path: str, unknown: Unknown) -> Any:
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in get_args(tp) if a is not type(None)]
        if obj is None:
            return None
        if len(args) != 1:
            raise TypeError(f"{path}: only X | None unions are supported")
        return _decode(args[0], obj, path, unknown)
    if origin is tuple:
        return _decode_tuple(tp, obj, path, unknown)
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, obj, path, unknown)
    if isinstance(tp, type) and issubclass(tp, StrEnum):
        if not isinstance(obj, str):
            raise InvalidRecordError(f"{path}: expected a string")
        try:
            return tp(obj)
        except ValueError:
            allowed = ", ".join(m.value for m in tp)
            raise InvalidRecordError(f"{path}: {obj!r} is not one of {allowed}") from None
    checker = _SCALARS.get(tp)
    if checker is None:
        raise TypeError(f"{path}: unsupported type {tp!r}")
    if not checker(obj):
        raise InvalidRecordError(f"{path}: expected {_SCALAR_NAMES[tp]}")
    return float(obj) if tp is float else obj


def unknown_fields(cls: type[Any], obj: Any, path: str) -> list[str]:
    """The paths of every field of ``obj`` (parsed JSON) that ``cls`` has no field for,
    however deep (``spec.loadBalancer.zoneAware``, ``spec.targetRefs[1].oops``): what a
    Kubernetes object read with ``unknown="ignore"`` would lose. Values of the wrong
    shape are left to :func:`from_json` to refuse."""
    out: list[str] = []
    _unknown(cls, obj, path, out)
    return out


def _unknown(tp: Any, obj: Any, path: str, out: list[str]) -> None:
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        (tp,) = [a for a in get_args(tp) if a is not type(None)]
        origin = get_origin(tp)
    if origin is tuple and isinstance(obj, list):
        item = get_args(tp)[0]
        for i, value in enumerate(obj):
            _unknown(item, value, f"{path}[{i}]", out)
    elif isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(obj, dict):
        fields = {key: field_type for _, key, field_type, _ in _fields(tp)}
        for key in sorted(obj):
            if key not in fields:
                out.append(f"{path}.{key}")
            else:
                _unknown(fields[key], obj[key], f"{path}.{key}", out)


def _decode_tuple(tp: Any, obj: Any, path: str, unknown: Unknown) -> tuple[Any, ...]:
    args = get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if get_origin(item) is tuple and get_args(item) == (str, str):
            # A map of strings: a JSON object, kept as sorted pairs.
            if not isinstance(obj, dict):
                raise InvalidRecordError(f"{path}: expected an object")
            for key, value in obj.items():
                if not isinstance(value, str):
                    raise InvalidRecordError(f"{path}.{key}: expected a string")
            return tuple(sorted(obj.items()))
        if not isinstance(obj, list):
            raise InvalidRecordError(f"{path}: expected a list")
        return tuple(_decode(item, v, f"{path}[{i}]", unknown) for i, v in enumerate(obj))
    raise TypeError(f"{path}: only tuple[X, ...] is supported")


def _decode_dataclass(cls: Any, obj: Any, path: str, unknown: Unknown) -> Any:
    if not isinstance(obj, dict):
        raise InvalidRecordError(f"{path}: expected an object")
    fields = _fields(cls)
    if unknown == "error":
        known = {key for _, key, _, _ in fields}
        extra = sorted(set(obj) - known)
        if extra:
            raise InvalidRecordError(f"{path}: unknown field {extra[0]!r}")
    values: dict[str, Any] = {}
    for name, key, tp, required in fields:
        if key not in obj or obj[key] is None:
            if required:
                raise InvalidRecordError(f"{path}.{key}: required")
            continue
        values[name] = _decode(tp, obj[key], f"{path}.{key}", unknown)
    try:
        return cls(**values)
    except (ValueError, TypeError) as err:  # a __post_init__ check
        raise InvalidRecordError(f"{path}: {err}") from err


def _is_int(obj: object) -> bool:
    return isinstance(obj, int) and not isinstance(obj, bool)


def _is_number(obj: object) -> bool:
    return isinstance(obj, (int, float)) and not isinstance(obj, bool)


_SCALARS: dict[Any, Callable[[object], bool]] = {
    str: lambda o: isinstance(o, str),
    bool: lambda o: isinstance(o, bool),
    int: _is_int,
    float: _is_number,
}
_SCALAR_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}
