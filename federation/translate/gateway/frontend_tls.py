"""Client certificate validation of a Gateway's HTTPS listeners (``spec.tls.frontend``).

Called by :mod:`.listeners` for each HTTPS listener. Its port's entry of ``perPort`` (or
else ``default``) names the CA certificates clients must be verified against: ConfigMaps
(core group) with a ``ca.crt`` of PEM certificates, in the Gateway's namespace or, with a
ReferenceGrant there, another. The agent reads them (they are public certificates) and
its record of the Gateway carries them (:class:`~federation.registry.gatewayapi.CACertificate`).

As Gateway API asks: a reference of another kind is ``ResolvedRefs=False`` with
``InvalidCACertificateKind``, one not granted ``RefNotPermitted``, one missing or
without certificates ``InvalidCACertificateRef``; when none is valid the listener is
``Accepted=False`` with ``NoValidCACertificate`` and not served (serving it without the
check would let in clients it means to keep out). ``mode: AllowInsecureFallback`` lets
clients without a valid certificate in all the same. HTTP listeners are not affected.
A ClientTrafficPolicy's ``tls.clientValidation`` works the same way
(:func:`policy_client_validation`), and replaces the Gateway's on its listeners. Pure.
"""

from __future__ import annotations

from federation.registry.gatewayapi import FrontendTLSValidation, GatewayRecord
from federation.registry.policies import ClientTrafficPolicyRecord
from federation.translate.gateway.inputs import ClusterInputs
from federation.translate.gateway.policy_settings import PolicyError
from federation.translate.gateway.refs import CORE_GROUP, gateway_ref_problem
from federation.translate.gateway.status import ListenerReason
from federation.translate.ir import ClientValidationIR

MODES = ("AllowValidOnly", "AllowInsecureFallback")

#: (reason, message) of one failed check, as listener states keep them.
Problem = tuple[ListenerReason, str]


def validation_for(gateway: GatewayRecord, port: int) -> FrontendTLSValidation | None:
    """The client certificate validation of ``gateway``'s HTTPS listeners on ``port``:
    its ``perPort`` entry's, else the default (None: none)."""
    tls = gateway.spec.tls
    frontend = None if tls is None else tls.frontend
    if frontend is None:
        return None
    for entry in frontend.per_port:
        if entry.port == port:
            return None if entry.tls is None else entry.tls.validation
    return None if frontend.default is None else frontend.default.validation


def client_validation(
    inputs: ClusterInputs, gateway: GatewayRecord, port: int
) -> tuple[ClientValidationIR | None, list[Problem], list[Problem]]:
    """(what the listener on ``port`` checks, unresolved references, why it is not
    accepted); all empty: no client certificates asked for."""
    validation = validation_for(gateway, port)
    if validation is None:
        return None, [], []
    mode = validation.mode or MODES[0]
    if mode not in MODES:
        return (
            None,
            [],
            [
                (
                    ListenerReason.INVALID,
                    f"frontend validation mode {mode!r} is not one of {list(MODES)}",
                )
            ],
        )
    read = {(c.namespace, c.name): c for c in gateway.ca_certificates}
    unresolved: list[Problem] = []
    certificates = []
    for ref in validation.ca_certificate_refs:
        problem = gateway_ref_problem(
            inputs.grants,
            gateway.namespace,
            ref,
            "ConfigMap",
            ListenerReason.INVALID_CA_CERTIFICATE_KIND,
            "caCertificateRef",
        )
        if problem is not None:
            unresolved.append(problem)
            continue
        namespace = ref.namespace or gateway.namespace
        found = read.get((namespace, ref.name))
        if found is None or found.pem is None:
            message = (
                f"ConfigMap {namespace}/{ref.name} is not read yet"
                if found is None
                else found.message
            )
            what = f"ConfigMap {namespace}/{ref.name} cannot be used"
            unresolved.append((ListenerReason.INVALID_CA_CERTIFICATE_REF, message or what))
            continue
        certificates.append(found.pem.strip() + "\n")
    if not certificates:
        if not unresolved:
            unresolved.append(
                (ListenerReason.INVALID_CA_CERTIFICATE_REF, "validation names no caCertificateRefs")
            )
        why = "no valid CA certificate for client certificate validation: " + "; ".join(
            m for _, m in unresolved
        )
        return None, unresolved, [(ListenerReason.NO_VALID_CA_CERTIFICATE, why)]
    ir = ClientValidationIR("".join(certificates), optional=mode == "AllowInsecureFallback")
    return ir, unresolved, []


def policy_client_validation(policy: ClientTrafficPolicyRecord) -> ClientValidationIR | None:
    """A ClientTrafficPolicy's ``tls.clientValidation``, on the agent's reading of its CA
    ConfigMaps (of the policy's own namespace); PolicyError names what cannot be served."""
    tls = policy.spec.tls
    validation = None if tls is None else tls.client_validation
    if validation is None:
        return None
    path = "spec.tls.clientValidation"
    mode = validation.mode or MODES[0]
    if mode not in MODES:
        raise PolicyError(f"{path}.mode {mode!r} is not one of {list(MODES)}")
    if not validation.ca_certificate_refs:
        raise PolicyError(f"{path}.caCertificateRefs is empty")
    read = {(c.namespace, c.name): c for c in policy.ca_certificates}
    certificates = []
    for i, ref in enumerate(validation.ca_certificate_refs):
        where = f"{path}.caCertificateRefs[{i}]"
        if (ref.group or CORE_GROUP, ref.kind or "ConfigMap") != (CORE_GROUP, "ConfigMap"):
            raise PolicyError(
                f"{where}: only ConfigMaps are supported (a Secret's data never leaves its "
                "cluster's agent)"
            )
        if ref.namespace not in (None, policy.namespace):
            raise PolicyError(f"{where}: a ConfigMap of another namespace is not supported")
        found = read.get((policy.namespace, ref.name))
        if found is None or found.pem is None:
            why = found.message if found is not None else None
            raise PolicyError(
                f"{where}: {why or f'ConfigMap {policy.namespace}/{ref.name} is not read yet'}"
            )
        certificates.append(found.pem.strip() + "\n")
    optional = bool(validation.optional) or mode == "AllowInsecureFallback"
    return ClientValidationIR("".join(certificates), optional=optional)


def policy_ca_references(policy: ClientTrafficPolicyRecord) -> list[tuple[str, str]]:
    """(namespace, name) of the ConfigMaps a ClientTrafficPolicy's client validation
    names in its own namespace, sorted: what its agent reads."""
    tls = policy.spec.tls
    validation = None if tls is None else tls.client_validation
    refs = () if validation is None else validation.ca_certificate_refs
    return sorted(
        {
            (policy.namespace, ref.name)
            for ref in refs
            if (ref.group or CORE_GROUP, ref.kind or "ConfigMap") == (CORE_GROUP, "ConfigMap")
            and ref.namespace in (None, policy.namespace)
        }
    )


def insecure_ports(gateway: GatewayRecord) -> str:
    """Where the Gateway's client certificate validation is ``AllowInsecureFallback``
    (``"every port"``, ``"every port but 443"``, ``"ports 8443, 9443"``; "" where
    nowhere): the message of its ``InsecureFrontendValidationMode`` condition."""
    tls = gateway.spec.tls
    frontend = None if tls is None else tls.frontend
    if frontend is None:
        return ""

    def insecure(validation: FrontendTLSValidation | None) -> bool:
        return validation is not None and validation.mode == "AllowInsecureFallback"

    per_port = {p.port: insecure(p.tls.validation if p.tls else None) for p in frontend.per_port}
    if insecure(frontend.default.validation if frontend.default else None):
        strict = sorted(port for port, fallback in per_port.items() if not fallback)
        return "every port" + (f" but {', '.join(map(str, strict))}" if strict else "")
    ports = sorted(port for port, fallback in per_port.items() if fallback)
    if not ports:
        return ""
    return f"port{'s' if len(ports) > 1 else ''} {', '.join(map(str, ports))}"


def ca_references(gateway: GatewayRecord) -> list[tuple[str, str]]:
    """(namespace, name) of every ConfigMap the Gateway's client certificate validation
    names, sorted: what its agent reads."""
    tls = gateway.spec.tls
    frontend = None if tls is None else tls.frontend
    if frontend is None:
        return []
    validations = [frontend.default.validation if frontend.default else None]
    validations += [p.tls.validation if p.tls else None for p in frontend.per_port]
    found = set()
    for validation in validations:
        for ref in () if validation is None else validation.ca_certificate_refs:
            if (ref.group or CORE_GROUP, ref.kind or "ConfigMap") == (CORE_GROUP, "ConfigMap"):
                found.add((ref.namespace or gateway.namespace, ref.name))
    return sorted(found)
