"""JSON values as the router sees them: dotted paths, lookup, equality, rendering.

Shared by conditions, `with:` templates and baggage so that all three agree on what a path is
and when two values are equal.

Equality rule (a deliberate difference from the Go original, which compared decoded types and so
never matched a YAML `1` against a JSON `1.0`): numbers compare by numeric value, whatever their
int/float spelling, so `value: 1` in a pipeline equals `1`, `1.0` and `1e0` in a payload. Booleans
are not numbers: `true` never equals `1`. Strings, lists and mappings compare structurally; list
order matters; mapping key order does not.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

# One path segment: what a YAML/JSON key may be addressed by. Anything but an empty string, so
# payload keys with dashes or spaces stay reachable; the dot is the only separator.
ROOTS = ("payload", "context", "config")

_MISSING = object()


class Absent:
    """Marker type for a path that does not resolve (a missing key or a non-mapping on the way)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = Absent()


def split_path(path: str) -> tuple[str, ...]:
    """`payload.a.b` -> ('payload', 'a', 'b'). Validation is the caller's (messages differ)."""
    return tuple(path.split("."))


def resolve(scope: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """Walk nested mappings; ABSENT when a key is missing or a non-mapping is in the way.

    A key present with JSON null resolves to None (present), not ABSENT: `exists` is true for it.
    Lists are not indexed: `payload.items.0` is absent, as in the original.
    """
    current: Any = scope
    for segment in path:
        if not isinstance(current, Mapping):
            return ABSENT
        current = current.get(segment, _MISSING)
        if current is _MISSING:
            return ABSENT
    return current


def is_number(value: Any) -> bool:
    """int or float, but not bool (JSON true is not 1)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Deep equality with numbers compared by value (see module docstring)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return bool(a == b)
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            return False
        return all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return False


def check_json_value(value: Any, where: str) -> str | None:
    """Why `value` is not a plain JSON value (None when it is). YAML can produce dates, sets and
    non-string keys; a condition or root baggage holding one could never equal a payload value,
    so we refuse it where it is written rather than let it silently never match."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            return f"{where} must be a finite number"
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            problem = check_json_value(item, f"{where}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has a non-string key {key!r}"
            problem = check_json_value(item, f"{where}.{key}")
            if problem:
                return problem
        return None
    return (f"{where} must be a JSON value (string, number, boolean, null, list or mapping), "
            f"not {type(value).__name__}; quote dates and times")


def render(value: Any) -> str:
    """Text of a value inside a mixed template (`"id-{payload.n}"`).

    Follows the Go original where it is sensible: null renders empty, booleans `true`/`false`,
    whole floats without `.0` (Go decodes every JSON number as float64 and prints 3, not 3.0).
    Mappings and lists render as compact JSON (Go printed `map[a:1]`, which nothing can parse).
    """
    if value is None or value is ABSENT:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def json_size(value: Any) -> int:
    """Bytes of the compact JSON encoding (the form stored in `event_context.accumulated_json`)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
               .encode("utf-8"))


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_identifier_path(path: str) -> bool:
    """Dotted segments of letters, digits and `_`, none starting with a digit (baggage keys)."""
    return bool(path) and all(_IDENT.match(seg) for seg in path.split("."))
