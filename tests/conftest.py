"""Shared pytest options and fixtures for the unit and integration tests.

``--update-golden`` rewrites golden output files (``tests/golden/**``) from
what the code produces now, instead of comparing with them.
Review the diff of the rewritten files before committing them.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden output files under tests/golden instead of comparing with them",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to rewrite golden files (``--update-golden``)."""
    return bool(request.config.getoption("--update-golden"))
