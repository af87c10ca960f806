"""Kubernetes' metadata rules (federation.kube_names), as the apiserver applies them."""

from __future__ import annotations

import pytest

from federation.kube_names import (
    MAX_ANNOTATIONS_BYTES,
    annotation_errors,
    label_errors,
    label_value_errors,
    qualified_name_errors,
)


@pytest.mark.parametrize(
    "key", ["app", "a.b-c_d", "example.com/tier", "x" * 63, "k8s.io/" + "n" * 63, "A9"]
)
def test_valid_keys(key: str) -> None:
    assert qualified_name_errors(key) == []


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "must not be empty"),
        ("example.com/", "must not be empty"),
        ("-app", "start"),
        ("app!", "alphanumeric"),
        ("x" * 64, "at most 63"),
        ("Example.com/tier", "prefix 'Example.com'"),
        ("a/b/c", "prefix 'a/b'"),
    ],
)
def test_invalid_keys_say_why(key: str, fragment: str) -> None:
    assert any(fragment in e for e in qualified_name_errors(key)), qualified_name_errors(key)


@pytest.mark.parametrize("value", ["", "v", "v1.2_3-4", "x" * 63])
def test_valid_label_values(value: str) -> None:
    assert label_value_errors(value) == []


def test_invalid_label_values_say_why() -> None:
    assert any("at most 63" in e for e in label_value_errors("x" * 64))
    assert label_value_errors("a b") and label_value_errors("-a")


def test_errors_name_their_key() -> None:
    errors = label_errors({"ok": "fine", "bad key": "v", "k": "y" * 70})
    assert [e.split(":")[0] for e in errors] == ["key 'bad key'", "value of 'k'"]


def test_annotations_take_any_value_but_not_any_key_or_size() -> None:
    assert annotation_errors({"note": "any text, spaces & all: " + "z" * 1000}) == []
    assert annotation_errors({"bad key": "v"})
    too_big = {"big": "x" * MAX_ANNOTATIONS_BYTES}
    assert any("bytes" in e for e in annotation_errors(too_big))
