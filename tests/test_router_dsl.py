"""Compiling `pipelines:`: every refusal names file, pipeline and step; graph shape."""

from __future__ import annotations

import pytest

from ductile.config.schema import PipelineSource
from ductile.errors import PipelineCompileError
from ductile.router import compile_pipelines
from support.router import CATALOG, compile_text


def refusal(text: str, **kwargs: int) -> str:
    with pytest.raises(PipelineCompileError) as caught:
        compile_text(text, **kwargs)
    return str(caught.value)


def one(step: str, head: str = "on: go") -> str:
    return f"pipelines:\n  - name: p\n    {head}\n    steps:\n      - {step}\n"


@pytest.mark.parametrize(("step", "message"), [
    ("{id: s, uses: nope}", 'steps[0] (id \'s\'): unknown plugin \'nope\''),
    ("{id: s, uses: poller}", "plugin 'poller' does not support command \"handle\""),
    ("{id: s, call: ghost}", "pipeline 'p' references unknown pipeline 'ghost'"),
    ("{id: s, uses: echo, if: {path: payload.x, op: nope, value: 1}}",
     "(id 's'): if.op: unsupported operator 'nope'"),
    ("{id: s, uses: echo, with: {a: '{payload.x'}}", "invalid with: with.a: unclosed {"),
    ("{id: s, uses: echo, with: {a: '{state.x}'}}", "must start with payload.* or context.*"),
    ("{id: s, uses: echo, baggage: {1bad: payload.x}}", "invalid baggage: baggage key '1bad'"),
    ("{id: s, uses: echo, baggage: {namespace: ns}}", "namespace requires baggage.from"),
    ("{id: s, uses: echo, baggage: {from: payload}}", "needs baggage.namespace"),
    ("{id: s, uses: echo, baggage: {ductile.x: payload.x}}", "reserved"),
    ("{id: s, uses: echo, baggage: {a: payload.x, a.b: payload.y}}", "overlap"),
    ("{id: s, steps: [{uses: echo}], with: {a: b}}", "with is only supported on uses steps"),
    ("{id: s, call: p, baggage: {a: payload.x}}", "baggage is only supported on uses steps"),
    ("{id: s, uses: echo, call: p}", "exactly one of uses, call, relay, steps, or split"),
    ("{id: s, uses: echo, colour: red}", "unknown key 'colour'"),
    ("{id: s, split: []}", "split must be a non-empty list of steps"),
    ("{id: s__switch, uses: echo}", "reserved for if: nodes"),
    ("not-a-mapping", "a step must be a mapping"),
])
def test_step_refusals_name_file_pipeline_and_step(step: str, message: str) -> None:
    text = refusal(one(step))
    assert "pipelines.yaml: pipelines[0] 'p'" in text
    assert message in text


@pytest.mark.parametrize(("head", "message"), [
    ("on: go\n    execution_mode: eventually", "execution_mode 'eventually' must be"),
    ("on: go\n    max_depth: -1", "max_depth must be an integer >= 0"),
    ("on: go\n    timeout: soon", "timeout"),
    ("on: go\n    on-hook: job.failed", "on and on-hook are mutually exclusive"),
    ("from_plugin: echo", "on or on-hook is required"),
    ("on-hook: job.exploded", "on-hook 'job.exploded' must be one of"),
    ("on: go\n    from_plugin: ghost", "from_plugin 'ghost' is not an enabled plugin"),
    ("on: go\n    if: {path: config.x, op: exists}", "config.* is not available here"),
    ("on-hook: job.failed\n    if: {path: context.x, op: exists}",
     "context is not available at hook time"),
    ("on: go\n    owner: me", "unknown key 'owner'"),
])
def test_pipeline_refusals(head: str, message: str) -> None:
    text = refusal(one("{id: s, uses: echo}", head))
    assert message in text


def test_duplicates_name_both_places() -> None:
    text = refusal("""
pipelines:
  - {name: p, on: a, steps: [{id: s, uses: echo}, {id: s, uses: echo}]}
  - {name: p, on: b, steps: [{uses: echo}]}
""")
    assert "duplicate step id 's'" in text
    assert "pipelines[1] 'p': duplicate pipeline name 'p' (first defined in pipelines.yaml " \
           "pipelines[0])" in text


def test_missing_name_and_empty_steps_are_refused() -> None:
    text = refusal("pipelines:\n  - {on: a, steps: [{uses: echo}]}\n  - {name: q, on: a}\n")
    assert "pipelines[0]: name is required" in text
    assert "pipelines[1] 'q': steps: steps must be a non-empty list" in text


def test_call_cycle_is_refused() -> None:
    text = refusal("""
pipelines:
  - {name: a, on: x, steps: [{call: b}]}
  - {name: b, on: y, steps: [{uses: echo}, {call: a}]}
""")
    assert "pipeline call cycle detected: a -> b -> a" in text


def test_reciprocal_hook_cycle_is_refused() -> None:
    text = refusal("""
pipelines:
  - {name: on-echo-fail, on-hook: job.failed, from_plugin: echo, steps: [{uses: py}]}
  - {name: on-py-fail, on-hook: job.failed, from_plugin: py, steps: [{uses: echo}]}
""")
    assert "reciprocal hook cycle: echo -> py -> echo" in text


def test_a_relay_step_must_name_an_enabled_instance() -> None:
    step = one("{id: out, relay: {to: peer, event: thing.done, with: {id: payload.id}}}")
    ps = compile_text(step, relay_instances=("peer",))
    node = ps.node("p", "out")
    assert node is not None and node.kind == "relay" and node.plugin == "core.relay"
    with pytest.raises(PipelineCompileError) as caught:
        compile_text(step, relay_instances=("other",))
    text = str(caught.value)
    assert ("steps[0] (id 'out'): relay.to names 'peer', which is not an enabled relay instance "
            "(instances: other)") in text
    bad = refusal(one("{id: out, relay: {event: thing.done}}"))
    assert "relay.to is required" in bad


def test_every_problem_of_every_file_is_reported_at_once() -> None:
    first = PipelineSource("a.yaml", 0, {"name": "p", "on": "x", "steps": [{"uses": "nope"}]})
    second = PipelineSource("b.yaml", 3, {"name": "q", "on": "x", "steps": [{"call": "ghost"}]})
    with pytest.raises(PipelineCompileError) as caught:
        compile_pipelines([first, second], CATALOG, default_max_depth=0, hook_max_depth=4)
    assert len(caught.value.problems) == 2
    assert caught.value.problems[0].startswith("a.yaml: pipelines[0] 'p': steps[0]")
    assert caught.value.problems[1].startswith("b.yaml: pipelines[3] 'q': steps[0]")


def test_graph_shape_of_if_split_and_nested_steps() -> None:
    ps = compile_text("""
pipelines:
  - name: p
    on: go
    execution_mode: sync
    timeout: 2m
    steps:
      - id: first
        uses: echo
      - id: fan
        split:
          - {id: left, uses: echo, if: {path: payload.ok, op: eq, value: true}}
          - steps: [{id: r1, uses: py}, {id: r2, uses: py}]
      - id: last
        uses: notify
""")
    p = ps.pipelines["p"]
    assert p.execution_mode == "synchronous" and p.timeout == 120.0
    assert p.entries == ("first",)
    assert {e.target for e in p.edges["first"]} == {"left__switch", "r1"}
    assert {(e.event_type, e.target, e.mode) for e in p.edges["left__switch"]} == {
        ("ductile.switch.true", "left", "run"), ("ductile.switch.false", "left", "skip")}
    assert [e.target for e in p.edges["left"]] == ["last"]
    assert [e.target for e in p.edges["r2"]] == ["last"]
    assert p.terminal_steps == frozenset({"last"})
    assert p.computed_depth == 4 and p.max_depth == 4  # first, left__switch, left, last


def test_auto_ids_skip_explicit_ones_and_on_may_arrive_as_yaml_true() -> None:
    raw = {True: "go", "name": "p", "steps": [{"uses": "echo"}, {"id": "step_2", "uses": "py"},
                                              {"uses": "notify"}]}
    ps = compile_pipelines([PipelineSource("f.yaml", 0, raw)], CATALOG,
                           default_max_depth=0, hook_max_depth=0)
    p = ps.pipelines["p"]
    assert p.on == "go"
    assert sorted(p.nodes) == ["step_1", "step_2", "step_3"]
    assert ps.hook_max_depth == 4  # 0 means the default


def test_steps_after_an_unguarded_call_are_reported_unreachable() -> None:
    ps = compile_text("""
pipelines:
  - {name: main, on: go, steps: [{call: sub}, {id: after, uses: echo}]}
  - {name: sub, on: never, steps: [{uses: py}, {uses: py}]}
""")
    assert any("steps[1] is unreachable" in w for w in ps.warnings)
    assert ps.pipelines["main"].computed_depth == 2  # the call weighs the callee's depth
