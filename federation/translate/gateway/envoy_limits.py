"""What Envoy refuses in the values a route hands it, checked before it gets them.

Envoy takes a route configuration whole: one value it refuses rejects (NACKs) the route
configuration of the listener, and the Gateway's Envoys keep serving the last one they
took, so a single bad route would freeze every later change to its Gateway. Each
function here answers why Envoy 1.40 would refuse a value (None when it would not), so
that the route stage refuses it first, by field, and serves everything else. What Envoy
checks, from its protos' validation rules and its own checks when it loads a route
configuration (each was tried with ``envoy --mode validate``):

* header names (in header modifiers and header matches) must not be empty nor hold NUL,
  CR or LF; a modifier may not set, add or remove ``host`` or a ``:``-prefixed
  pseudo-header. Here a name must be an HTTP token (RFC 9110, and Gateway API's own
  pattern), which implies all of that but ``host``;
* header values of ``set`` and ``add`` must not hold NUL, CR or LF, nor exceed 16 KiB
  as written to Envoy (stage 2 writes ``%`` as ``%%``, since Envoy reads ``%`` as the
  start of a substitution command such as ``%REQ(x)%``); any other control character
  than a tab is refused too, as it is not valid in a header (RFC 9110);
* a ``PathPrefix`` (Envoy's ``path_separated_prefix``) must not hold ``?`` or ``#``;
  an ``Exact`` path with them could never match, and Gateway API forbids both;
* rewritten and redirected paths and hostnames must not hold NUL, CR or LF. A path with a
  backslash is refused too: it is no URL path character, and a path rewrite is an RE2
  rewrite string, where ``\\1`` names a group and other escapes make Envoy leave the
  path unchanged;
* regular expressions must be RE2 (no lookaround, no backreferences), not empty, and
  compile to a program of at most :data:`MAX_PROGRAM_SIZE`: those the route stage
  builds too (gRPC methods, CORS origins with a wildcard), which grow with the names in
  them. The size is the one the ``google-re2`` package computes, which errs on the safe
  side: it counts a few more instructions than Envoy 1.40's RE2 for each class of any
  character (``.``, ``[^/]``), so an expression close to the limit may be refused that
  Envoy would take, never the reverse (as far as tried);
* a query parameter name must not be empty nor longer than 1024 bytes;
* numbers go into unsigned 32-bit fields, and the weights of a route's backends must not
  add up to more than 2^32 - 1.

A route's hostnames (virtual host domains) must hold no NUL, CR or LF and must not repeat
without regard to case: with Gateway API's hostname rule (lower case RFC 1123, with an
optional leading ``*.``), neither can happen.
"""

from __future__ import annotations

import re

import re2

#: Envoy's default ``re2.max_program_size.error_level``: a larger program is a NACK.
MAX_PROGRAM_SIZE = 100
#: Envoy's limit on a header name or value (``max_bytes`` of ``HeaderValue``).
MAX_HEADER_BYTES = 16384
#: Envoy's limit on a query parameter name (``QueryParameterMatcher.name``).
MAX_QUERY_NAME_BYTES = 1024
#: Every 32-bit unsigned field of Envoy's (weights, retries, ports).
MAX_UINT32 = 2**32 - 1
#: Gateway API's largest backend weight.
MAX_WEIGHT = 1_000_000

#: RFC 9110 token: Gateway API's pattern for header and query parameter names.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
#: Gateway API's ``PreciseHostname`` and ``Hostname`` (the latter may start with ``*.``).
_PRECISE_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_HOSTNAME = re.compile(rf"(?:\*\.)?{_LABEL}(?:\.{_LABEL})*")
_MAX_HOSTNAME = 253

_NAMED = {"\0": "a NUL (\\0)", "\n": "a line feed (\\n)", "\r": "a carriage return (\\r)"}


def shown(value: str, limit: int = 64) -> str:
    """A value as a status message quotes it: control characters escaped, cut short."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 4]}...{text[-1]}"


def _control(value: str, *, tab: bool) -> str | None:
    """The first control character of ``value`` (a tab allowed when ``tab``), named."""
    for char in value:
        if char in _NAMED:
            return _NAMED[char]
        if (char < " " and not (tab and char == "\t")) or char == "\x7f":
            return f"the control character {char!r}"
        if "\ud800" <= char <= "\udfff":
            return "a lone surrogate (not Unicode text)"
    return None


def header_name(name: str) -> str | None:
    """Why a header name cannot be matched or modified (None: it can)."""
    if not name:
        return "is empty"
    if len(name.encode()) > MAX_HEADER_BYTES:
        return f"is longer than {MAX_HEADER_BYTES} bytes"
    if not _TOKEN.fullmatch(name):
        why = _control(name, tab=False)
        problem = f"contains {why}; a header name is" if why else "is not an HTTP header name:"
        return f"{problem} letters, digits and !#$%&'*+-.^_`|~ only"
    return None


def modifiable_header(name: str) -> str | None:
    """Why a header modifier cannot set, add or remove the header ``name``."""
    if name.startswith(":"):
        return "is a pseudo-header, which a header modifier cannot modify"
    problem = header_name(name)
    if problem is not None:
        return problem
    if name.lower() == "host":
        return "cannot be modified by a header modifier (URLRewrite sets the hostname)"
    return None


def header_value(value: str) -> str | None:
    """Why Envoy cannot set a header to ``value`` as it is written."""
    why = _control(value, tab=True)
    if why is not None:
        return f"contains {why}, which a header value must not"
    written = len(value.encode()) + value.count("%")  # each % is written as %%
    if written > MAX_HEADER_BYTES:
        return f"is longer than {MAX_HEADER_BYTES} bytes as written to Envoy"
    return None


def query_name(name: str) -> str | None:
    """Why a query parameter name cannot be matched."""
    if not name:
        return "is empty"
    if len(name.encode()) > MAX_QUERY_NAME_BYTES:
        return f"is longer than {MAX_QUERY_NAME_BYTES} bytes"
    if not _TOKEN.fullmatch(name):
        why = _control(name, tab=False)
        problem = (
            f"contains {why}; a query parameter name is"
            if why
            else "is not a valid query parameter name:"
        )
        return f"{problem} letters, digits and !#$%&'*+-.^_`|~ only"
    return None


def match_path(value: str) -> str | None:
    """Why an ``Exact`` or ``PathPrefix`` path cannot be matched."""
    if not value.startswith("/"):
        return "must start with /"
    for char in "?#":
        if char in value:
            return f"contains {char!r}, which a path match must not (it is not part of the path)"
    why = _control(value, tab=False)
    if why is not None:
        return f"contains {why}, which a path must not"
    return None


def rewrite_path(value: str) -> str | None:
    """Why a path cannot replace a request's path (in a rewrite or a redirect)."""
    why = _control(value, tab=False)
    if why is not None:
        return f"contains {why}, which a path must not"
    if "\\" in value:
        return "contains a backslash, which is not a URL path character"
    return None


def precise_hostname(value: str) -> str | None:
    """Why a hostname cannot be written into a request (rewrite) or a redirect."""
    if len(value) > _MAX_HOSTNAME or not _PRECISE_HOSTNAME.fullmatch(value):
        return "is not a hostname (lower case letters, digits, - and ., as in RFC 1123)"
    return None


def hostname(value: str) -> str | None:
    """Why a route hostname cannot be a virtual host's domain."""
    if len(value) > _MAX_HOSTNAME or not _HOSTNAME.fullmatch(value):
        return (
            "is not a hostname (lower case letters, digits, - and ., as in RFC 1123, "
            "with an optional leading *.)"
        )
    return None


def regex(pattern: str, advice: str = "simplify it") -> str | None:
    """Why Envoy's RE2 refuses a regular expression; ``advice`` says what to do when its
    program is too large."""
    if not pattern:
        return "is empty"
    try:
        program = re2.compile(pattern)
    except re2.error as err:
        message = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else err
        return f"is not a valid RE2 expression: {message}"
    if program.programsize > MAX_PROGRAM_SIZE:
        return (
            f"compiles to an RE2 program of size {program.programsize}, more than Envoy's "
            f"limit of {MAX_PROGRAM_SIZE}: {advice}"
        )
    return None


def cors_origin(origin: str) -> str | None:
    """Why the data plane cannot match a CORS origin: a control character (it could never
    match), or, for one with a wildcard, the regular expression it becomes (as
    ``translate/proxy/features/cors.py`` builds it) being too large for RE2."""
    why = _control(origin, tab=False)
    if why is not None:
        return f"contains {why}, which an origin must not"
    if origin == "*" or "*" not in origin:
        return None
    pattern = "^" + ".*".join(re.escape(part) for part in origin.split("*")) + "$"
    problem = regex(pattern, "use a shorter origin or a list of exact ones")
    if problem is not None:
        return f"becomes the regular expression {shown(pattern)}, which {problem}"
    return None


def in_range(value: int, low: int = 0, high: int = MAX_UINT32) -> str | None:
    """Why a number is out of ``[low, high]`` (by default, an unsigned 32-bit field's)."""
    if not low <= value <= high:
        return f"must be from {low} to {high}"
    return None
