"""Two local environments on one machine get disjoint loopback ranges (e2e/loopback.py)."""

from __future__ import annotations

import socket

import pytest

from e2e import loopback
from e2e.processes import HarnessError


def test_concurrent_claims_are_disjoint_and_released_ranges_are_reused() -> None:
    first = loopback.claim(3)
    second = loopback.claim(3)
    try:
        ours = {first.octet(i) for i in (1, 2, 3)}
        theirs = {second.octet(i) for i in (1, 2, 3)}
        assert len(ours) == 3 and len(theirs) == 3
        assert not ours & theirs
        first.release()
        again = loopback.claim(3)
        assert {again.octet(i) for i in (1, 2, 3)} == ours
        again.release()
    finally:
        first.release()
        second.release()


def test_a_range_held_by_someone_else_is_skipped() -> None:
    probe = loopback.claim(1)
    taken = probe.octet(1)
    probe.release()
    # Someone else binds the claim port on the first free octet: the claim goes past it.
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind((f"127.{taken}.255.254", loopback.CLAIM_PORT))
    try:
        claim = loopback.claim(2)
        try:
            assert taken not in {claim.octet(1), claim.octet(2)}
            assert claim.octet(2) == claim.octet(1) + 1
        finally:
            claim.release()
    finally:
        blocker.close()


def test_an_index_outside_the_claim_is_refused() -> None:
    claim = loopback.claim(2)
    try:
        with pytest.raises(HarnessError, match="outside the claimed 2"):
            claim.octet(3)
    finally:
        claim.release()
