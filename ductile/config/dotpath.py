"""Dot paths into a config document: `service.max_workers`, `api.auth.tokens[0].scopes`.

One grammar for `config get`, `config set` and `config show PATH`, so an operator writes a key
the same way everywhere, and the way error messages print it:

- a path is one or more names separated by `.`; each name is a non-empty run of characters
  other than `.`, `[`, `]` (plugin names such as `sys_exec` or `my-plugin` need no quoting);
- `[N]` after a name (or after another index) selects entry N (decimal, from 0) of a list.

Nothing else is accepted: no quoting, no wildcards, no negative indices. A name that must hold
a `.` (none of ductile's keys do) cannot be addressed; the error says so rather than guessing.
Lookups fail with `ConfigPathError` naming the first segment that does not exist and what
exists there instead, because "key not found" alone sends the operator back to the YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ductile.config.describe import describe
from ductile.errors import ConfigPathError

Segment = str | int
Path = tuple[Segment, ...]

_NAME = re.compile(r"[^.\[\]]+")
_INDEX = re.compile(r"\[(0|[1-9][0-9]*)\]")
_SHOWN_KEYS = 40


def parse_path(text: str) -> Path:
    """The segments of `text` (names are str, list indices int), or ConfigPathError."""
    segments: list[Segment] = []
    pos = 0
    while True:
        name = _NAME.match(text, pos)
        if name is None:
            raise _syntax(text, pos, "a key name")
        segments.append(name.group())
        pos = name.end()
        while (index := _INDEX.match(text, pos)) is not None:
            segments.append(int(index.group(1)))
            pos = index.end()
        if pos == len(text):
            return tuple(segments)
        if text[pos] != ".":
            raise _syntax(text, pos, "`.` or `[N]`")
        pos += 1


def format_path(path: Sequence[Segment]) -> str:
    """The text `parse_path` reads back as `path` (names joined by `.`, indices as `[N]`)."""
    out = ""
    for segment in path:
        if isinstance(segment, int):
            out += f"[{segment}]"
        else:
            out += f".{segment}" if out else segment
    return out


def lookup(doc: Any, path: Sequence[Segment]) -> Any:
    """The value at `path`, or ConfigPathError naming the first missing segment and what is
    there instead (the keys of that map, or the length of that list)."""
    value = doc
    for depth, segment in enumerate(path):
        value = _step(value, path, depth, segment)
    return value


def holds(doc: Any, path: Sequence[Segment]) -> bool:
    """Whether `lookup(doc, path)` would succeed."""
    try:
        lookup(doc, path)
    except ConfigPathError:
        return False
    return True


def _step(value: Any, path: Sequence[Segment], depth: int, segment: Segment) -> Any:
    where = format_path(path[:depth]) or "the top level"
    wanted = format_path(path[: depth + 1])
    if isinstance(segment, int):
        if not isinstance(value, list):
            raise _missing(path, f"{wanted}: {where} is {_kind(value)}, not a list")
        if segment >= len(value):
            count = f"{len(value)} entr{'y' if len(value) == 1 else 'ies'}"
            raise _missing(path, f"{wanted}: no entry [{segment}] in {where} ({count})")
        return value[segment]
    if not isinstance(value, Mapping):
        raise _missing(path, f"{wanted}: {where} is {_kind(value)}, it has no key {segment!r}")
    if segment not in value:
        raise _missing(path, f"{wanted}: no key {segment!r} in {where}; "
                             f"available: {_available(value)}")
    return value[segment]


def _available(value: Mapping[Any, Any]) -> str:
    keys = sorted(str(key) for key in value)
    if not keys:
        return "none (it is empty)"
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown if len(keys) <= _SHOWN_KEYS else f"{shown}, ... ({len(keys)} keys)"


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a map"
    return f"the value {describe(value)}"


def _missing(path: Sequence[Segment], message: str) -> ConfigPathError:
    return ConfigPathError(message, key=format_path(path))


def _syntax(text: str, pos: int, expected: str) -> ConfigPathError:
    found = repr(text[pos]) if pos < len(text) else "the end"
    return ConfigPathError(
        f"invalid key path {text!r}: expected {expected} at position {pos + 1}, found {found} "
        "(write keys as service.max_workers or api.auth.tokens[0].scopes)",
        key=text,
    )
