"""The statuses the first translation stage computes: Gateway API conditions, as data.

Computed by :func:`federation.translate.gateway.resolve` for one member cluster and
written by that cluster's agent, the only writer of its objects' ``.status``. Reasons are
enums with Gateway API's own values; every condition carries a message that says what to
fix. Which reasons exist, and when:

* routes, per parent (``status.parents[]`` with our controller name):
  ``Accepted`` (``Accepted``, ``NotAllowedByListeners``, ``NoMatchingListenerHostname``,
  ``NoMatchingParent``, ``UnsupportedValue`` when no rule can be served, and
  ``HostnameConflict`` when an older route of the other kind, HTTPRoute or GRPCRoute,
  holds its hostnames on every listener it would attach to, for which Gateway API names
  no reason), ``ResolvedRefs`` (``ResolvedRefs``, ``BackendNotFound``,
  ``RefNotPermitted``, ``InvalidKind``, ``UnsupportedProtocol``), and
  ``PartiallyInvalid`` (``UnsupportedValue``) while some of its rules cannot be served.
  Every route has a status, one that names none of our Gateways with no parents: the
  agent then removes the entries it wrote before (Gateway API: a controller removes its
  entries for parents it no longer handles);
* Gateways: ``Accepted`` (``Accepted``, ``ListenersNotValid``) and ``Programmed``
  (``Programmed`` once the cluster's Envoys ACKed the Gateway's generation; ``Pending``
  until then; ``Invalid`` when an Envoy rejected it, with Envoy's message);
* listeners: ``Accepted`` (``Accepted``, ``UnsupportedProtocol``), ``ResolvedRefs``
  (``ResolvedRefs``, ``InvalidCertificateRef``, ``InvalidRouteKinds``, ``RefNotPermitted``),
  ``Conflicted`` (``NoConflicts``, ``HostnameConflict``, ``ProtocolConflict``) and
  ``Programmed``, with ``attachedRoutes`` and ``supportedKinds``;
* BackendTrafficPolicies, per ancestor Gateway (``status.ancestors[]``): ``Accepted``
  (``Accepted``, ``Invalid``, ``Conflicted``, ``TargetNotFound``) and Envoy Gateway's
  ``Overridden`` (:mod:`federation.translate.gateway.policies` says when).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from federation.model.conditions import Condition, ConditionStatus
from federation.registry.gatewayapi import ParentReference, RouteGroupKind

#: The GatewayClass ``spec.controllerName`` of this project: we touch only Gateways of a
#: class with this controller, and only route parent statuses carrying it.
CONTROLLER_NAME = "federation.dev/gateway-controller"


class RouteCondition(StrEnum):
    ACCEPTED = "Accepted"
    RESOLVED_REFS = "ResolvedRefs"
    #: Some rules are not served (the others are): Gateway API's ``PartiallyInvalid``.
    PARTIALLY_INVALID = "PartiallyInvalid"


class RouteReason(StrEnum):
    ACCEPTED = "Accepted"
    NOT_ALLOWED_BY_LISTENERS = "NotAllowedByListeners"
    NO_MATCHING_LISTENER_HOSTNAME = "NoMatchingListenerHostname"
    NO_MATCHING_PARENT = "NoMatchingParent"
    UNSUPPORTED_VALUE = "UnsupportedValue"
    #: Not a Gateway API reason (it names none for this): an HTTPRoute and a GRPCRoute
    #: on one listener share a hostname, and this route is the newer.
    HOSTNAME_CONFLICT = "HostnameConflict"
    RESOLVED_REFS = "ResolvedRefs"
    BACKEND_NOT_FOUND = "BackendNotFound"
    REF_NOT_PERMITTED = "RefNotPermitted"
    INVALID_KIND = "InvalidKind"
    UNSUPPORTED_PROTOCOL = "UnsupportedProtocol"


class GatewayCondition(StrEnum):
    ACCEPTED = "Accepted"
    PROGRAMMED = "Programmed"
    #: Set only while client certificate validation lets clients in without a valid
    #: certificate somewhere (``AllowInsecureFallback``).
    INSECURE_FRONTEND_VALIDATION_MODE = "InsecureFrontendValidationMode"


class GatewayReason(StrEnum):
    ACCEPTED = "Accepted"
    LISTENERS_NOT_VALID = "ListenersNotValid"
    PROGRAMMED = "Programmed"
    PENDING = "Pending"
    INVALID = "Invalid"
    CONFIGURATION_CHANGED = "ConfigurationChanged"


class ListenerCondition(StrEnum):
    ACCEPTED = "Accepted"
    RESOLVED_REFS = "ResolvedRefs"
    CONFLICTED = "Conflicted"
    PROGRAMMED = "Programmed"


class ListenerReason(StrEnum):
    ACCEPTED = "Accepted"
    UNSUPPORTED_PROTOCOL = "UnsupportedProtocol"
    PORT_UNAVAILABLE = "PortUnavailable"
    RESOLVED_REFS = "ResolvedRefs"
    INVALID_CERTIFICATE_REF = "InvalidCertificateRef"
    INVALID_ROUTE_KINDS = "InvalidRouteKinds"
    REF_NOT_PERMITTED = "RefNotPermitted"
    NO_CONFLICTS = "NoConflicts"
    HOSTNAME_CONFLICT = "HostnameConflict"
    PROTOCOL_CONFLICT = "ProtocolConflict"
    PROGRAMMED = "Programmed"
    PENDING = "Pending"
    INVALID = "Invalid"
    INVALID_CA_CERTIFICATE_REF = "InvalidCACertificateRef"
    INVALID_CA_CERTIFICATE_KIND = "InvalidCACertificateKind"
    NO_VALID_CA_CERTIFICATE = "NoValidCACertificate"


def condition(type_: StrEnum, ok: bool, reason: StrEnum, message: str) -> Condition:
    status = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
    return Condition(type_.value, status, reason.value, message)


@dataclass(frozen=True)
class RouteParentStatus:
    """One ``status.parents[]`` entry of a route: a parentRef that names one of our Gateways."""

    parent_ref: ParentReference
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class RouteStatus:
    #: ``HTTPRoute`` or ``GRPCRoute``.
    kind: str
    namespace: str
    name: str
    generation: int
    parents: tuple[RouteParentStatus, ...]


@dataclass(frozen=True)
class ListenerStatus:
    name: str
    attached_routes: int
    supported_kinds: tuple[RouteGroupKind, ...]
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class GatewayStatus:
    namespace: str
    name: str
    generation: int
    conditions: tuple[Condition, ...]
    listeners: tuple[ListenerStatus, ...]


class PolicyCondition(StrEnum):
    ACCEPTED = "Accepted"
    #: Envoy Gateway's: more specific policies replace this one somewhere.
    OVERRIDDEN = "Overridden"
    #: Envoy Gateway's, of EnvoyPatchPolicies: the Gateway's Envoys serve the patches.
    PROGRAMMED = "Programmed"


class PolicyReason(StrEnum):
    ACCEPTED = "Accepted"
    INVALID = "Invalid"
    CONFLICTED = "Conflicted"
    TARGET_NOT_FOUND = "TargetNotFound"
    OVERRIDDEN = "Overridden"
    #: Envoy Gateway's, of EnvoyPatchPolicies the control plane does not allow.
    DISABLED = "Disabled"
    PROGRAMMED = "Programmed"
    PENDING = "Pending"
    #: Envoy Gateway's, of an EnvoyPatchPolicy naming a resource that is not there.
    RESOURCE_NOT_FOUND = "ResourceNotFound"


@dataclass(frozen=True)
class PolicyAncestorStatus:
    """One ``status.ancestors[]`` entry: a Gateway (or listener) and our conditions."""

    ancestor_ref: ParentReference
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class PolicyStatus:
    kind: str
    namespace: str
    name: str
    generation: int
    ancestors: tuple[PolicyAncestorStatus, ...]


@dataclass(frozen=True)
class Statuses:
    """Every status one cluster's agent writes for its Gateway API objects, sorted."""

    gateways: tuple[GatewayStatus, ...] = ()
    routes: tuple[RouteStatus, ...] = ()
    policies: tuple[PolicyStatus, ...] = ()
