"""The CoreDNS server block that forwards ``clusterset.local`` to the agent.

A cluster's CoreDNS answers ``cluster.local`` itself and forwards ``clusterset.local`` to
the agent's DNS server (its Service in the agent's namespace). The block, as the README
documents it:

    # BEGIN federation clusterset.local
    clusterset.local:53 {
        errors
        cache 5
        forward . 10.96.0.53
    }
    # END federation clusterset.local

``cache`` keeps answers no longer than their own TTL (5 s), so a change of an import
is seen within that behind CoreDNS too. :func:`with_block` adds the block to a Corefile
or replaces the one there, :func:`without_block` removes it; both leave every other
line as it was, and applying either twice changes nothing more.
"""

from __future__ import annotations

from federation.dns.records import TTL
from federation.errors import FederationError

BEGIN = "# BEGIN federation clusterset.local"
END = "# END federation clusterset.local"


def block(server: str, *, force_tcp: bool = False) -> str:
    """The server block forwarding the zone to ``server`` (``IP`` or ``IP:PORT``);
    ``force_tcp`` where only TCP reaches it."""
    options = " {\n        force_tcp\n    }" if force_tcp else ""
    return (
        f"{BEGIN}\n"
        "clusterset.local:53 {\n"
        "    errors\n"
        f"    cache {TTL}\n"
        f"    forward . {server}{options}\n"
        "}\n"
        f"{END}\n"
    )


class CorefileError(FederationError):
    """A Corefile this module will not edit: changing it could break the cluster's DNS."""


def check(corefile: str) -> None:
    """CorefileError unless ``corefile`` has our block once, whole, or not at all, and no
    ``clusterset.local`` server block of someone else's (CoreDNS refuses two blocks for
    one zone, and would not start again)."""
    lines = [line.strip() for line in corefile.splitlines()]
    begins, ends = lines.count(BEGIN), lines.count(END)
    if (begins, ends) not in ((0, 0), (1, 1)) or (begins and lines.index(BEGIN) > lines.index(END)):
        raise CorefileError(
            f"the Corefile has {begins} {BEGIN!r} and {ends} {END!r} lines: expected one "
            "pair or none; fix it by hand"
        )
    outside = without_block(corefile) if begins else corefile
    for line in outside.splitlines():
        words = line.strip().rstrip("{").split()
        if any(w.split(":")[0].rstrip(".") == "clusterset.local" for w in words[:1]):
            raise CorefileError(
                f"the Corefile already has a clusterset.local server block ({line.strip()!r}) "
                "that is not ours; remove it, or leave the forwarding to it"
            )


def without_block(corefile: str) -> str:
    """``corefile`` without our block (unchanged when it has none)."""
    lines = corefile.splitlines(keepends=True)
    out: list[str] = []
    inside = False
    for line in lines:
        if line.strip() == BEGIN:
            inside = True
        elif inside and line.strip() == END:
            inside = False
        elif not inside:
            out.append(line)
    return "".join(out)


def with_block(corefile: str, server: str, *, force_tcp: bool = False) -> str:
    """``corefile`` with our block forwarding to ``server``, after everything else
    (CorefileError when :func:`check` finds it unsafe to edit)."""
    check(corefile)
    rest = without_block(corefile)
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return rest + block(server, force_tcp=force_tcp)
