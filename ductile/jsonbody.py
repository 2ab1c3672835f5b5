"""Strict JSON for request bodies of every HTTP plane (API, management socket, webhooks).

Python's `json.loads` accepts more than the rest of the gateway can carry: a lone surrogate
escape (`"\\ud800"`) decodes to a string that cannot be encoded as UTF-8 again, `1e999` decodes
to infinity that the store cannot write, a 5,000-digit integer hits the interpreter's
int-conversion limit, and a value nested 900 levels deep decodes fine but overflows the stack of
whatever walks it next (deep copies, encoders, equality). `loads` refuses all of that at the door:

* the body is UTF-8 (no byte-order mark), one JSON document;
* objects and arrays nest at most `MAX_DEPTH` levels (the body's own object or array is level
  1), checked on the raw bytes *before* parsing, without recursion;
* every number is finite and within the range of a double (|n| <= 1.7976931348623157e308):
  `NaN`, `Infinity`, `1e999`, `-1e999` and integers of more than 309 digits are refused;
* every string and key is valid Unicode: no lone surrogate (a surrogate pair such as
  `"\\ud83d\\ude00"` is one character and fine).

Pure and fuzzed (property-tests/test_api_bodies.py, test_webhook_parsers.py): whatever bytes
arrive, the only exception is `JsonInputError`, whose message names the offending field by its
path (`payload.items[2].n`) and says what is allowed.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from ductile.errors import InputError

#: Levels of objects/arrays a body may nest, its own top-level object or array included.
MAX_DEPTH = 64
#: The largest magnitude a number may have: the largest finite double.
MAX_NUMBER = sys.float_info.max
_MAX_INT = int(MAX_NUMBER)
_MAX_INT_DIGITS = len(str(_MAX_INT))

# A JSON string (escapes included), matched without backtracking, to blank strings out of the
# depth scan: brackets inside strings do not nest anything.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
# A `\uD800`-`\uDFFF` escape: the only way a surrogate can enter (raw UTF-8 cannot hold one).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_MAX_SHOWN = 40

Path = tuple[str | int, ...]


class JsonInputError(InputError):
    """A body refused with 400. `path` locates the offending value (None: the body as a whole,
    e.g. a syntax error or too deep); `reason` says what is wrong and what is allowed.

    `str()` is the full message; `message(show_values=False)` leaves the offending text out
    (the vault routes must never echo any part of a value)."""

    def __init__(self, reason: str, path: Path | None = None, *, value_free: str | None = None,
                 key: bool = False) -> None:
        self.reason = reason
        self.path = path
        self.key = key
        self._value_free = value_free if value_free is not None else reason
        super().__init__(self.message())

    def message(self, *, show_values: bool = True) -> str:
        reason = self.reason if show_values else self._value_free
        if self.path is None:
            return reason
        subject = f"field {format_path(self.path)}" if self.path else "the body"
        if self.key:
            return f"{subject} has a key that {reason}"
        return f"{subject} {reason}"


class JsonSyntaxError(JsonInputError):
    """The body is not one JSON document at all (the message is the decoder's, positional)."""


def loads(data: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The one JSON document in `data`, or JsonInputError (see the module docstring)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonInputError(f"the body is not UTF-8 (invalid byte at offset {exc.start}); "
                             "JSON must be sent as UTF-8") from None
    depth = nesting_depth(data) if data.count(b"[") + data.count(b"{") > max_depth else 0
    if depth > max_depth:
        raise JsonInputError(f"the body nests objects/arrays {depth} levels deep; at most "
                             f"{max_depth} levels are allowed (the body's own object or array "
                             "counts as one)")
    flagged: list[_Refused] = []
    try:
        value = json.loads(text, parse_float=_float_checker(flagged),
                           parse_int=_int_checker(flagged),
                           parse_constant=_constant_checker(flagged))
    except (ValueError, RecursionError) as exc:
        raise JsonSyntaxError(str(exc)) from None
    if flagged or _SURROGATE_ESCAPE.search(data):
        _refuse_first_problem(value)
    if flagged:
        # Only a duplicate key can hide a flagged number from the walk. Refuse it anyway: the
        # raw text (a webhook body is stored as is) must decode anywhere, and a plain decoder
        # chokes on an integer past the int-conversion limit before the duplicate replaces it.
        raise JsonInputError(f"the body {flagged[0].reason} (under a key that appears twice)",
                             value_free="the body " + _value_free_number(flagged[0]))
    return value


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of objects/arrays in JSON text (iterative, linear; brackets inside
    strings do not count). Garbage gives some number; the parser refuses it anyway."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    if not brackets:
        return 0
    return max(0, max(accumulate(memoryview(brackets.translate(_STEP)).cast("b"))))


def format_path(path: Path) -> str:
    """`payload.items[2]["odd key"]`: plain keys dotted, others quoted (ASCII-safe), indexes
    in brackets, long keys shortened."""
    out: list[str] = []
    for segment in path:
        if isinstance(segment, int):
            out.append(f"[{segment}]")
        elif _PLAIN_KEY.match(segment) and len(segment) <= _MAX_SHOWN:
            out.append(("." if out else "") + segment)
        else:
            out.append(f"[{json.dumps(_shorten(segment))}]")
    return "".join(out)


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, with its article (`an array`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# --- the refusals found after parsing ---------------------------------------------------------


class _Refused:
    """Stands in (inside the decoded value) for a number literal we refuse."""

    __slots__ = ("literal", "reason")

    def __init__(self, literal: str, reason: str) -> None:
        self.literal = literal
        self.reason = reason


def _float_checker(flagged: list[_Refused]) -> Any:
    def parse_float(literal: str) -> float | _Refused:
        number = float(literal)
        if math.isinf(number):
            return _flag(flagged, literal)
        return number

    return parse_float


def _int_checker(flagged: list[_Refused]) -> Any:
    def parse_int(literal: str) -> int | _Refused:
        if len(literal.lstrip("-")) > _MAX_INT_DIGITS:
            return _flag(flagged, literal)
        number = int(literal)
        if abs(number) > _MAX_INT:
            return _flag(flagged, literal)
        return number

    return parse_int


def _constant_checker(flagged: list[_Refused]) -> Any:
    def parse_constant(name: str) -> _Refused:
        refused = _Refused(name, f"holds {name}, which is not JSON; numbers must be finite")
        flagged.append(refused)
        return refused

    return parse_constant


def _flag(flagged: list[_Refused], literal: str) -> _Refused:
    refused = _Refused(literal, f"holds the out-of-range number {_shorten(literal)}; numbers "
                                f"must be finite, at most {MAX_NUMBER!r} in magnitude")
    flagged.append(refused)
    return refused


def _refuse_first_problem(value: Any) -> None:
    """Raise for the first refused number or lone surrogate, in document order."""
    for path, item, is_key in _walk(value):
        if isinstance(item, _Refused):
            raise JsonInputError(item.reason, path, value_free=_value_free_number(item))
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found is not None:
                raise JsonInputError(
                    f"contains a lone surrogate \\u{ord(found.group()):04x}, which is not valid "
                    "Unicode", path, key=is_key,
                    value_free="contains a lone surrogate, which is not valid Unicode")


def _walk(value: Any) -> Iterator[tuple[Path, Any, bool]]:
    """Every value and key (flagged True) under `value` with its path, in document order,
    without recursion. A key's path is the path of the object holding it."""
    stack: list[tuple[Path, Any, bool]] = [((), value, False)]
    while stack:
        path, item, is_key = stack.pop()
        yield path, item, is_key
        if is_key:
            continue
        if isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                stack.append(((*path, key), child, False))
                stack.append((path, key, True))
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                stack.append(((*path, index), item[index], False))


def _value_free_number(item: _Refused) -> str:
    if item.literal in ("NaN", "Infinity", "-Infinity"):
        return "holds NaN or Infinity, which is not JSON; numbers must be finite"
    return f"holds an out-of-range number; numbers must be finite, at most {MAX_NUMBER!r} " \
           "in magnitude"


def _shorten(text: str) -> str:
    if len(text) <= _MAX_SHOWN:
        return text
    return f"{text[:_MAX_SHOWN]}... ({len(text)} characters)"
