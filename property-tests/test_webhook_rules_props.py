"""Fuzz the webhook trigger rules: the `match:` decoder over arbitrary YAML-shaped values, and
the dot-path lookup and rule evaluation over arbitrary JSON bodies and headers. The decoder
either compiles rules or raises a ConfigError naming its key; lookup and evaluation never raise,
and a verdict is the same every time it is asked for."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ductile.config.reader import ConfigFile, Reader
from ductile.config.webhook_match import MatchGroup, MatchItem, MatchRule, decode_match
from ductile.errors import ConfigError
from ductile.planes.webhook.rules import RuleVerdict, evaluate, lookup

KEY = "webhooks.endpoints[0].match"

# Bodies as the JSON parser could produce them, and then some (NaN, huge integers).
bodies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["a", "b", "0", "1", "ref", "a.b", ""]) | st.text(max_size=6), inner,
        max_size=4),
    max_leaves=25,
)
parts = st.sampled_from(["a", "b", "0", "1", "01", "-1", "9" * 40, "ref", ""]) | st.text(
    max_size=5)
header_maps = st.dictionaries(st.sampled_from(["x-a", "x-b", "x-github-event"]),
                              st.text(max_size=12), max_size=3)

scalars = st.text(max_size=8) | st.integers() | st.floats() | st.booleans()
anything = st.none() | scalars | st.lists(scalars, max_size=3) | st.dictionaries(
    st.text(max_size=3), scalars, max_size=2)
regexes = st.sampled_from(["^a", "a|b", "(", "*", "[z-a]", "(?P<x>a)(?P=x)", "", "x{2,1}",
                           "\\", "(?i)REF"]) | st.text(max_size=6)
dot_paths = st.sampled_from(["a", "a.b", "a.0", "a..b", ".a", "a.", "ref"]) | st.text(max_size=6)
header_names = st.sampled_from(["X-A", "X-GitHub-Event", "X A", "", "x:y"]) | st.text(max_size=6)


def rule_maps(items: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Maps with any mix of the rule keys (valid or not) and junk keys."""
    return st.fixed_dictionaries({}, optional={
        "header": header_names | anything,
        "payload": dot_paths | anything,
        "equals": scalars | anything,
        "in": st.lists(scalars, max_size=3) | anything,
        "regex": regexes | anything,
        "any": st.lists(items, max_size=3) | anything,
        "all": st.lists(items, max_size=3) | anything,
        "other": anything,
    })


match_values = st.recursive(anything, lambda inner: st.lists(rule_maps(inner) | inner,
                                                             max_size=3), max_leaves=12)


def decode(value: Any, warnings: list[str] | None = None) -> tuple[MatchItem, ...]:
    reader = Reader(ConfigFile("webhooks.yaml", "webhooks.yaml"),
                    warnings if warnings is not None else [])
    return decode_match(reader, value, KEY)


@given(match_values)
def test_match_decodes_or_raises_a_config_error_naming_its_key(value: Any) -> None:
    try:
        items = decode(value)
    except ConfigError as exc:
        assert exc.path == "webhooks.yaml"
        assert exc.key is not None and exc.key.startswith(KEY)
        assert str(exc).startswith(f"webhooks.yaml: {exc.key}: ")
        return
    for item in _walk(items):
        if isinstance(item, MatchRule):
            assert item.source in ("header", "payload")
            assert (item.pattern is not None) == (item.test == "regex")
            assert item.test == "regex" or item.values
            assert item.source == "header" or all(item.path)
        else:
            assert item.mode in ("any", "all") and item.items


@given(bodies, st.lists(parts, max_size=5))
def test_lookup_never_raises_and_finds_only_what_is_there(body: Any, path: list[str]) -> None:
    found, value = lookup(body, path)
    assert isinstance(found, bool)
    if not found:
        assert value is None
        return
    # Every prefix of a path that is there is there too.
    for cut in range(len(path)):
        assert lookup(body, path[:cut])[0]


finite = st.text(max_size=8) | st.integers() | st.booleans() | st.floats(
    allow_nan=False, allow_infinity=False)
good_regexes = st.sampled_from(["^a", "a|b", "(?i)REF", "^$", "x+y", "[0-9]{2}", "."])
good_paths = st.lists(st.sampled_from(["a", "b", "0", "1", "ref", "01"]), min_size=1,
                      max_size=3).map(".".join)
good_headers = st.sampled_from(["X-A", "X-B", "X-GitHub-Event", "x-missing"])


def valid_items(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Rule maps the decoder accepts: tests of each kind, and groups nested up to `depth`."""
    tests = st.one_of(
        st.fixed_dictionaries({"header": good_headers, "equals": st.text(max_size=8)}),
        st.fixed_dictionaries({"header": good_headers,
                               "in": st.lists(st.text(max_size=8), min_size=1, max_size=3)}),
        st.fixed_dictionaries({"header": good_headers, "regex": good_regexes}),
        st.fixed_dictionaries({"payload": good_paths, "equals": finite}),
        st.fixed_dictionaries({"payload": good_paths,
                               "in": st.lists(finite, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"payload": good_paths, "regex": good_regexes}),
    )
    if depth == 0:
        return tests
    inner = st.lists(valid_items(depth - 1), min_size=1, max_size=3)
    return tests | st.sampled_from(["any", "all"]).flatmap(
        lambda mode: st.fixed_dictionaries({mode: inner}))


compiled_rules = st.lists(valid_items(3), max_size=3).map(decode)


@given(compiled_rules, header_maps, bodies)
def test_evaluation_never_raises_and_gives_the_same_verdict_every_time(
    items: tuple[MatchItem, ...], headers: dict[str, str], body: Any
) -> None:
    def header(name: str) -> str | None:
        return headers.get(name.lower())

    verdict = evaluate(items, header, body)
    assert isinstance(verdict, RuleVerdict)
    assert verdict.ok == (verdict.reason == "")
    assert evaluate(items, header, body) == verdict
    # The reason goes into a JSON response.
    json.dumps({"reason": verdict.reason})


clean_keys = st.text(alphabet="abcxyz019_-", min_size=1, max_size=5)


@st.composite
def bodies_with_a_path(draw: st.DrawFn) -> tuple[Any, list[str], Any]:
    """A body holding a scalar at a path (built from the scalar outwards, among arbitrary
    siblings), the path, and the scalar."""
    leaf = draw(finite)
    value: Any = leaf
    path: list[str] = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        if draw(st.booleans()):
            siblings = draw(st.lists(bodies, max_size=3))
            index = draw(st.integers(min_value=0, max_value=len(siblings)))
            siblings.insert(index, value)
            value, part = siblings, str(index)
        else:
            part = draw(clean_keys)
            value = {**draw(st.dictionaries(clean_keys, bodies, max_size=3)), part: value}
        path.insert(0, part)
    top = draw(clean_keys)
    return {**draw(st.dictionaries(clean_keys, bodies, max_size=3)), top: value}, [top, *path], leaf


@given(bodies_with_a_path(), finite)
def test_a_rule_naming_a_value_of_the_body_holds(found: tuple[Any, list[str], Any],
                                                 other: Any) -> None:
    body, path, value = found
    dotted = ".".join(path)
    assert lookup(body, path) == (True, value)
    for rule in ({"payload": dotted, "equals": value}, {"payload": dotted, "in": [other, value]}):
        assert evaluate(decode([rule]), lambda _: None, body).ok, rule


def _walk(items: tuple[MatchItem, ...]) -> list[MatchItem]:
    out: list[MatchItem] = []
    for item in items:
        out.append(item)
        if isinstance(item, MatchGroup):
            out.extend(_walk(item.items))
    return out
