"""Reading redis-py's replies whichever RESP protocol version produced them."""

from __future__ import annotations

from typing import Any


def xread_streams(response: Any) -> list[tuple[bytes | str, list[Any]]]:
    """(stream key, entries) pairs from XREAD, whichever RESP shape redis-py returns."""
    if not response:
        return []
    if isinstance(response, dict):
        pairs = list(response.items())
    else:
        pairs = [(item[0], item[1]) for item in response]
    out: list[tuple[bytes | str, list[Any]]] = []
    for name, entries in pairs:
        # RESP3's legacy shape wraps the list of (id, fields) tuples in one more list.
        if entries and isinstance(entries[0], list):
            entries = entries[0]
        out.append((name, list(entries or [])))
    return out
