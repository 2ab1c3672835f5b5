"""Fuzz the condition language, `with:` templates, baggage specs and the pipeline compiler:
bad input is refused with a documented error type, and evaluation of valid conditions is total."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from ductile.config.schema import PipelineSource
from ductile.errors import (
    BaggageError,
    ConditionError,
    ConditionEvalError,
    PipelineCompileError,
    TemplateError,
)
from ductile.router import compile_pipelines, evaluate, parse_baggage, parse_condition, route
from ductile.router.templates import apply_with, parse_with

OPS = ["exists", "eq", "neq", "in", "gt", "gte", "lt", "lte", "contains", "startswith",
       "endswith", "regex", "like", ""]
PATHS = ["payload.a", "payload.a.b", "context.c", "config.x", "payload", "payload..a", "x.y",
         "payload.n", "context.ductile.route_depth"]
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                        st.text(max_size=6), st.sampled_from(["a", "A.B", "(x", "[a-z]+", "1"]))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "n"]), inner,
                                                 max_size=3)), max_leaves=8)
atomic = st.fixed_dictionaries(
    {"path": st.one_of(st.sampled_from(PATHS), json_scalar), "op": st.sampled_from(OPS)},
    optional={"value": json_value})
condition = st.recursive(atomic, lambda inner: st.one_of(
    st.fixed_dictionaries({"all": st.lists(inner, max_size=4)}),
    st.fixed_dictionaries({"any": st.lists(inner, max_size=4)}),
    st.fixed_dictionaries({"not": inner}),
    st.dictionaries(st.sampled_from(["all", "any", "not", "path", "op", "zz"]), inner,
                    max_size=3)), max_leaves=25)
scope = st.fixed_dictionaries({
    "payload": st.dictionaries(st.sampled_from(["a", "n", "b"]), json_value, max_size=3),
    "context": st.dictionaries(st.sampled_from(["c", "ductile"]), json_value, max_size=2)})


@settings(max_examples=500)
@given(st.one_of(condition, json_value), scope)
def test_conditions_raise_only_condition_errors_and_evaluate_totally(raw: Any,
                                                                    data: Any) -> None:
    try:
        parsed = parse_condition(raw)
    except ConditionError as exc:
        assert not isinstance(exc, ConditionEvalError) and exc.at.startswith("if")
        return
    try:
        assert evaluate(parsed, data) in (True, False)
    except ConditionEvalError as exc:
        assert "requires" in str(exc)


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=4), st.one_of(
    st.text(alphabet="{}.payloadcontext x", max_size=20), json_scalar), max_size=3), scope)
def test_with_templates_raise_only_template_errors(raw: Any, data: Any) -> None:
    try:
        spec = parse_with(raw)
    except TemplateError:
        return
    try:
        out = apply_with(spec, data["payload"], data["context"], pipeline="p", step="s")
    except TemplateError as exc:
        assert 'pipeline "p" step "s"' in str(exc)
        return
    assert set(out) >= {key for key, _ in spec.entries}


@settings(max_examples=300)
@given(st.one_of(st.dictionaries(st.one_of(st.sampled_from(["from", "namespace", "a", "a.b",
                                                            "ductile", "1x"]), st.text(max_size=4)),
                                 st.one_of(st.sampled_from(["payload", "payload.a", "context.c",
                                                            "ns", ""]), json_scalar),
                                 max_size=4), json_value))
def test_baggage_specs_raise_only_baggage_errors(raw: Any) -> None:
    try:
        parse_baggage(raw)
    except BaggageError as exc:
        assert str(exc)


PLUGINS = ["echo", "py", "ghost", "poller"]
step_leaf = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.sampled_from(["a", "b", "c", "a__switch"]), json_scalar),
    "uses": st.sampled_from(PLUGINS), "call": st.sampled_from(["p0", "p1", "p2", "zz"]),
    "if": st.one_of(atomic, json_scalar),
    "with": st.one_of(st.dictionaries(st.sampled_from(["x", "y"]), st.sampled_from(
        ["{payload.a}", "lit", "{", "{context.c}-{payload.n}", "{config.x}"])), json_scalar),
    "baggage": st.one_of(st.dictionaries(st.sampled_from(["k", "from", "namespace", "k.j"]),
                                         st.sampled_from(["payload.a", "payload", "ns"])),
                         json_scalar),
    "relay": st.one_of(st.fixed_dictionaries({"to": st.text(max_size=3),
                                              "event": st.text(max_size=3)}), json_scalar),
    "colour": st.just("red")})
step = st.recursive(step_leaf, lambda inner: st.one_of(
    st.fixed_dictionaries({"steps": st.lists(inner, max_size=3)},
                          optional={"if": atomic, "id": st.sampled_from(["s", "t"])}),
    st.fixed_dictionaries({"split": st.lists(inner, max_size=3)})), max_leaves=8)
pipeline = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["p0", "p1", "p2"]), json_scalar),
     "steps": st.one_of(st.lists(step, max_size=4), json_scalar)},
    optional={"on": st.one_of(st.sampled_from(["go", "x.y"]), json_scalar),
              "on-hook": st.sampled_from(["job.failed", "job.completed", "job.nope"]),
              "from_plugin": st.sampled_from(PLUGINS), "if": condition,
              "max_depth": st.one_of(st.integers(-2, 5), json_scalar),
              "execution_mode": st.sampled_from(["async", "sync", "synchronous", "later"]),
              "timeout": st.sampled_from(["30s", "1m", "0s", "soon", 5])})
CATALOG = {"echo": {"handle", "poll"}, "py": {"handle"}, "poller": {"poll"}}


@settings(max_examples=400)
@given(st.lists(st.one_of(pipeline, json_value), max_size=4), st.integers(0, 6))
def test_compiler_compiles_or_refuses_with_a_message(raws: list[Any], ceiling: int) -> None:
    sources = [PipelineSource("fuzz.yaml", i, raw) for i, raw in enumerate(raws)]
    try:
        ps = compile_pipelines(sources, CATALOG, default_max_depth=ceiling, hook_max_depth=4)
    except PipelineCompileError as exc:
        assert exc.problems and all(p.startswith("fuzz.yaml: pipelines[") for p in exc.problems)
        return
    for name, compiled in ps.pipelines.items():
        assert compiled.entries, name
        # Routing a trigger never raises for a compiled set; failures become fail dispatches.
        if compiled.on:
            for dispatch in route(ps, None, "echo", {"type": compiled.on,
                                                     "payload": {"a": 1}}).dispatches:
                assert dispatch.action in ("run", "skip", "fail")
