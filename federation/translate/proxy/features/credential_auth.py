"""Basic auth and API keys (a SecurityPolicy's ``basicAuth`` and ``apiKeyAuth``): Envoy's
``basic_auth`` and ``api_key_auth`` filters, one per policy, whose configuration the
Envoy discovers from its own cluster's agent.

Why discovered: the filters' configuration holds the credentials themselves (Envoy's
``api_key_auth`` takes its keys inline only, and ``basic_auth`` reads its users once,
never again when the file changes), and credentials must not leave their cluster. So the
hub's listener names each policy's filter (``envoy.filters.http.basic_auth/<ns>/<policy>``)
with a ``config_discovery`` source: the extension config discovery service (ECDS) of the
static cluster :data:`AGENT_CLUSTER`, which a Gateway's Envoy bootstrap points at its
cluster's agent (``fedctl bootstrap --agent-address``). The agent builds the
configuration from the policy and its Secrets (:func:`basic_auth_config`,
:func:`api_key_auth_config`, the same names) and serves it to the Envoys of the Gateways
whose routes the policy covers, and to no other.

Until the agent has answered, and whenever it cannot be reached at first, the filter runs
its default configuration, which knows no credentials: every request of its routes is
refused (401). The listener does not wait for it (``apply_default_config_without_warming``),
so the Gateway's other routes serve meanwhile. Once answered, a lost agent leaves the last
configuration in place. An Envoy whose bootstrap lacks :data:`AGENT_CLUSTER` refuses such
a listener (NACK) and keeps its previous one, which is why the agent refuses to run the
Gateways' Envoys without telling them where it is (``--gateway-agent-address``).

Like ``ext_authz``, each filter is disabled on the listener and turned on by the routes
under its policy (Envoy Gateway's layout), in Envoy Gateway's order: API keys, then basic
auth, after external authorization and before JWT.
"""

# xds-protos ships no type stubs: its modules are untyped (Any) to mypy.

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from envoy.config.core.v3 import base_pb2, config_source_pb2, extension_pb2, grpc_service_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.api_key_auth.v3 import api_key_auth_pb2
from envoy.extensions.filters.http.basic_auth.v3 import basic_auth_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from federation.translate.ir import CredentialAuthIR, ListenerIR, RouteIR
from federation.translate.proxy.features.base import Feature, listener_routes, serves_policies

BASIC_AUTH_FILTER = "envoy.filters.http.basic_auth"
API_KEY_AUTH_FILTER = "envoy.filters.http.api_key_auth"
#: The static cluster of a Gateway's Envoy bootstrap that reaches its cluster's agent.
AGENT_CLUSTER = "federation-agent"
TYPE_PREFIX = "type.googleapis.com/"


def basic_auth_name(ir: CredentialAuthIR) -> str:
    """The filter (and discovered configuration) name of a policy's basic auth."""
    return f"{BASIC_AUTH_FILTER}/{ir.name}"


def api_key_auth_name(ir: CredentialAuthIR) -> str:
    """The filter (and discovered configuration) name of a policy's API keys."""
    return f"{API_KEY_AUTH_FILTER}/{ir.name}"


def basic_auth_config(htpasswd: str, forward_username_header: str | None = None) -> Any:
    """The ``basic_auth`` configuration of users in htpasswd form (``user:{SHA}hash``)."""
    config = basic_auth_pb2.BasicAuth(users=base_pb2.DataSource(inline_string=htpasswd))
    if forward_username_header:
        config.forward_username_header = forward_username_header
    return config


def api_key_auth_config(
    credentials: Iterable[tuple[str, str]],
    sources: Iterable[tuple[str, str]],
    forward_client_id_header: str | None = None,
    sanitize: bool = False,
) -> Any:
    """The ``api_key_auth`` configuration of ``(client, key)`` pairs, looked for in
    ``sources`` in order: ``("header" | "query" | "cookie", name)``."""
    config = api_key_auth_pb2.ApiKeyAuth(
        credentials=[api_key_auth_pb2.Credential(client=c, key=k) for c, k in credentials],
        key_sources=[api_key_auth_pb2.KeySource(**{kind: name}) for kind, name in sources],
    )
    if forward_client_id_header or sanitize:
        config.forwarding.CopyFrom(
            api_key_auth_pb2.Forwarding(
                header=forward_client_id_header or "", hide_credentials=sanitize
            )
        )
    return config


def extension_config(name: str, config: Any) -> Any:
    """The discovered resource (a ``TypedExtensionConfig``) of a filter's configuration."""
    out = extension_pb2.TypedExtensionConfig(name=name)
    out.typed_config.Pack(config, deterministic=True)
    return out


#: What a filter runs before its agent answers: no credentials, every request refused.
DEFAULT_BASIC_AUTH = basic_auth_config("# no users until the cluster's agent answers\n")
DEFAULT_API_KEY_AUTH = api_key_auth_config((), (("header", "x-api-key"),))


def _discovered(name: str, default: Any) -> Any:
    """A disabled filter whose configuration comes from the agent (the module docstring)."""
    source = config_source_pb2.ConfigSource(
        resource_api_version=config_source_pb2.V3,
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            transport_api_version=config_source_pb2.V3,
            grpc_services=[
                grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=AGENT_CLUSTER)
                )
            ],
        ),
    )
    out = hcm_pb2.HttpFilter(name=name, disabled=True)
    discovery = out.config_discovery
    discovery.config_source.CopyFrom(source)
    discovery.default_config.Pack(default, deterministic=True)
    discovery.apply_default_config_without_warming = True
    discovery.type_urls.append(TYPE_PREFIX + default.DESCRIPTOR.full_name)
    return out


def _enable(out: Any, name: str) -> None:
    """Turn the disabled filter ``name`` on for the route ``out``: an empty config."""
    enable = rc.FilterConfig()
    enable.config.SetInParent()
    out.typed_per_filter_config[name].Pack(enable, deterministic=True)


def _feature(
    feature: str,
    field: Callable[[RouteIR], CredentialAuthIR | None],
    name_of: Callable[[CredentialAuthIR], str],
    default: Any,
) -> Feature:
    def http_filters(listener: ListenerIR) -> list[Any]:
        if not serves_policies(listener):
            return []
        found = {ir.name: ir for r in listener_routes(listener) if (ir := field(r)) is not None}
        return [_discovered(name_of(found[n]), default) for n in sorted(found)]

    def patch_route(ir: RouteIR, out: Any) -> None:
        auth = field(ir)
        if auth is not None:
            _enable(out, name_of(auth))

    return Feature(feature, http_filters=http_filters, patch_route=patch_route)


API_KEY_FEATURE = _feature(
    "api_key_auth", lambda r: r.api_key_auth, api_key_auth_name, DEFAULT_API_KEY_AUTH
)
BASIC_FEATURE = _feature("basic_auth", lambda r: r.basic_auth, basic_auth_name, DEFAULT_BASIC_AUTH)
