"""`with:` templates and baggage claims/accretion on their own."""

from __future__ import annotations

import pytest

from ductile.errors import BaggageError, ContextTooLarge, TemplateError
from ductile.router.baggage import accrete, check_size, claim, parse_baggage
from ductile.router.templates import apply_with, parse_template, parse_with


@pytest.mark.parametrize(("text", "message"), [
    ("a}", "unexpected } in template"),
    ("{payload.a", "unclosed { in template"),
    ("{}", "empty template path in"),
    ("{payload.{a}}", "nested { in template"),
    ("{state.a}", "must start with payload.* or context.*"),
    ("{payload..a}", "contains an empty segment"),
])
def test_malformed_templates_are_refused(text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")
                       .replace("*", r"\*")):
        parse_template(text)


def test_with_uses_one_snapshot_keeps_exact_types_and_renders_mixed_text() -> None:
    spec = parse_with({"a": "{payload.b}", "b": "{payload.a}", "label": "n={payload.n} "
                       "f={payload.f} none={payload.none} obj={payload.obj}", "limit": 5,
                       "flag": True})
    out = apply_with(spec, {"a": 1, "b": [2], "n": 3.0, "f": 1.5, "none": None,
                            "obj": {"k": 1}}, {}, pipeline="p", step="s")
    assert out["a"] == [2] and out["b"] == 1  # swapped from the same snapshot
    assert out["label"] == 'n=3 f=1.5 none= obj={"k":1}'
    assert out["limit"] == "5" and out["flag"] == "true"


def test_baggage_claims_bulk_import_and_scalar_conflicts() -> None:
    spec = parse_baggage({"order.id": "payload.id", "from": "payload.meta", "namespace": "meta"})
    updates = claim(spec, payload={"id": 1, "meta": {"a": 1}}, context={})
    assert updates == {"order": {"id": 1}, "meta": {"a": 1}}
    with pytest.raises(BaggageError, match="must resolve to an object"):
        claim(spec, payload={"id": 1, "meta": 3}, context={})
    assert claim(spec, payload={}, context={}, lenient=True) == {}


def test_accretion_adds_keeps_merges_and_refuses_changes() -> None:
    parent = {"a": {"x": 1}, "ductile": {"route_depth": 1, "route_max_depth": 3}}
    merged = accrete(parent, {"a": {"y": 2}, "b": None, "ductile": {"route_depth": 2}})
    assert merged == {"a": {"x": 1, "y": 2}, "b": None,
                      "ductile": {"route_depth": 2, "route_max_depth": 3}}
    with pytest.raises(BaggageError, match="'ductile.route_max_depth' is immutable"):
        accrete(parent, {"ductile": {"route_max_depth": 9}})
    with pytest.raises(BaggageError, match="'a' is immutable"):
        accrete({"a": None}, {"a": {"x": 1}})  # null is a value, not a mapping
    assert parent["a"] == {"x": 1}  # the parent is never modified


def test_context_size_cap_is_one_mebibyte() -> None:
    check_size({"blob": "x" * (1024 * 1024 - 20)})
    with pytest.raises(ContextTooLarge):
        check_size({"blob": "x" * (1024 * 1024)})
