"""The `if:` language: operators, composites, strict typing, limits, validation messages."""

from __future__ import annotations

from typing import Any

import pytest

from ductile.errors import ConditionError, ConditionEvalError
from ductile.router.conditions import evaluate, parse_condition

SCOPE = {
    "payload": {"n": 1.0, "name": "Report-2024.PDF", "tags": ["a", "b"], "nothing": None,
                "flag": True, "nested": {"deep": {"x": "y"}}},
    "context": {"customer": "acme", "ductile": {"route_depth": 2}},
}


def check(raw: dict[str, Any], scope: dict[str, Any] = SCOPE) -> bool:
    return evaluate(parse_condition(raw), scope)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"path": "payload.n", "op": "eq", "value": 1}, True),
    ({"path": "payload.n", "op": "neq", "value": 1}, False),
    ({"path": "payload.n", "op": "in", "value": [3, 1]}, True),
    ({"path": "payload.flag", "op": "eq", "value": 1}, False),
    ({"path": "payload.flag", "op": "eq", "value": True}, True),
    ({"path": "payload.n", "op": "gt", "value": 0.5}, True),
    ({"path": "payload.n", "op": "gte", "value": 1}, True),
    ({"path": "payload.n", "op": "lt", "value": 1}, False),
    ({"path": "payload.n", "op": "lte", "value": 1}, True),
    ({"path": "payload.name", "op": "contains", "value": "2024"}, True),
    ({"path": "payload.name", "op": "startswith", "value": "report"}, True),
    ({"path": "payload.name", "op": "endswith", "value": ".pdf"}, True),
    ({"path": "payload.name", "op": "regex", "value": "Report-\\d+"}, False),
    ({"path": "payload.name", "op": "regex", "value": "Report-\\d+\\.PDF"}, True),
    ({"path": "payload.name", "op": "regex", "value": "(?i)report.*pdf"}, True),
    ({"path": "payload.tags", "op": "eq", "value": ["a", "b"]}, True),
    ({"path": "payload.nested.deep", "op": "eq", "value": {"x": "y"}}, True),
    ({"path": "payload.nothing", "op": "exists"}, True),
    ({"path": "payload.missing", "op": "exists"}, False),
    ({"path": "payload.missing", "op": "eq", "value": None}, False),
    ({"path": "payload.missing", "op": "neq", "value": 1}, True),
    ({"path": "payload.name.sub", "op": "exists"}, False),
    ({"path": "context.customer", "op": "eq", "value": "acme"}, True),
    ({"path": "context.ductile.route_depth", "op": "gte", "value": 2}, True),
])
def test_operator_table(raw: dict[str, Any], expected: bool) -> None:
    assert check(raw) is expected


def test_composites_combine_and_short_circuit() -> None:
    is_one = {"path": "payload.n", "op": "eq", "value": 1}
    type_error = {"path": "payload.name", "op": "gt", "value": 1}
    assert check({"all": [is_one, {"not": {"path": "payload.flag", "op": "eq", "value": False}}]})
    assert check({"any": [is_one, type_error]})  # stops at the first true
    assert not check({"all": [{"not": is_one}, type_error]})  # stops at the first false
    with pytest.raises(ConditionEvalError):
        check({"all": [is_one, type_error]})


@pytest.mark.parametrize(("raw", "message"), [
    ({"path": "payload.name", "op": "gt", "value": 1}, "operator 'gt' requires numeric path"),
    ({"path": "payload.missing", "op": "lt", "value": 1}, "guard it with op: exists"),
    ({"path": "payload.n", "op": "contains", "value": "1"}, "requires string path value"),
    ({"path": "payload.flag", "op": "gte", "value": 1}, "requires numeric path value, got bool"),
])
def test_type_mismatch_is_an_evaluation_error(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConditionEvalError, match=message):
        check(raw)


@pytest.mark.parametrize(("raw", "at", "message"), [
    ("payload.x == 1", "if", "must be a mapping"),
    ({}, "if", "exactly one of atomic predicate, all, any, or not"),
    ({"path": "payload.x", "op": "eq", "value": 1, "all": []}, "if", "exactly one of"),
    ({"op": "exists"}, "if.path", "path is required"),
    ({"path": "payload", "op": "exists"}, "if.path", "must include one of payload.*"),
    ({"path": "state.x", "op": "exists"}, "if.path", "unsupported root 'state'"),
    ({"path": "config.x", "op": "exists"}, "if.path", "config.* is not available here"),
    ({"path": "payload..x", "op": "exists"}, "if.path", "path contains empty segment"),
    ({"path": "payload.x"}, "if.op", "op is required"),
    ({"path": "payload.x", "op": "like", "value": 1}, "if.op", "unsupported operator 'like'"),
    ({"path": "payload.x", "op": "exists", "value": 1}, "if.value", "not allowed for exists"),
    ({"path": "payload.x", "op": "eq"}, "if.value", "value is required for operator 'eq'"),
    ({"path": "payload.x", "op": "in", "value": 1}, "if.value", "must be an array for in"),
    ({"path": "payload.x", "op": "contains", "value": 1}, "if.value", "must be a string"),
    ({"path": "payload.x", "op": "gt", "value": "5"}, "if.value", "must be a number"),
    ({"path": "payload.x", "op": "regex", "value": "(unclosed"}, "if.value", "invalid regex"),
    ({"path": "payload.x", "op": "eq", "value": 1, "extra": 1}, "if", "unknown key 'extra'"),
    ({"all": []}, "if.all", "non-empty list"),
    ({"not": {"path": "payload.x", "op": "bad"}}, "if.not.op", "unsupported operator"),
    ({"any": [{"path": "payload.x", "op": "exists"}, {"path": "x"}]}, "if.any[1].path",
     "must include"),
])
def test_validation_errors_name_the_spot(raw: Any, at: str, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(raw)
    assert caught.value.at == at
    assert message in str(caught.value)
    assert not isinstance(caught.value, ConditionEvalError)


def test_yaml_dates_are_refused_as_values() -> None:
    import datetime

    with pytest.raises(ConditionError, match="quote dates"):
        parse_condition({"path": "payload.d", "op": "eq", "value": datetime.date(2024, 1, 1)})


def test_depth_limit_is_three_levels() -> None:
    leaf = {"path": "payload.n", "op": "exists"}
    assert check({"all": [{"any": [leaf]}]})
    with pytest.raises(ConditionError, match=r"maximum nesting depth exceeded \(3\)"):
        parse_condition({"all": [{"any": [{"not": leaf}]}]})


def test_predicate_limit_is_twenty_counting_composites() -> None:
    leaf = {"path": "payload.n", "op": "exists"}
    assert check({"all": [leaf] * 19})
    with pytest.raises(ConditionError, match=r"maximum predicate count exceeded \(20\)"):
        parse_condition({"all": [leaf] * 20})


def test_config_root_is_offered_only_when_asked_for() -> None:
    cond = parse_condition({"path": "config.mode", "op": "eq", "value": "x"},
                           roots=("payload", "context", "config"))
    assert evaluate(cond, {"config": {"mode": "x"}})
    assert not evaluate(cond, {})
