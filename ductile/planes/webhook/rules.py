"""Trigger rules: whether a verified delivery should run at all.

Pure functions over the endpoint's compiled `match:` items (`ductile/config/webhook_match.py`),
a header lookup and the parsed JSON body. They never raise, whatever the body holds, and the
same input always gets the same verdict. The app calls `evaluate` only after the signature was
verified and the body accepted, so an unsigned request never learns what the rules want.

- The top-level items must all hold; `any:` needs one of its items, `all:` every one.
- A header rule reads the request header (the first, if sent twice); a payload rule reads the
  body by dot path: each part is an object key, or an array index (`commits.0.id`).
- `equals` and `in` compare with the JSON type: the number 1 is not the string "1", true is
  not 1. `regex` is searched (not anchored) in text only: a number or an object never matches.
- A missing header or path never holds.

A verdict that does not hold carries a `reason` naming the first item that failed and what it
saw, for the response (the sender signed the body, so it may see its own values) and the log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ductile.config.describe import describe
from ductile.config.webhook_match import MatchGroup, MatchItem, MatchRule, Scalar

#: An array index in a dot path: plain digits, short enough to stay a cheap int conversion.
_INDEX = re.compile(r"[0-9]{1,9}")

HeaderLookup = Callable[[str], str | None]


@dataclass(frozen=True)
class RuleVerdict:
    """Whether the rules hold; when not, `reason` says which rule failed and why."""

    ok: bool
    reason: str = ""


HOLDS = RuleVerdict(True)


def evaluate(items: Sequence[MatchItem], header: HeaderLookup, body: Any) -> RuleVerdict:
    """Every item must hold (no items: always holds). `header(name)` returns a request header
    or None; `body` is the parsed JSON body."""
    for item in items:
        verdict = _check(item, header, body)
        if not verdict.ok:
            return verdict
    return HOLDS


def lookup(value: Any, path: Sequence[str]) -> tuple[bool, Any]:
    """(True, the value at `path`) or (False, None) when some part is not there. Object keys
    are matched exactly; a part of digits indexes an array."""
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif (isinstance(value, list) and _INDEX.fullmatch(part) is not None
              and int(part) < len(value)):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def same(actual: Any, expected: Scalar) -> bool:
    """JSON equality of a scalar: numbers by value (1 == 1.0), booleans only with booleans,
    strings only with strings."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual is expected
    if isinstance(expected, (int, float)):
        return isinstance(actual, (int, float)) and actual == expected
    return isinstance(actual, str) and actual == expected


def _check(item: MatchItem, header: HeaderLookup, body: Any) -> RuleVerdict:
    if isinstance(item, MatchGroup):
        return _group(item, header, body)
    return _rule(item, header, body)


def _group(group: MatchGroup, header: HeaderLookup, body: Any) -> RuleVerdict:
    if group.mode == "all":
        return evaluate(group.items, header, body)
    reasons = []
    for item in group.items:
        verdict = _check(item, header, body)
        if verdict.ok:
            return HOLDS
        reasons.append(verdict.reason)
    return RuleVerdict(False, f"{group.where}: no item of any holds ({'; '.join(reasons)})")


def _rule(rule: MatchRule, header: HeaderLookup, body: Any) -> RuleVerdict:
    subject = f"{rule.source} {rule.name}"
    if rule.source == "header":
        actual: Any = header(rule.name)
        found = actual is not None
    else:
        found, actual = lookup(body, rule.path)
    if not found:
        return RuleVerdict(False, f"{rule.where}: {subject} is missing")
    if rule.pattern is not None:
        if not isinstance(actual, str):
            return RuleVerdict(False, f"{rule.where}: {subject} is {describe(actual)}, not "
                                      "text for regex")
        if rule.pattern.search(actual) is not None:
            return HOLDS
        return RuleVerdict(False, f"{rule.where}: {subject} is {describe(actual)}, which does "
                                  f"not match {describe(rule.pattern.pattern)}")
    if any(same(actual, value) for value in rule.values):
        return HOLDS
    wanted = (describe(rule.values[0]) if rule.test == "equals"
              else "one of " + ", ".join(describe(value) for value in rule.values))
    return RuleVerdict(False, f"{rule.where}: {subject} is {describe(actual)}, not {wanted}")
