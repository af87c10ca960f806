"""The Gateway API features this implementation supports, by their upstream names.

Published by every GatewayClass of ours as ``status.supportedFeatures`` (sorted by name,
as Gateway API requires), where the upstream conformance suite reads which tests to run.
Exactly what passes that suite in our test command: a feature is added here together
with what makes its conformance tests pass, never before.
"""

from __future__ import annotations

#: Core features of the GATEWAY-HTTP and GATEWAY-GRPC profiles.
CORE = ("Gateway", "GRPCRoute", "HTTPRoute", "ReferenceGrant")

#: Extended features, each passing its conformance tests.
EXTENDED = (
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayInfrastructure",
    "GatewayPort8080",
    "GRPCRouteNamedRouteRule",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteDestinationPortMatching",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
)

SUPPORTED_FEATURES = tuple(sorted((*CORE, *EXTENDED)))
