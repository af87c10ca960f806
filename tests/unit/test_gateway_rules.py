"""Focused tests of the first stage's rules: hostnames, selectors, durations, regexes."""

from __future__ import annotations

import pytest

from federation.registry.gatewayapi import LabelSelector, LabelSelectorRequirement
from federation.translate.gateway import selects
from federation.translate.gateway.filters import FilterError, duration_ms
from federation.translate.gateway.hostnames import meet, served
from federation.translate.gateway.matches import MatchError, check_regex


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [
        (None, "a.example.com", "a.example.com"),
        ("a.example.com", "a.example.com", "a.example.com"),
        ("a.example.com", "b.example.com", None),
        ("*.example.com", "a.example.com", "a.example.com"),
        ("*.example.com", "a.b.example.com", "a.b.example.com"),
        ("*.example.com", "example.com", None),
        ("a.example.com", "*.example.com", "a.example.com"),
        ("*.example.com", "*.a.example.com", "*.a.example.com"),
        ("example.com", "*.example.com", None),
    ],
)
def test_hostnames_meet(listener: str | None, route: str, expected: str | None) -> None:
    assert meet(listener, route) == expected


def test_served_hostnames() -> None:
    assert served(None, ()) == ("*",)
    assert served("a.example.com", ()) == ("a.example.com",)
    assert served("*.example.com", ("x.example.com", "y.other", "x.example.com")) == (
        "x.example.com",
    )


def test_label_selectors() -> None:
    selector = LabelSelector(
        match_labels=(("team", "a"),),
        match_expressions=(
            LabelSelectorRequirement("env", "In", ("prod", "qa")),
            LabelSelectorRequirement("legacy", "DoesNotExist"),
        ),
    )
    assert selects(selector, {"team": "a", "env": "prod"})
    assert not selects(selector, {"team": "a", "env": "dev"})
    assert not selects(selector, {"team": "a", "env": "prod", "legacy": "1"})
    assert not selects(selector, {"env": "prod"})
    assert selects(LabelSelector(), {})
    odd = LabelSelector(match_expressions=(LabelSelectorRequirement("x", "Bogus"),))
    assert not selects(odd, {"x": "1"})  # an operator we do not know selects nothing


@pytest.mark.parametrize(
    ("value", "ms"),
    [("10s", 10_000), ("1m30s", 90_000), ("250ms", 250), ("1h", 3_600_000), ("0s", 0)],
)
def test_durations(value: str, ms: int) -> None:
    assert duration_ms(value, "t") == ms


@pytest.mark.parametrize("value", ["10", "10 s", "1.5s", "-1s", "1d", "123456s", ""])
def test_bad_durations(value: str) -> None:
    with pytest.raises(FilterError):
        duration_ms(value, "t")


def test_regexes_envoy_cannot_run_are_refused() -> None:
    for ok in ("/api/.*", r"\++", "[a-z]+/v[0-9]", "(?P<n>x)"):
        check_regex(ok, "x")
    for bad in ("(?=a)", "(?!a)", "(?<=a)", "(?<!a)", r"(a)\1", "a++", "(?>a)", "["):
        with pytest.raises(MatchError):
            check_regex(bad, "x")
