"""The condition language of `if:` (pipeline level and step level).

A condition is exactly one of:

    {path: payload.x, op: eq, value: 1}      an atomic predicate
    {all: [c, ...]}                          true when every member is true (stops at a false)
    {any: [c, ...]}                          true when some member is true (stops at a true)
    {not: c}                                 negation

Operators: exists, eq, neq, in, gt, gte, lt, lte, contains, startswith, endswith, regex.
Limits: nesting depth 3 (the top condition is depth 1) and 20 predicates (composites count).

Public surface:

    parse_condition(raw, *, at="if", roots=("payload", "context")) -> Condition
        Validate once at compile time; raises ConditionError (message starts with `at`).
    evaluate(condition, scope) -> bool
        Total on a valid condition: returns a bool or raises ConditionEvalError, nothing else.
    condition_paths(condition) -> tuple[str, ...]

Decisions (docs/pipelines.md lists them for users):

* Numbers compare by value: YAML `1` equals JSON `1.0` (the Go original said no). Booleans are
  never numbers. See `values.json_equal`.
* Strict typing stays for ordering and string operators: `gt` on a string, or on an absent path,
  is an evaluation error (the job evaluating it fails), not a silent false. Guard optional fields
  with `exists`. `eq`/`neq`/`in` on an absent path are false/true/false: absent equals nothing.
* A key present with JSON null `exists`.
* `contains`/`startswith`/`endswith` compare case-insensitively (both sides lower-cased).
* `regex` is a full, case-sensitive match (`(?i)` for case-insensitive) in Python `re` syntax,
  compiled at load. Patterns written for Go RE2 work unless they use RE2-only syntax.
* Stricter than the original at load: unknown keys, empty `all`/`any` lists, non-JSON values
  (YAML dates), a non-number value for `gt`/`gte`/`lt`/`lte`, and roots the caller does not
  offer (`config.*` in a pipeline `if`, where it could never resolve) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ductile.errors import ConditionError, ConditionEvalError
from ductile.router.values import (
    ABSENT,
    ROOTS,
    check_json_value,
    is_number,
    json_equal,
    resolve,
)

MAX_DEPTH = 3
MAX_PREDICATES = 20

OPERATORS = ("exists", "eq", "neq", "in", "gt", "gte", "lt", "lte", "contains", "startswith",
             "endswith", "regex")
_ORDERING = ("gt", "gte", "lt", "lte")
_STRING_OPS = ("contains", "startswith", "endswith", "regex")
_KEYS = ("path", "op", "value", "all", "any", "not")


@dataclass(frozen=True)
class Predicate:
    """An atomic test of one path. `pattern` is the compiled regex for `op: regex`."""

    path: str
    segments: tuple[str, ...]
    op: str
    value: Any = None
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True)
class AllOf:
    members: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    members: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    member: Condition


Condition = Predicate | AllOf | AnyOf | Not


def parse_condition(
    raw: Any, *, at: str = "if", roots: tuple[str, ...] = ("payload", "context")
) -> Condition:
    """Validate `raw` (decoded YAML) into a Condition, or raise ConditionError naming the spot."""
    counter = [0]
    return _parse(raw, at, 1, counter, roots)


def evaluate(condition: Condition, scope: Mapping[str, Any]) -> bool:
    """Evaluate against `scope` ({"payload": ..., "context": ..., "config": ...}); a root missing
    from the scope makes its paths absent."""
    if isinstance(condition, Predicate):
        return _test(condition, scope)
    if isinstance(condition, AllOf):
        return all(evaluate(member, scope) for member in condition.members)
    if isinstance(condition, AnyOf):
        return any(evaluate(member, scope) for member in condition.members)
    return not evaluate(condition.member, scope)


def condition_paths(condition: Condition) -> tuple[str, ...]:
    """Every path the condition reads, in document order."""
    if isinstance(condition, Predicate):
        return (condition.path,)
    if isinstance(condition, Not):
        return condition_paths(condition.member)
    return tuple(p for member in condition.members for p in condition_paths(member))


# --- parsing ------------------------------------------------------------------------------------


def _parse(raw: Any, at: str, depth: int, counter: list[int], roots: tuple[str, ...]) -> Condition:
    if depth > MAX_DEPTH:
        raise ConditionError(at, f"maximum nesting depth exceeded ({MAX_DEPTH})")
    counter[0] += 1
    if counter[0] > MAX_PREDICATES:
        raise ConditionError(at, f"maximum predicate count exceeded ({MAX_PREDICATES})")
    if not isinstance(raw, Mapping):
        raise ConditionError(at, "must be a mapping with path/op[/value], all, any or not")
    unknown = sorted(str(k) for k in raw if k not in _KEYS)
    if unknown:
        raise ConditionError(at, f"unknown key {unknown[0]!r} (allowed: {', '.join(_KEYS)})")
    atomic = any(k in raw for k in ("path", "op", "value"))
    shapes = [atomic, "all" in raw, "any" in raw, "not" in raw]
    if sum(shapes) != 1:
        raise ConditionError(at, "must define exactly one of atomic predicate, all, any, or not")
    if "not" in raw:
        return Not(_parse(raw["not"], f"{at}.not", depth + 1, counter, roots))
    for word, cls in (("all", AllOf), ("any", AnyOf)):
        if word in raw:
            items = raw[word]
            if not isinstance(items, list) or not items:
                raise ConditionError(f"{at}.{word}", "must be a non-empty list of conditions")
            members = tuple(_parse(item, f"{at}.{word}[{i}]", depth + 1, counter, roots)
                            for i, item in enumerate(items))
            return cls(members)
    return _parse_predicate(raw, at, roots)


def _parse_predicate(raw: Mapping[str, Any], at: str, roots: tuple[str, ...]) -> Predicate:
    segments = _parse_path(raw.get("path"), f"{at}.path", roots)
    op = raw.get("op")
    if op is None or op == "":
        raise ConditionError(f"{at}.op", "op is required")
    if not isinstance(op, str) or op not in OPERATORS:
        raise ConditionError(f"{at}.op", f"unsupported operator {op!r} "
                                         f"(use one of {', '.join(OPERATORS)})")
    has_value = "value" in raw
    value = raw.get("value")
    where = f"{at}.value"
    if op == "exists":
        if has_value:
            raise ConditionError(where, "value is not allowed for exists")
        return Predicate(".".join(segments), segments, op)
    if not has_value:
        raise ConditionError(where, f"value is required for operator {op!r}")
    problem = check_json_value(value, "value")
    if problem:
        raise ConditionError(where, problem)
    pattern = None
    if op == "in" and not isinstance(value, list):
        raise ConditionError(where, "value must be an array for in")
    if op in _ORDERING and not is_number(value):
        raise ConditionError(where, f"value must be a number for operator {op!r}")
    if op in _STRING_OPS and not isinstance(value, str):
        raise ConditionError(where, f"value must be a string for operator {op!r}")
    if op == "regex":
        pattern = _compile_regex(value, where)
    return Predicate(".".join(segments), segments, op, value, pattern)


def _parse_path(path: Any, at: str, roots: tuple[str, ...]) -> tuple[str, ...]:
    if path is None or path == "":
        raise ConditionError(at, "path is required")
    if not isinstance(path, str):
        raise ConditionError(at, "path must be a string such as payload.status")
    segments = tuple(path.split("."))
    offered = " or ".join(f"{r}.*" for r in roots)
    if len(segments) < 2:
        raise ConditionError(at, f"path must include one of {offered}")
    if any(seg == "" for seg in segments):
        raise ConditionError(at, "path contains empty segment")
    if segments[0] not in ROOTS:
        raise ConditionError(at, f"unsupported root {segments[0]!r} (use {offered})")
    if segments[0] not in roots:
        raise ConditionError(at, f"{segments[0]}.* is not available here (use {offered})")
    return segments


def _compile_regex(text: str, at: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        raise ConditionError(at, f"invalid regex pattern: {exc}") from None


# --- evaluation ---------------------------------------------------------------------------------


def _test(pred: Predicate, scope: Mapping[str, Any]) -> bool:
    found = resolve(scope, pred.segments)
    op = pred.op
    if op == "exists":
        return found is not ABSENT
    if op == "eq":
        return found is not ABSENT and json_equal(found, pred.value)
    if op == "neq":
        return found is ABSENT or not json_equal(found, pred.value)
    if op == "in":
        return found is not ABSENT and any(json_equal(found, item) for item in pred.value)
    if op in _ORDERING:
        return _order(pred, found)
    return _text(pred, found)


def _order(pred: Predicate, found: Any) -> bool:
    if not is_number(found):
        raise ConditionEvalError(
            f"if {pred.path}", f"operator {pred.op!r} requires numeric path value, "
                               f"got {_describe(found)}")
    if pred.op == "gt":
        return bool(found > pred.value)
    if pred.op == "gte":
        return bool(found >= pred.value)
    if pred.op == "lt":
        return bool(found < pred.value)
    return bool(found <= pred.value)


def _text(pred: Predicate, found: Any) -> bool:
    if not isinstance(found, str):
        raise ConditionEvalError(
            f"if {pred.path}", f"operator {pred.op!r} requires string path value, "
                               f"got {_describe(found)}")
    if pred.op == "regex":
        assert pred.pattern is not None  # set by _parse_predicate for every regex predicate
        return pred.pattern.fullmatch(found) is not None
    haystack, needle = found.lower(), str(pred.value).lower()
    if pred.op == "contains":
        return needle in haystack
    if pred.op == "startswith":
        return haystack.startswith(needle)
    return haystack.endswith(needle)


def _describe(value: Any) -> str:
    if value is ABSENT:
        return "an absent path (guard it with op: exists)"
    if value is None:
        return "null"
    return type(value).__name__
