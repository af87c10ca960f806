"""Cluster id validation (federation.identity)."""

import pytest

from federation.errors import InvalidInputError
from federation.identity import parse_cluster_id, subdomain_errors


@pytest.mark.parametrize("value", ["a", "cluster-1", "eu-west.prod", "0", "a" * 61 + ".b"])
def test_valid_ids(value: str) -> None:
    assert parse_cluster_id(value) == value
    assert subdomain_errors(value) == []


def test_a_subdomain_longer_than_a_label_value_is_not_a_cluster_id() -> None:
    """Imported EndpointSlices carry the id as a label value: at most 63 characters."""
    value = "a" * 63 + ".b"
    assert subdomain_errors(value) == []
    with pytest.raises(InvalidInputError, match=r"at most 63 characters \(has 65\): it is used as"):
        parse_cluster_id(value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "must not be empty"),
        ("A", "lower case"),
        ("-a", "start and end"),
        ("a-", "start and end"),
        ("a..b", "label ''"),
        ("a_b", "lower case"),
        ("x" * 64, "longer than 63"),
        (".".join(["x" * 60] * 5), "at most 253"),
    ],
)
def test_invalid_ids_say_why(value: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_cluster_id(value)
    assert fragment in str(err.value)
    assert "cluster.clusterset.k8s.io" in str(err.value)
