"""Fuzz `ductile api`'s readers of command-line input: `-f key=value` fields and the route
path. Each value is typed as the Go CLI types it or kept as the string; a malformed field or
path is a click usage error (exit 2), never another exception."""

from __future__ import annotations

import click
from hypothesis import given
from hypothesis import strategies as st

from ductile.cli.api_client import check_path, field_value, parse_fields


@given(st.text(max_size=40))
def test_a_field_value_is_a_bool_an_int_or_the_same_string(text: str) -> None:
    value = field_value(text)
    if isinstance(value, bool):
        assert text in ("true", "false") and value is (text == "true")
    elif isinstance(value, int):
        assert int(text) == value and text.strip() == text
    else:
        assert value == text


@given(st.lists(st.text(max_size=20), max_size=6))
def test_fields_split_on_the_first_equals_sign_or_are_a_usage_error(fields: list[str]) -> None:
    try:
        pairs = parse_fields(tuple(fields))
    except click.UsageError as exc:
        assert "key=value" in exc.message
        assert any("=" not in f or f.startswith("=") for f in fields)
        return
    assert [f"{k}={v}" for k, v in pairs] == fields
    assert all(key and "=" not in key for key, _ in pairs)


@given(st.text(max_size=40))
def test_a_path_is_a_route_path_or_a_usage_error(path: str) -> None:
    try:
        assert check_path(path) == path
    except click.UsageError as exc:
        assert "must be a route path" in exc.message
        return
    assert path.startswith("/") and not path.startswith("//")
