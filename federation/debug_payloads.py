"""The JSON the hub's and the agents' ``/debug/*`` endpoints answer, as types.

Written by the hub (:mod:`federation.hub.config_dump`, :mod:`federation.hub.trace`) and
the agents (:mod:`agents.trace`, :mod:`agents.metrics`); read by ``fedctl``
(:mod:`federation.cli.config_dump`, :mod:`federation.cli.trace`). One module for both
sides, so a field renamed on one side is a type error on the other. Times are Unix
seconds of the answering process's clock; stream entry ids are Redis's ``<ms>-<seq>``.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

# --- /debug/config-dump?cluster= (hub) ------------------------------------------------------


class ServedResource(TypedDict):
    """One resource as the hub serves it: name, content-hash version, bytes in base64."""

    name: str
    version: str
    body: str


class HookChange(TypedDict):
    """One resource an extension server's hook changed: before and after (base64 bytes;
    None: it did not exist, or was removed)."""

    type: str
    name: str
    before: str | None
    after: str | None


class ExtensionRun(TypedDict):
    """The group's last run through the extension server."""

    #: Why it failed (None: it did not), and what each hook changed in the last run
    #: that succeeded (the one whose result is served), by hook name.
    error: str | None
    hooks: dict[str, list[HookChange]]


class ConfigDump(TypedDict):
    """A node group's current snapshot."""

    cluster: str
    ready: bool
    generation: int
    #: Per type URL, the version the group's Envoys are offered.
    versions: dict[str, str]
    resources: dict[str, list[ServedResource]]
    #: With an extension server: what it did to this group.
    extension: NotRequired[ExtensionRun]


# --- /debug/trace (agents) ---------------------------------------------------------------------


class ExportStep(TypedDict, total=False):
    """The exporting side's last step for one service or route."""

    #: When the agent took the change up.
    observed_at: float
    #: The registry stream entry its publish (or withdrawal) made.
    entry: str | None
    #: When that entry took effect (the registry's time).
    published_at: float
    withdrawn: bool


class ImportStep(TypedDict):
    """The importing side's last step for one service."""

    written_at: float
    #: Per exporting cluster, the stream entry the ServiceImport reflects.
    positions: dict[str, str]


AgentTrace = TypedDict(
    "AgentTrace",
    {"cluster": str, "now": float, "export": ExportStep | None, "import": ImportStep | None},
)


# --- /debug/trace (hub) --------------------------------------------------------------------------


class RegistryRead(TypedDict):
    """How far the hub has read one cluster's stream, and its last entry of the object."""

    cluster: str
    #: Every entry up to here is in the hub's view.
    position: str
    read_at: float
    #: The last entry of this object read from the stream (None: it came with the load).
    entry: str | None
    entry_read_at: float | None


class AppliedUpdate(TypedDict):
    """The hub's last update of the snapshots that included the object."""

    at: float
    #: The generation it gave each affected node group.
    generations: dict[str, int]
    positions: dict[str, str]


EnvoyState = Literal["not sent", "sent", "acked", "nacked", "gone", "no envoy"]


class EnvoyProgress(TypedDict, total=False):
    """Where the change is at one Envoy of an affected node group."""

    node_id: str
    group: str
    #: ``sotw`` or ``delta``.
    protocol: str
    #: The generation of the group's snapshot that carries the change.
    generation: int
    state: EnvoyState
    sent_at: float | None
    answered_at: float | None
    nack: str | None


class HubTrace(TypedDict):
    service: str
    now: float
    registry: list[RegistryRead]
    applied: AppliedUpdate | None
    envoys: list[EnvoyProgress]


class DnsExplanation(TypedDict):
    """An agent's answer to one DNS question, with the reason (``/debug/dns``, ``fedctl
    dns``): records in presentation format."""

    cluster: str
    name: str
    type: str
    rcode: str
    answer: list[str]
    authority: list[str]
    additional: list[str]
    why: str
