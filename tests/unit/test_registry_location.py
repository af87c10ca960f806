"""The registry URL comes from the environment, never argv (federation.registry.location)."""

from __future__ import annotations

import pytest

from federation.errors import InvalidInputError
from federation.registry.location import REGISTRY_URL_ENV, registry_url


def test_the_url_is_read_from_the_environment() -> None:
    url = "redis://agent-a:secret@127.0.0.1:6379/0"
    assert registry_url({REGISTRY_URL_ENV: f" {url}\n"}) == url
    assert registry_url({REGISTRY_URL_ENV: "rediss://hub:x@redis.example:6380/0"})


def test_a_missing_url_says_where_it_belongs() -> None:
    with pytest.raises(InvalidInputError, match=f"{REGISTRY_URL_ENV} is not set.*redis://"):
        registry_url({})


def test_a_url_of_another_scheme_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="must be a redis://"):
        registry_url({REGISTRY_URL_ENV: "http://127.0.0.1:6379"})
    with pytest.raises(InvalidInputError, match="one without a scheme"):
        registry_url({REGISTRY_URL_ENV: "127.0.0.1:6379"})


def test_neither_program_takes_the_url_as_a_flag() -> None:
    from agents.main import parse_args as agent_args
    from federation.cli.hub import parse_args as hub_args

    for parse in (agent_args, hub_args):
        with pytest.raises(SystemExit):
            parse(["--registry", "redis://agent-a:secret@127.0.0.1:6379/0"])
