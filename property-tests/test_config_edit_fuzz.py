"""Fuzz the dot-path parser and the one-line YAML editor behind `ductile config set`.

The editor's contract: for any document, key path and value it either returns text that
parses to the same document with exactly that value set, changing only the value's line (or
inserting the key's lines), or it raises ConfigEditRefused. Never another exception, never a
corrupted file.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ductile.config.dotpath import format_path, lookup, parse_path
from ductile.config.durations import DURATION_PATTERN, parse_duration
from ductile.config.yamledit import render_value, same_value, set_value
from ductile.errors import ConfigEditRefused, ConfigPathError, DurationError
from ductile.yamldoc import load_yaml

FUZZ = settings(max_examples=300, deadline=None)

# ------------------------------------------------------------------------------ dot paths

names = st.text(st.characters(blacklist_characters=".[]", blacklist_categories=("Cs",)),
                min_size=1, max_size=8)
segments = st.lists(st.one_of(names, st.integers(0, 10**6)), min_size=1, max_size=6).filter(
    lambda path: isinstance(path[0], str))


@FUZZ
@given(segments)
def test_format_then_parse_is_the_identity(path: list[str | int]) -> None:
    assert parse_path(format_path(path)) == tuple(path)


@FUZZ
@given(st.one_of(st.text(max_size=30), st.text(alphabet="ab.[]0123 ", max_size=20)))
def test_parse_path_raises_only_config_path_error_and_is_canonical(text: str) -> None:
    try:
        path = parse_path(text)
    except ConfigPathError:
        return
    assert format_path(path) == text


documents = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from("abc"), inner, max_size=3)),
    max_leaves=10)


@FUZZ
@given(documents, segments)
def test_lookup_finds_the_value_or_names_the_missing_segment(doc: Any, path: list[Any]) -> None:
    try:
        lookup(doc, path)
    except ConfigPathError as exc:
        assert exc.key == format_path(path)
        assert str(exc).startswith(format_path(path[:1]))


# ------------------------------------------------------------------------------ durations


@FUZZ
@given(st.one_of(st.text(alphabet="0123456789.+-nsuµμmhdwx", max_size=12), st.text(max_size=8)))
def test_the_schema_duration_pattern_accepts_only_what_parse_duration_accepts(text: str) -> None:
    if re.fullmatch(DURATION_PATTERN, text) is None:
        return
    try:
        parse_duration(text)
    except DurationError:
        raise AssertionError(f"the pattern accepts {text!r}, parse_duration refuses it")


# ------------------------------------------------------------------------------ the editor

# Text without `$` (the `${VAR}` masking has its own example tests) and without surrogates.
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="$"),
               max_size=12)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20),
                    st.floats(allow_nan=False), text,
                    st.sampled_from(["yes", "off", "0o17", "12:30", "~", "null", "1.5", "-",
                                     "a: b", "#x", "x #y", "[a]", "{a: 1}", "&a", "*a", "!x",
                                     "<<", "'q'", '"q"', "30s", " ", "", "a\nb", "\x85"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(text, inner, max_size=3)), max_leaves=6)
keys = st.one_of(st.sampled_from(["service", "name", "plugins", "echo", "retry", "x"]), text)
config_docs = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=3),
                            st.dictionaries(keys, inner, min_size=1, max_size=4)),
    max_leaves=12,
).map(lambda doc: doc if isinstance(doc, dict) else {"root": doc})


def _dump(doc: dict[str, Any], flow: bool | None, comments: bool) -> str:
    out = yaml.safe_dump(doc, default_flow_style=flow, sort_keys=False, allow_unicode=True,
                         width=10**6)
    if comments:
        out = "# leading comment\n" + "".join(
            f"{line}  # c{index}\n" if line.strip() else "\n"
            for index, line in enumerate(out.splitlines()))
    return out


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            if isinstance(key, str):
                found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _paths(value, (*prefix, index))
    return found


def _with(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(doc)
        items[head] = _with(items[head], rest, value)
        return items
    result = dict(doc) if isinstance(doc, dict) else {}
    result[head] = _with(result.get(head), rest, value)
    return result


@FUZZ
@given(config_docs, st.sampled_from([False, None]), st.booleans(), st.data())
def test_set_value_edits_exactly_one_value_or_refuses(doc: dict[str, Any], flow: bool | None,
                                                      comments: bool, data: st.DataObject
                                                      ) -> None:
    original = _dump(doc, flow, comments)
    try:
        before = load_yaml(original)
    except Exception:  # noqa: BLE001 - PyYAML dumped something our loader refuses
        assume(False)
    assume(isinstance(before, dict))
    existing = _paths(before)
    new_key = data.draw(st.lists(keys, min_size=1, max_size=2), label="new keys")
    base = data.draw(st.sampled_from([(), *existing]), label="base")
    path = data.draw(st.sampled_from([base, (*base, *new_key)]) if base else
                     st.just(tuple(new_key)), label="path")
    value = data.draw(values, label="value")
    try:
        edited = set_value(original, path, value)
    except ConfigEditRefused:
        return
    after = load_yaml(edited)
    assert same_value(after, _with(before, path, value)), (original, edited)
    old_lines, new_lines = original.splitlines(), edited.splitlines()
    if len(new_lines) == len(old_lines):
        changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
        assert len(changed) <= 1, (original, edited)
    else:  # lines were inserted: every old line is still there, in order
        assert len(new_lines) > len(old_lines)
        index = next(i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b) \
            if any(a != b for a, b in zip(old_lines, new_lines)) else len(old_lines)
        inserted = len(new_lines) - len(old_lines)
        assert new_lines[:index] == old_lines[:index]
        assert new_lines[index + inserted:] == old_lines[index:], (original, edited)


@FUZZ
@given(values)
def test_render_value_reads_back_as_the_value_or_refuses(value: Any) -> None:
    try:
        rendered = render_value(value)
    except ConfigEditRefused:
        return
    assert "\n" not in rendered and "\r" not in rendered
    assert same_value(load_yaml(f"k: {rendered}")["k"], value)
