"""Envoy Gateway's extension server, called on each node group's translation.

An extension server written for Envoy Gateway (its ``envoygateway.extension`` gRPC
service, :mod:`federation.extension_api`) works here unchanged. When the hub is started
with ``--extension-server``, every node group's resources, once translated (and patched
by its EnvoyPatchPolicies), go through the hooks it subscribes to before they are served:

* ``Route`` (``PostRouteModify``): each route of each of the group's route
  configurations, with its virtual host's domains as ``hostnames``;
* ``VirtualHost`` (``PostVirtualHostModify``): each virtual host;
* ``HTTPListener`` (``PostHTTPListenerModify``): each listener;
* ``Translation`` (``PostTranslateModify``): the group's clusters and Secrets (and,
  when asked, listeners and routes), whose lists the response replaces, as in Envoy
  Gateway. ClusterLoadAssignments never go through a hook.

An empty response leaves the resource as it was. **The multi-cluster bit**: every call
carries the member cluster and node group as gRPC metadata (``x-federation-cluster``,
``x-federation-node-group``), and a context that has ``extension_resources`` gets one
more, ``{"apiVersion": "federation.io/v1alpha1", "kind": "NodeGroup", ...}`` (unstructured
JSON, as Envoy Gateway sends its extension resources) naming the cluster and Gateway.

**Only what changed is sent.** A group whose hooked resources (everything but endpoints)
are the ones it had is not sent again (an endpoint change calls nothing), and within a
group each request is remembered with the response it got: a route change sends that
route (and what contains it) only.

**Failure.** A call that fails or takes longer than the timeout fails the group's run.
``fail_open`` (Envoy Gateway's ``failOpen: true``) then serves the group's translation
unmodified; otherwise (fail closed, the default) the group keeps what it served, the last
result the extension accepted, and a group that never had one gets nothing. Either way
the hub tries the group again (:meth:`ExtensionStage.due`) until it succeeds. Calls,
errors and latency are counted (:class:`ExtensionStats`); ``fedctl config-dump`` shows
what each hook changed in the group's last successful run (:meth:`GroupRun.changes`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import grpc

from federation.errors import InvalidInputError
from federation.extension_api import Stubs, stubs
from federation.node_groups import cluster_of_group, parse_group
from federation.translate.proxy import XdsResources
from federation.xds.snapshot import CLUSTER, LISTENER, ORDER, ROUTE, SECRET, Resource, decode

log = logging.getLogger("federation.hub.extension")


class Hook(StrEnum):
    """Envoy Gateway's ``xdsTranslator`` post hooks, by its names."""

    ROUTE = "Route"
    VIRTUAL_HOST = "VirtualHost"
    HTTP_LISTENER = "HTTPListener"
    TRANSLATION = "Translation"


#: ``--extension-translation-types`` names and their types; Envoy Gateway sends clusters and
#: Secrets by default, listeners and routes only when told to.
TRANSLATION_TYPES = {"clusters": CLUSTER, "secrets": SECRET, "listeners": LISTENER, "routes": ROUTE}
DEFAULT_TRANSLATION_TYPES = frozenset({CLUSTER, SECRET})
#: Latency buckets of the calls, in seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Calls in flight at once, over every node group.
CONCURRENCY = 32
#: Envoy Gateway's default maximum message size is 4 MiB; a group's clusters can be more.
MAX_MESSAGE = 64 * 1024 * 1024
NODE_GROUP_API = "federation.io/v1alpha1"


@dataclass(frozen=True)
class ExtensionSettings:
    """Where the extension server is and how to call it (``federation-hub --extension-*``)."""

    address: str
    hooks: tuple[Hook, ...]
    timeout: float = 1.0
    fail_open: bool = False
    translation_types: frozenset[str] = DEFAULT_TRANSLATION_TYPES
    #: TLS: the CA that signs the server's certificate (None: plain text), and the hub's
    #: client certificate and key when the server asks for one.
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: The name to verify the server's certificate against (default: the address' host).
    server_name: str | None = None

    def __post_init__(self) -> None:
        if not self.hooks:
            raise InvalidInputError("--extension-hook: at least one hook is needed")
        if self.timeout <= 0:
            raise InvalidInputError("--extension-timeout must be more than 0 seconds")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInputError("--extension-tls-cert and --extension-tls-key go together")
        if self.tls_cert is not None and self.tls_ca is None:
            raise InvalidInputError("a client certificate needs --extension-tls-ca")


@dataclass
class ExtensionStats:
    """What the hub's ``/metrics`` shows of the extension server."""

    #: Calls by (hook, outcome): ``ok``, ``error``, ``timeout``, ``invalid``.
    calls: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Per hook: call counts per latency bucket (the last is +Inf), the sum of seconds.
    buckets: dict[str, list[int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: Requests answered from a group's memory instead of a call.
    remembered: int = 0
    #: Group runs by outcome: ``ok``, ``failed_open``, ``failed_closed``, ``unchanged``.
    runs: dict[str, int] = field(default_factory=dict)

    def count(self, hook: Hook, outcome: str, seconds: float) -> None:
        key = (hook.value, outcome)
        self.calls[key] = self.calls.get(key, 0) + 1
        counts = self.buckets.setdefault(hook.value, [0] * (len(BUCKETS) + 1))
        index = next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))
        counts[index] += 1
        self.seconds[hook.value] = self.seconds.get(hook.value, 0.0) + seconds

    def ran(self, outcome: str) -> None:
        self.runs[outcome] = self.runs.get(outcome, 0) + 1


class ExtensionError(Exception):
    """One hook call that failed: ``outcome`` is how it is counted."""

    def __init__(self, hook: Hook, outcome: str, message: str) -> None:
        super().__init__(f"{hook.value}: {message}")
        self.hook, self.outcome = hook, outcome


#: One resource a hook changed: before and after (None: it did not exist / was removed).
Change = tuple[Resource | None, Resource | None]


@dataclass
class GroupRun:
    """A group's last run: what to serve (None: keep what is served), why it failed,
    and what each hook changed, by (type URL, name)."""

    resources: XdsResources[Resource] | None
    error: str | None = None
    changed: dict[Hook, dict[tuple[str, str], Change]] = field(default_factory=dict)

    def changes(self) -> dict[str, list[tuple[str, str, Change]]]:
        """Per hook name, each changed resource (type URL, name, before and after)."""
        return {
            hook.value: [(t, n, change) for (t, n), change in sorted(found.items())]
            for hook, found in self.changed.items()
            if found
        }


@dataclass
class _Memory:
    """A group's state: the hooked input it was last run on and the output served, the
    last successful run's changes, and its requests (hashed) with their responses."""

    input_versions: dict[str, dict[str, str]] | None = None
    output: XdsResources[Resource] | None = None
    changed: dict[Hook, dict[tuple[str, str], Change]] = field(default_factory=dict)
    responses: dict[bytes, bytes] = field(default_factory=dict)


#: Sends one request: (hook, method name, request, response class, metadata) -> response.
Caller = Callable[[Hook, str, Any, Any, tuple[tuple[str, str], ...]], Awaitable[Any]]


class ExtensionStage:
    """Runs node groups' resources through the extension server (module docstring)."""

    def __init__(
        self,
        settings: ExtensionSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        caller: Caller | None = None,
    ) -> None:
        self.settings = settings
        self.stats = ExtensionStats()
        self._stubs: Stubs = stubs()
        self._clock = clock
        self._caller = caller
        self._channel: grpc.aio.Channel | None = None
        self._memory: dict[str, _Memory] = {}
        #: Calls in flight at once, over every group (made in the event loop).
        self._semaphore: asyncio.Semaphore | None = None
        #: Each group's last run (for config-dump), and the groups to run again.
        self.last: dict[str, GroupRun] = {}
        self._retry: set[str] = set()

    # --- the channel -------------------------------------------------------------------------

    def _channel_of(self) -> grpc.aio.Channel:
        if self._channel is None:
            options: list[tuple[str, str | int]] = [
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                # A server that comes back is found within the hub's retry period.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ]
            s = self.settings
            if s.tls_ca is None:
                self._channel = grpc.aio.insecure_channel(s.address, options=options)
            else:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=s.tls_ca.read_bytes(),
                    private_key=None if s.tls_key is None else s.tls_key.read_bytes(),
                    certificate_chain=None if s.tls_cert is None else s.tls_cert.read_bytes(),
                )
                if s.server_name:
                    options.append(("grpc.ssl_target_name_override", s.server_name))
                self._channel = grpc.aio.secure_channel(s.address, credentials, options=options)
        return self._channel

    def _limit(self) -> asyncio.Semaphore:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(CONCURRENCY)
        return self._semaphore

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _call(
        self,
        hook: Hook,
        method: str,
        request: Any,
        response_class: Any,
        metadata: tuple[tuple[str, str], ...],
    ) -> Any:
        if self._caller is not None:
            return await self._caller(hook, method, request, response_class, metadata)
        call = self._channel_of().unary_unary(
            f"/envoygateway.extension.EnvoyGatewayExtension/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString,
        )
        return await call(request, timeout=self.settings.timeout, metadata=metadata)

    async def _send(
        self,
        memory: _Memory,
        answers: dict[bytes, bytes],
        hook: Hook,
        method: str,
        request: Any,
        response_class: Any,
        metadata: tuple[tuple[str, str], ...],
    ) -> Any:
        """The response to ``request``: remembered when this group sent the same before,
        else the server's (counted); ExtensionError when the call fails."""
        key = hashlib.sha256(
            method.encode() + b"\0" + request.SerializeToString(deterministic=True)
        ).digest()
        remembered = memory.responses.get(key)
        if remembered is not None:
            self.stats.remembered += 1
            answers[key] = remembered
            return response_class.FromString(remembered)
        began = self._clock()
        try:
            async with self._limit():
                response = await self._call(hook, method, request, response_class, metadata)
        except grpc.aio.AioRpcError as err:
            elapsed = self._clock() - began
            timeout = err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            outcome = "timeout" if timeout else "error"
            self.stats.count(hook, outcome, elapsed)
            raise ExtensionError(hook, outcome, f"{err.code().name}: {err.details()}") from err
        except (grpc.RpcError, OSError) as err:
            self.stats.count(hook, "error", self._clock() - began)
            raise ExtensionError(hook, "error", f"{type(err).__name__}: {err}") from err
        if response is None:  # grpc.aio's answer to a response it cannot deserialize
            self.stats.count(hook, "invalid", self._clock() - began)
            raise ExtensionError(hook, "invalid", f"the {method} response does not parse")
        self.stats.count(hook, "ok", self._clock() - began)
        answers[key] = response.SerializeToString(deterministic=True)
        return response

    # --- one group ---------------------------------------------------------------------------

    def failing_closed(self) -> dict[str, str]:
        """The groups that keep an older result because their last run failed, and why."""
        return {
            group: run.error
            for group, run in self.last.items()
            if run.error is not None and run.resources is None
        }

    def due(self) -> set[str]:
        """The groups whose last run failed: to run again on their translation then."""
        return set(self._retry)

    def forget(self, group: str) -> None:
        """The group is gone."""
        self._memory.pop(group, None)
        self._retry.discard(group)
        self.last.pop(group, None)

    async def run(self, group: str, resources: XdsResources[Resource]) -> GroupRun:
        """The group's resources after the hooks; on failure, per the fail policy."""
        memory = self._memory.setdefault(group, _Memory())
        versions = _hooked_versions(resources)
        if memory.input_versions == versions and memory.output is not None:
            # Nothing a hook sees changed (an endpoint update): the last output, with the
            # new assignments.
            self.stats.ran("unchanged")
            run = GroupRun(_with_endpoints(memory.output, resources), None, memory.changed)
            self.last[group] = run
            self._retry.discard(group)
            memory.output = run.resources
            return run
        answers: dict[bytes, bytes] = {}
        try:
            output, changed = await self._hooks(group, resources, memory, answers)
        except (ExtensionError, InvalidInputError) as err:
            return self._failed(group, resources, memory, str(err))
        except Exception as err:  # a response no check foresaw: the group's failure
            log.exception("extension run of %s failed", group)
            return self._failed(group, resources, memory, f"{type(err).__name__}: {err}")
        memory.input_versions, memory.output, memory.changed = versions, output, changed
        memory.responses = answers  # only what this run used: memory stays bounded
        self._retry.discard(group)
        self.stats.ran("ok")
        run = GroupRun(output, None, changed)
        self.last[group] = run
        return run

    def refused(self, group: str, resources: XdsResources[Resource], why: str) -> GroupRun:
        """The hub refused the run's result (it is not consistent): a failure of the
        group, as :meth:`run`'s are, on ``resources`` (its translation)."""
        memory = self._memory.setdefault(group, _Memory())
        memory.input_versions = memory.output = None  # never the fast path to it again
        memory.changed = {}
        return self._failed(group, resources, memory, f"its result is refused: {why}")

    def retry(self, group: str) -> None:
        """Run the group again (its result came too late: newer input was served)."""
        self._retry.add(group)

    def _failed(
        self, group: str, resources: XdsResources[Resource], memory: _Memory, error: str
    ) -> GroupRun:
        self._retry.add(group)
        if self.settings.fail_open:
            self.stats.ran("failed_open")
            log.warning(
                "extension server failed for %s, serving its translation unmodified "
                "(fail open): %s",
                group,
                error,
            )
            run = GroupRun(resources, error, {})
            # What is now served is the unmodified translation: the next run must call.
            memory.input_versions, memory.output = None, None
        else:
            self.stats.ran("failed_closed")
            log.warning(
                "extension server failed for %s, keeping what it serves (fail closed): %s",
                group,
                error,
            )
            run = GroupRun(None, error, memory.changed)
        self.last[group] = run
        return run

    async def _hooks(
        self,
        group: str,
        resources: XdsResources[Resource],
        memory: _Memory,
        answers: dict[bytes, bytes],
    ) -> tuple[XdsResources[Resource], dict[Hook, dict[tuple[str, str], Change]]]:
        m = self._stubs.messages
        c = self._stubs.context
        hooks = self.settings.hooks
        metadata = (
            ("x-federation-cluster", cluster_of_group(group)),
            ("x-federation-node-group", group),
        )
        context = c.ExtensionResource(unstructured_bytes=_node_group_resource(group))
        current = {t: dict(kind) for t, kind in zip(ORDER, resources.by_kind(), strict=True)}
        changed: dict[Hook, dict[tuple[str, str], Change]] = {}

        async def send(hook: Hook, method: str, request: Any, response_class: Any) -> Any:
            return await self._send(
                memory, answers, hook, method, request, response_class, metadata
            )

        if Hook.ROUTE in hooks or Hook.VIRTUAL_HOST in hooks:
            for name, resource in sorted(current[ROUTE].items()):
                config = decode(resource)
                if Hook.ROUTE in hooks:
                    before = resource
                    await self._routes(config, send, context)
                    after = Resource.of(config, name)
                    _note(changed, Hook.ROUTE, before, after)
                    resource = after
                if Hook.VIRTUAL_HOST in hooks:
                    before = resource
                    hosts = await _all(
                        *(
                            send(
                                Hook.VIRTUAL_HOST,
                                "PostVirtualHostModify",
                                m.PostVirtualHostModifyRequest(
                                    virtual_host=host,
                                    post_virtual_host_context=c.PostVirtualHostExtensionContext(),
                                ),
                                m.PostVirtualHostModifyResponse,
                            )
                            for host in config.virtual_hosts
                        )
                    )
                    for host, reply in zip(config.virtual_hosts, hosts, strict=True):
                        if reply.HasField("virtual_host"):
                            host.CopyFrom(reply.virtual_host)
                    after = Resource.of(config, name)
                    _note(changed, Hook.VIRTUAL_HOST, before, after)
                    resource = after
                current[ROUTE][name] = resource
        if Hook.HTTP_LISTENER in hooks:
            names = sorted(current[LISTENER])
            replies = await _all(
                *(
                    send(
                        Hook.HTTP_LISTENER,
                        "PostHTTPListenerModify",
                        m.PostHTTPListenerModifyRequest(
                            listener=decode(current[LISTENER][n]),
                            post_listener_context=c.PostHTTPListenerExtensionContext(
                                extension_resources=[context]
                            ),
                        ),
                        m.PostHTTPListenerModifyResponse,
                    )
                    for n in names
                )
            )
            for name, reply in zip(names, replies, strict=True):
                if not reply.HasField("listener"):
                    continue
                if reply.listener.name != name:
                    self.stats.count(Hook.HTTP_LISTENER, "invalid", 0.0)
                    raise ExtensionError(
                        Hook.HTTP_LISTENER,
                        "invalid",
                        f"listener {name!r} came back named {reply.listener.name!r}",
                    )
                after = Resource.of(reply.listener, name)
                _note(changed, Hook.HTTP_LISTENER, current[LISTENER][name], after)
                current[LISTENER][name] = after
        if Hook.TRANSLATION in hooks:
            await self._translation(current, send, context, changed)
        output = XdsResources.of_kinds(*(current[t] for t in ORDER))
        return output, changed

    async def _routes(self, config: Any, send: Callable[..., Awaitable[Any]], context: Any) -> None:
        """Every route of one route configuration through ``PostRouteModify``."""
        m, c = self._stubs.messages, self._stubs.context
        slots = [(host, i) for host in config.virtual_hosts for i in range(len(host.routes))]
        replies = await _all(
            *(
                send(
                    Hook.ROUTE,
                    "PostRouteModify",
                    m.PostRouteModifyRequest(
                        route=host.routes[i],
                        post_route_context=c.PostRouteExtensionContext(
                            hostnames=list(host.domains), extension_resources=[context]
                        ),
                    ),
                    m.PostRouteModifyResponse,
                )
                for host, i in slots
            )
        )
        for (host, i), reply in zip(slots, replies, strict=True):
            if reply.HasField("route"):
                host.routes[i].CopyFrom(reply.route)

    async def _translation(
        self,
        current: dict[str, dict[str, Resource]],
        send: Callable[..., Awaitable[Any]],
        context: Any,
        changed: dict[Hook, dict[tuple[str, str], Change]],
    ) -> None:
        """``PostTranslateModify``: the response's lists replace the types sent."""
        m, c = self._stubs.messages, self._stubs.context
        types = self.settings.translation_types
        fields = {CLUSTER: "clusters", SECRET: "secrets", LISTENER: "listeners", ROUTE: "routes"}
        request = m.PostTranslateModifyRequest(
            post_translate_context=c.PostTranslateExtensionContext(extension_resources=[context])
        )
        for type_url, field_name in fields.items():
            if type_url in types:
                getattr(request, field_name).extend(
                    decode(r) for _, r in sorted(current[type_url].items())
                )
        reply = await send(
            Hook.TRANSLATION, "PostTranslateModify", request, m.PostTranslateModifyResponse
        )
        for type_url, field_name in fields.items():
            if type_url not in types:
                continue
            replaced: dict[str, Resource] = {}
            for message in getattr(reply, field_name):
                if not message.name:
                    self.stats.count(Hook.TRANSLATION, "invalid", 0.0)
                    raise ExtensionError(
                        Hook.TRANSLATION, "invalid", f"a {field_name[:-1]} came back without a name"
                    )
                replaced[message.name] = Resource.of(message, message.name)
            before = current[type_url]
            for name in before.keys() | replaced.keys():
                if before.get(name) != replaced.get(name):
                    changed.setdefault(Hook.TRANSLATION, {})[type_url, name] = (
                        before.get(name),
                        replaced.get(name),
                    )
            current[type_url] = replaced


async def _all(*calls: Awaitable[Any]) -> list[Any]:
    """Every call's result, in order; on the first failure the others are cancelled
    (they would go on calling a server that is failing) and it is raised."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:  # also when this is cancelled (the hub stopping): no call outlives it
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
    return list(outcomes)


def _note(
    changed: dict[Hook, dict[tuple[str, str], Change]],
    hook: Hook,
    before: Resource,
    after: Resource,
) -> None:
    if before != after:
        changed.setdefault(hook, {})[before.type_url, before.name] = (before, after)


def _hooked_versions(resources: XdsResources[Resource]) -> dict[str, dict[str, str]]:
    """The versions of everything a hook can see (all but the assignments)."""
    return {
        type_url: {name: r.version for name, r in kind.items()}
        for type_url, kind in zip(ORDER, resources.by_kind(), strict=True)
        if type_url in (CLUSTER, SECRET, LISTENER, ROUTE)
    }


def _with_endpoints(
    output: XdsResources[Resource], resources: XdsResources[Resource]
) -> XdsResources[Resource]:
    """``output`` with the assignments of ``resources``."""
    return XdsResources(
        output.clusters, dict(resources.endpoints), output.listeners, output.routes,
        secrets=output.secrets,
    )  # fmt: skip


def _node_group_resource(group: str) -> bytes:
    """The context resource that says which cluster (and Gateway) the call is for."""
    parsed = parse_group(group)
    gateway = (
        None
        if parsed.gateway is None
        else {"namespace": parsed.gateway[0], "name": parsed.gateway[1]}
    )
    doc: Mapping[str, Any] = {
        "apiVersion": NODE_GROUP_API,
        "kind": "NodeGroup",
        "metadata": {"name": group},
        "spec": {"cluster": parsed.cluster, "gateway": gateway},
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
