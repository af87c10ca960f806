"""Envoy's typed models (envoy-data-plane) of the resources the hub serves: decoding with
field-level errors, and reading Envoy's own JSON back into the same form.

Used by ``fedctl config-dump`` to show what the hub serves in Envoy's own field names and to
compare it with an Envoy's ``/config_dump``; it sits in the xDS layer so that the hub can
use it too (validating a resource against Envoy's model before serving it). Speed does not
matter here: the hot path serializes with the upb classes (:mod:`federation.xds.snapshot`);
this module decodes on demand, for people and tools.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

import betterproto2
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.endpoint.v3 import ClusterLoadAssignment
from envoy_data_plane.envoy.config.listener.v3 import Listener
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import Secret
from google.protobuf import descriptor_pool, json_format, message_factory

from federation.errors import FederationError, InvalidInputError
from federation.xds.snapshot import CLUSTER, ENDPOINT, LISTENER, MESSAGE_TYPES, ROUTE, SECRET

MODELS: dict[str, type[betterproto2.Message]] = {
    CLUSTER: Cluster,
    ENDPOINT: ClusterLoadAssignment,
    LISTENER: Listener,
    ROUTE: RouteConfiguration,
    SECRET: Secret,
}
_UNREGISTERED = re.compile(r"unregistered type: (?:type\.googleapis\.com/)?([\w.]+)")


class DecodeError(FederationError):
    """A resource that does not decode into Envoy's model: ``path`` says where."""

    def __init__(self, name: str, path: str, reason: str) -> None:
        super().__init__(f"{name}: {path}: {reason}")
        self.name, self.path, self.reason = name, path, reason


def _register(type_name: str) -> bool:
    """Import envoy-data-plane's module of ``type_name`` (which registers its messages
    for ``google.protobuf.Any``); False when there is none."""
    package = type_name.rsplit(".", 1)[0]
    try:
        importlib.import_module(f"envoy_data_plane.{package}")
    except ImportError:
        return False
    return True


def _with_any_types(convert: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``convert()``, importing the modules of the ``Any`` types it meets as it goes."""
    tried: set[str] = set()
    while True:
        try:
            return convert()
        except (TypeError, ValueError, KeyError) as err:
            match = _UNREGISTERED.search(str(err))
            if match is None or match.group(1) in tried or not _register(match.group(1)):
                raise
            tried.add(match.group(1))


def _proto_name(name: str) -> str:
    return name


#: Keys as the proto's own field names, as Envoy prints them (``consecutive_5xx``):
#: betterproto2's attributes carry them, and its "casing" is any name -> key function
#: (its SNAKE would make ``consecutive_5_xx``).
PROTO_NAMES = cast(betterproto2.Casing, _proto_name)


def _to_json(message: betterproto2.Message) -> dict[str, Any]:
    return _with_any_types(
        lambda: message.to_dict(
            output_format=betterproto2.OutputFormat.PROTO_JSON, casing=PROTO_NAMES
        )
    )


def _failing_field(message: betterproto2.Message, path: str) -> str:
    """The deepest field of ``message`` whose conversion fails (``path`` when none does)."""
    for f in dataclasses.fields(cast(Any, message)):
        value = getattr(message, f.name)
        items = (
            list(value.items())
            if isinstance(value, dict)
            else list(enumerate(value))
            if isinstance(value, list)
            else [(None, value)]
        )
        for key, item in items:
            if not isinstance(item, betterproto2.Message):
                continue
            here = f"{path}.{f.name}" + ("" if key is None else f"[{key}]")
            try:
                _to_json(item)
            except (TypeError, ValueError, KeyError):
                return _failing_field(item, here)
    return path


def decode(type_url: str, name: str, body: bytes) -> dict[str, Any]:
    """One resource, as Envoy's proto JSON; DecodeError with the failing field's path."""
    model = MODELS.get(type_url)
    if model is None:
        raise DecodeError(name, "(resource)", f"not a type config-dump knows: {type_url}")
    try:
        message = model.parse(body)
    except Exception as err:  # betterproto2 raises several kinds for broken bytes
        raise DecodeError(name, "(resource)", f"not a valid {model.__name__}: {err}") from err
    try:
        return _to_json(message)
    except (TypeError, ValueError, KeyError) as err:
        raise DecodeError(name, _failing_field(message, model.__name__), str(err)) from err


#: The packages whose protobuf modules an ``Any`` in a resource may name: the xds-protos
#: wheel's (and protobuf's own). A type name comes from input (a patch, Envoy's admin):
#: no other module is ever imported for it.
PROTO_ROOTS = ("envoy", "xds", "udpa", "validate", "google")


def _import_protos(type_name: str) -> bool:
    """Import the protobuf modules of ``type_name``'s package (registering its messages
    for json_format's ``Any``); False when there are none or it is not one of
    :data:`PROTO_ROOTS`'."""
    package = type_name.rsplit(".", 1)[0]
    parts = package.split(".")
    if parts[0] not in PROTO_ROOTS or not all(p.isidentifier() for p in parts):
        return False
    try:
        module = importlib.import_module(package)
    except ImportError:
        return False
    found = False
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")
            found = True
    return found


_NO_DESCRIPTOR = re.compile(r"type_url: (?:type\.googleapis\.com/)?([\w.]+)")


def normalise(type_url: str, resource: Mapping[str, Any]) -> dict[str, Any]:
    """A resource in proto JSON (from Envoy's admin), brought through the wire format and
    the same model as :func:`decode`, so that equal content compares equal.

    The JSON is read with protobuf's own json_format (betterproto2's reader mistakes
    field names such as ``consecutive_5xx``), importing the modules of the ``Any`` types
    it meets."""
    body = {k: v for k, v in resource.items() if k != "@type"}
    try:
        message = parse(type_url, body)
    except json_format.ParseError as err:
        raise InvalidInputError(f"Envoy's {type_url} does not parse: {err}") from err
    return decode(type_url, name_of(type_url, body), message.SerializeToString())


def parse(type_url: str, resource: Mapping[str, Any]) -> Any:
    """A resource in proto JSON as its (upb) protobuf message, importing the modules of
    the ``Any`` types it meets; json_format.ParseError says which field is wrong."""
    tried: set[str] = set()
    while True:
        try:
            message = json_format.ParseDict(resource, MESSAGE_TYPES[type_url]())
        except json_format.ParseError as err:
            match = _NO_DESCRIPTOR.search(str(err))
            if match is None or match.group(1) in tried or not _import_protos(match.group(1)):
                raise
            tried.add(match.group(1))
        except (AttributeError, TypeError, ValueError, KeyError) as err:
            # json_format lets some malformed input through as these ("@type": 5).
            raise json_format.ParseError(f"{type(err).__name__}: {err}") from err
        else:
            _repack(message)
            return message


def _repack(message: Any) -> None:
    """Re-pack every ``Any`` inside ``message`` deterministically (json_format packs map
    entries in whatever order): equal content must serialize to equal bytes, and so to
    one version, in every hub process."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            entry_value = field.message_type.fields_by_name["value"]
            if entry_value.message_type is not None:
                for item in value.values():
                    _repack(item)
            continue
        for item in value if field.is_repeated else (value,):
            if item.DESCRIPTOR.full_name == "google.protobuf.Any":
                _repack_any(item)
            else:
                _repack(item)


def _repack_any(packed: Any) -> None:
    name = packed.type_url.rpartition("/")[2]
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return  # a type this process does not know: left as it came
    inner = message_factory.GetMessageClass(descriptor)()
    inner.ParseFromString(packed.value)
    _repack(inner)
    packed.value = inner.SerializeToString(deterministic=True)


def name_of(type_url: str, resource: Mapping[str, Any]) -> str:
    """A decoded resource's name (a ClusterLoadAssignment's is its ``cluster_name``)."""
    return str(resource.get("cluster_name" if type_url == ENDPOINT else "name", ""))
