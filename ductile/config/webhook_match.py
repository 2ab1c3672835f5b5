"""Decode a webhook endpoint's trigger rules: `match:` and `refuse_status:`.

    match:
      - header: X-GitHub-Event        # a request header ...
        equals: push
      - payload: repository.full_name  # ... or a value of the JSON body, by dot path
        in: [me/site, me/docs]
      - any:                           # a group: one of these must hold (`all:` for every one)
          - payload: ref
            regex: ^refs/heads/(main|release/.*)$
          - header: X-Force-Run
            equals: "yes"
    refuse_status: 202

Every item of `match` must hold. A rule names one source (`header` or `payload`) and one test
(`equals`, `in` or `regex`); a group (`any` or `all`) holds a non-empty list of items and may
nest, at most MAX_GROUP_DEPTH groups deep. Regular expressions are compiled here, so a bad one
refuses the config naming its key instead of failing a delivery. Evaluation lives in the webhook
plane (`ductile/planes/webhook/rules.py`); this module only turns YAML into the typed rules.

Values compare with their JSON type (`equals: 1` matches the number 1, not the string "1").
Header values are text, so a header rule takes strings only. As everywhere in the loader, a key
set to null counts as absent. Errors are ConfigErrors naming the file and the dotted key;
unknown keys are warnings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Union

from ductile.config.describe import describe
from ductile.config.reader import Reader

RULE_KEYS = frozenset({"header", "payload", "equals", "in", "regex", "any", "all"})
SOURCES = ("header", "payload")
TESTS = ("equals", "in", "regex")
GROUPS = ("any", "all")
#: Groups inside groups: enough for (a and b) or (c and d), small enough to read at a glance.
MAX_GROUP_DEPTH = 4

DEFAULT_REFUSE_STATUS = 202
#: 2xx tells a sender the delivery was handled (GitHub and Stripe stop retrying); a 4xx marks it
#: refused in the sender's delivery log. A 5xx would only make the sender retry the same body.
REFUSE_STATUSES = (200, 202, *range(400, 500))

# RFC 9110 token characters: what a header name may contain.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: A value a rule compares with: what a JSON scalar other than null decodes to.
Scalar = Union[str, bool, int, float]


@dataclass(frozen=True)
class MatchRule:
    """One test of a delivery: a header (`source == "header"`, `name` the header) or the body
    value at a dot path (`source == "payload"`, `name` the path as written, `path` its parts),
    checked with `test`: `equals` (`values` holds the one value), `in` (`values` holds the
    choices) or `regex` (`pattern`, searched, not anchored). `where` names the rule in refusal
    reasons (`match[1]`, `match[2].any[0]`)."""

    where: str
    source: str
    name: str
    test: str
    path: tuple[str, ...] = ()
    values: tuple[Scalar, ...] = ()
    pattern: re.Pattern[str] | None = None


@dataclass(frozen=True)
class MatchGroup:
    """`any:` (one item must hold) or `all:` (every item must hold), as `mode`."""

    where: str
    mode: str
    items: tuple[MatchItem, ...]


MatchItem = Union[MatchRule, MatchGroup]


def decode_match(r: Reader, value: Any, key: str) -> tuple[MatchItem, ...]:
    """The rules at `key` (`webhooks.endpoints[0].match`); () when absent or null."""
    items = r.sequence(value, key)
    return tuple(_item(r, item, f"{key}[{i}]", f"match[{i}]", depth=0)
                 for i, item in enumerate(items))


def decode_refuse_status(r: Reader, value: Any, key: str, label: str) -> int:
    """`refuse_status`: the HTTP status of a delivery the rules turn away."""
    status = r.integer(value, key)
    if status is None:
        return DEFAULT_REFUSE_STATUS
    if status not in REFUSE_STATUSES:
        raise r.error(key, f"{label}: refuse_status {status} is not allowed; use 202 (the "
                           "default: the sender counts the delivery as handled), 200, or a 4xx "
                           "such as 403. A 5xx would make the sender retry the same delivery")
    return status


def _item(r: Reader, value: Any, key: str, where: str, *, depth: int) -> MatchItem:
    if not isinstance(value, dict):
        raise r.fail(key, "a map such as {header: X-GitHub-Event, equals: push}", value)
    r.unknown_keys(value, key, RULE_KEYS)
    groups = _present(value, GROUPS)
    sources = _present(value, SOURCES)
    tests = _present(value, TESTS)
    if groups:
        if len(groups) > 1 or sources or tests:
            raise r.error(key, "a match rule is either a test (header or payload, with equals, "
                               "in or regex) or a group (any or all), not both; split it into "
                               "separate items")
        return _group(r, value, key, where, groups[0], depth)
    if len(sources) != 1:
        raise r.error(key, "a match rule needs exactly one of header: NAME or payload: "
                           "DOT.PATH (for example payload: repository.full_name)"
                           + (f"; it has {' and '.join(sources)}" if sources else ""))
    if len(tests) != 1:
        raise r.error(key, f"a match rule needs exactly one of {', '.join(TESTS)}"
                           + (f"; it has {' and '.join(tests)}" if tests else ""))
    source, test = sources[0], tests[0]
    name = r.string(value[source], f"{key}.{source}") or ""
    path: tuple[str, ...] = ()
    if source == "header" and HEADER_NAME.fullmatch(name) is None:
        raise r.error(f"{key}.header", f"{describe(name)} is not an HTTP header name; for "
                                       "example X-GitHub-Event")
    if source == "payload":
        path = tuple(name.split("."))
        if not all(path):
            raise r.error(f"{key}.payload", f"dot path {describe(name)} has an empty part; "
                                            "name keys separated by single dots, for example "
                                            "repository.full_name or commits.0.id")
    if test == "regex":
        return MatchRule(where, source, name, test, path,
                         pattern=_regex(r, value["regex"], f"{key}.regex"))
    if test == "equals":
        values: tuple[Scalar, ...] = (_scalar(r, value["equals"], f"{key}.equals", source),)
    else:
        choices = r.sequence(value["in"], f"{key}.in")
        if not choices:
            raise r.error(f"{key}.in", "in: needs at least one value (a rule that nothing can "
                                       "match would refuse every delivery)")
        values = tuple(_scalar(r, choice, f"{key}.in[{i}]", source)
                       for i, choice in enumerate(choices))
    return MatchRule(where, source, name, test, path, values=values)


def _group(r: Reader, value: dict[str, Any], key: str, where: str, mode: str,
           depth: int) -> MatchGroup:
    inner = f"{key}.{mode}"
    if depth + 1 > MAX_GROUP_DEPTH:
        raise r.error(inner, f"match groups nest at most {MAX_GROUP_DEPTH} deep; flatten the "
                             "rules (every top-level item of match must already hold)")
    items = r.sequence(value[mode], inner)
    if not items:
        raise r.error(inner, f"{mode}: needs at least one rule")
    return MatchGroup(where, mode, tuple(
        _item(r, item, f"{inner}[{i}]", f"{where}.{mode}[{i}]", depth=depth + 1)
        for i, item in enumerate(items)))


def _present(value: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if value.get(name) is not None]


def _scalar(r: Reader, value: Any, key: str, source: str) -> Scalar:
    if source == "header":
        if isinstance(value, (bool, int, float)):
            raise r.error(key, f'header values are text; quote it: "{describe(value)}"')
        if not isinstance(value, str):
            raise r.fail(key, "a string", value)
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise r.fail(key, "a finite number", value)
    if not isinstance(value, (str, bool, int, float)):
        raise r.fail(key, "a string, number or true/false", value)
    return value


def _regex(r: Reader, value: Any, key: str) -> re.Pattern[str]:
    text = r.string(value, key) or ""
    if not text:
        raise r.error(key, "regex must not be empty")
    try:
        return re.compile(text)
    except (re.error, RecursionError, OverflowError) as exc:
        raise r.error(key, f"invalid regular expression {describe(text)}: {exc}") from None
