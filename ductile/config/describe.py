"""How config errors show a value: as the operator would recognise it in their YAML."""

from __future__ import annotations

from typing import Any

MAX_SHOWN = 60


def describe(value: Any) -> str:
    """`"text"` (quoted, shortened), `null`, `true`, `12`, or the kind (`a list`, `a map`)."""
    if isinstance(value, str):
        text = value if len(value) <= MAX_SHOWN else value[:MAX_SHOWN - 3] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 3] + "..."
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return f"a {type(value).__name__}"
