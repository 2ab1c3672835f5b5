"""Routing decisions, driven the way the dispatcher will drive them (in memory, no queue)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ductile.errors import BaggageError, ConditionEvalError, ContextTooLarge, RoutingError
from ductile.router import (
    Dispatch,
    PipelineSet,
    Position,
    events_to_route,
    hooks_for,
    request_context,
    route,
    run_switch,
    skipped_event,
    start,
)
from support.router import compile_text, event, ids

Plugin = Callable[[Dispatch], list[dict[str, Any]]]


@dataclass
class Ledger:
    """What the dispatcher would have recorded: one entry per job, in run order."""

    jobs: list[tuple[str, str, str, str]] = field(default_factory=list)  # action, step, plugin, why
    dispatches: list[Dispatch] = field(default_factory=list)

    def steps(self, action: str = "run") -> list[str]:
        return [step for act, step, _, _ in self.jobs if act == action]


def drive(ps: PipelineSet, first: list[Dispatch], plugins: dict[str, Plugin]) -> Ledger:
    """Run dispatches breadth-first: switches in-process, skips re-emit, plugins via callables."""
    ledger, queue = Ledger(), list(first)
    while queue:
        job = queue.pop(0)
        ledger.jobs.append((job.action, job.step_id, job.plugin, job.decision))
        ledger.dispatches.append(job)
        if job.action == "fail":
            continue
        if job.action == "skip":
            emitted = [skipped_event(job.event)]
            lenient = True
        elif job.plugin == "core.switch":
            emitted, lenient = [dict(run_switch(ps, job.position, job.event).event)], False
        else:
            emitted = events_to_route(plugins[job.plugin](job), "ok", job.position)
            lenient = False
        for ev in emitted:
            queue.extend(route(ps, job.position, job.plugin, ev, lenient=lenient).dispatches)
    return ledger


def silent(_: Dispatch) -> list[dict[str, Any]]:
    return []


def passthrough(job: Dispatch) -> list[dict[str, Any]]:
    return [{"type": "passed", "payload": dict(job.payload)}]


THREE_STEPS = """
pipelines:
  - name: three
    on: order.placed
    steps:
      - id: fetch
        uses: echo
        baggage: {order.id: payload.id, order.customer: payload.who}
      - id: enrich
        uses: py
      - id: notify
        uses: notify
        with: {subject: "order {context.order.id} for {payload.who}", id: "{context.order.id}"}
"""


def test_baggage_claimed_in_step_one_reaches_step_three() -> None:
    ps = compile_text(THREE_STEPS)
    first = route(ps, None, "webhook", event("order.placed", {"id": 42, "who": "ann"}),
                  new_id=ids("inst")).dispatches
    assert [(d.step_id, d.decision) for d in first] == [("fetch", "matched on: order.placed")]
    assert first[0].root is not None and first[0].root.instance_id == "inst-1"
    ledger = drive(ps, list(first), {"echo": passthrough, "py": passthrough, "notify": silent})
    assert ledger.steps() == ["fetch", "enrich", "notify"]
    last = ledger.dispatches[-1]
    assert last.context["order"] == {"id": 42, "customer": "ann"}
    assert last.context["ductile"] == {"pipeline_instance_id": "inst-1", "route_depth": 3,
                                       "route_max_depth": 3}
    assert last.payload["subject"] == "order 42 for ann"
    assert last.payload["id"] == 42  # an exact placeholder keeps its type
    assert last.decision == "after enrich: passed"
    ctx = request_context("notify", last.position)
    assert ctx["ductile_step_id"] == "notify" and ctx["order"]["id"] == 42


def test_missing_baggage_source_fails_the_successor_not_the_router() -> None:
    ps = compile_text(THREE_STEPS)
    first = route(ps, None, "webhook", event("order.placed", {"who": "ann"})).dispatches
    assert first[0].action == "fail"
    assert "apply baggage claims for three:fetch: claim order.id: payload.id: path not found" \
        in first[0].decision


def test_with_missing_path_fails_naming_pipeline_step_and_path() -> None:
    ps = compile_text(THREE_STEPS)
    position = Position("three", "enrich", {"ductile": {"pipeline_instance_id": "i",
                                                        "route_depth": 2, "route_max_depth": 3}})
    (failed,) = route(ps, position, "py", event("passed", {"who": "ann"})).dispatches
    assert failed.action == "fail"
    assert failed.decision == ('pipeline "three" step "notify": with.id: resolve '
                               '"context.order.id": path not found in the step\'s input')


IF_PIPELINE = """
pipelines:
  - name: gate
    on: go
    steps:
      - {id: check, uses: echo}
      - {id: gated, uses: py, if: {path: payload.level, op: gte, value: 3},
         baggage: {level: payload.level_claim}}
      - {id: after, uses: notify}
"""


@pytest.mark.parametrize(("level", "ran", "skipped"), [
    (5, ["check", "gated__switch", "gated", "after"], []),
    (1, ["check", "gated__switch", "after"], ["gated"]),
])
def test_if_true_runs_and_if_false_skips_but_successors_continue(
        level: int, ran: list[str], skipped: list[str]) -> None:
    ps = compile_text(IF_PIPELINE)
    first = route(ps, None, "api", event("go", {"level": level, "level_claim": 1})).dispatches
    ledger = drive(ps, list(first), {"echo": passthrough, "py": passthrough,
                                     "notify": silent})
    assert ledger.steps("run") == ran
    assert ledger.steps("skip") == skipped
    decisions = {step: why for _, step, _, why in ledger.jobs}
    if skipped:
        assert decisions["gated"] == "skipped: if false"
    else:
        assert decisions["gated"] == "if true"


def test_skipped_step_with_missing_baggage_source_is_lenient() -> None:
    ps = compile_text(IF_PIPELINE)
    first = route(ps, None, "api", event("go", {"level": 1})).dispatches
    ledger = drive(ps, list(first), {"echo": passthrough, "py": passthrough, "notify": silent})
    assert ledger.steps("skip") == ["gated"] and "after" in ledger.steps()
    first = route(ps, None, "api", event("go", {"level": 9})).dispatches
    ledger = drive(ps, list(first), {"echo": passthrough, "py": passthrough, "notify": silent})
    assert ledger.jobs[-1][:2] == ("fail", "gated")  # when it runs, the missing claim fails it
    assert "level_claim: path not found" in ledger.jobs[-1][3]


def test_switch_type_error_raises_for_the_switch_job_to_fail() -> None:
    ps = compile_text(IF_PIPELINE)
    position = Position("gate", "gated__switch", {"ductile": {"pipeline_instance_id": "i",
                                                              "route_depth": 2}})
    with pytest.raises(ConditionEvalError, match="requires numeric path value"):
        run_switch(ps, position, event("passed", {"level": "high"}))
    with pytest.raises(RoutingError, match="missing condition"):
        run_switch(ps, Position("gate", "check", {}), event("passed"))


def test_split_runs_both_branches_and_the_successor_once_per_branch() -> None:
    ps = compile_text("""
pipelines:
  - name: fan
    on: go
    steps:
      - {id: start, uses: echo}
      - split:
          - {id: left, uses: py}
          - {id: right, uses: notify}
      - {id: join, uses: echo}
""")
    first = route(ps, None, "api", event("go", {"x": 1})).dispatches
    ledger = drive(ps, list(first), {"echo": passthrough, "py": passthrough,
                                     "notify": passthrough})
    assert ledger.steps()[:3] == ["start", "left", "right"]
    assert ledger.steps().count("join") == 2  # no join: once per branch


def test_call_enters_the_callee_and_carries_baggage() -> None:
    ps = compile_text("""
pipelines:
  - name: main
    on: go
    steps:
      - {id: claim, uses: echo, baggage: {ticket: payload.ticket}}
      - {id: jump, call: sub}
  - name: sub
    on: sub.direct
    steps:
      - {id: s1, uses: py}
      - {id: s2, uses: notify}
""")
    first = route(ps, None, "api", event("go", {"ticket": "T-1"})).dispatches
    ledger = drive(ps, list(first), {"echo": passthrough, "py": passthrough, "notify": silent})
    assert ledger.steps() == ["claim", "s1", "s2"]
    s1 = ledger.dispatches[1]
    assert (s1.pipeline, s1.decision) == ("sub", "after claim: passed -> call sub")
    assert s1.context["ticket"] == "T-1"
    assert s1.context["ductile"]["pipeline_instance_id"] == \
        ledger.dispatches[0].context["ductile"]["pipeline_instance_id"]


def test_depth_limit_fails_the_step_with_a_clear_reason() -> None:
    ps = compile_text("""
pipelines:
  - name: loop
    on: tick
    max_depth: 2
    steps:
      - {id: a, uses: echo}
      - {id: b, uses: echo}
      - {id: c, uses: echo}
""")
    first = route(ps, None, "api", event("tick")).dispatches
    ledger = drive(ps, list(first), {"echo": silent})
    assert ledger.jobs[-1] == ("fail", "c", "echo", "depth limit reached: 3 > max_depth 2")


def test_self_triggering_pipelines_stop_at_the_service_ceiling() -> None:
    ps = compile_text("""
pipelines:
  - {name: ping, on: ping, steps: [{id: p, uses: echo}]}
""", default_max_depth=5)
    emit_ping: Plugin = lambda job: [{"type": "ping", "payload": {}}]  # noqa: E731
    ledger = drive(ps, list(route(ps, None, "api", event("ping")).dispatches),
                   {"echo": emit_ping})
    assert ledger.steps() == ["p"] * 5
    assert ledger.jobs[-1][3] == "depth limit reached: 6 > max_depth 5"


def test_a_triggered_pipeline_gets_its_own_budget_and_fresh_baggage() -> None:
    ps = compile_text("""
pipelines:
  - {name: first, on: go, steps: [{id: a, uses: echo, baggage: {secret: payload.s}},
                                  {id: b, uses: echo}]}
  - {name: second, on: passed, from_plugin: echo,
     steps: [{id: c, uses: py}, {id: d, uses: py}]}
""")
    position = Position("first", "b", {"secret": 1, "ductile": {
        "pipeline_instance_id": "i1", "route_depth": 2, "route_max_depth": 2}})
    (entry,) = route(ps, position, "echo", event("passed", {"s": 1})).dispatches
    assert (entry.pipeline, entry.step_id, entry.action) == ("second", "c", "run")
    assert "secret" not in entry.context
    assert entry.context["ductile"]["route_depth"] == 3
    assert entry.context["ductile"]["route_max_depth"] == 4
    assert entry.payload["ductile_upstream_pipeline"] == "first"
    assert route(ps, position, "py", event("passed")).dispatches == ()  # from_plugin scoping


def test_pipeline_if_filters_entry_and_notes_errors() -> None:
    ps = compile_text("""
pipelines:
  - {name: big, on: go, if: {path: payload.size, op: gt, value: 10}, steps: [{uses: echo}]}
""")
    assert len(route(ps, None, "api", event("go", {"size": 11})).dispatches) == 1
    small = route(ps, None, "api", event("go", {"size": 1}))
    assert small.dispatches == () and "pipeline if false" in small.notes[0]
    broken = route(ps, None, "api", event("go", {}))
    assert broken.dispatches == () and "pipeline if error" in broken.notes[0]


HOOKS = """
pipelines:
  - name: alert
    on-hook: job.failed
    from_plugin: echo
    if: {path: payload.status, op: eq, value: failed}
    steps:
      - {id: page, uses: notify}
      - {id: log, uses: py}
"""


def test_hooks_start_the_whole_hook_pipeline() -> None:
    ps = compile_text(HOOKS)
    routed = hooks_for(ps, "job.failed", plugin="echo",
                       payload={"job_id": "j1", "status": "failed", "error": "boom"})
    (page,) = routed.dispatches
    assert (page.step_id, page.decision) == ("page", "hook job.failed from echo")
    assert page.event["type"] == "job.failed" and page.payload["error"] == "boom"
    ledger = drive(ps, [page], {"notify": passthrough, "py": silent})
    assert ledger.steps() == ["page", "log"]
    assert hooks_for(ps, "job.failed", plugin="py", payload={"status": "failed"}).dispatches == ()
    assert hooks_for(ps, "job.completed", plugin="echo", payload={}).dispatches == ()


def test_hook_depth_is_capped() -> None:
    ps = compile_text(HOOKS, hook_max_depth=2)
    (capped,) = hooks_for(ps, "job.failed", plugin="echo", payload={"status": "failed"},
                          hook_depth=2).dispatches
    assert capped.action == "fail"
    assert capped.decision == "hook depth limit reached: 3 > hook_max_depth 2"


def test_start_seeds_root_baggage_and_refuses_bad_or_oversized_baggage() -> None:
    ps = compile_text(THREE_STEPS)
    routed = start(ps, "three", {"id": 7, "who": "bo"}, {"tenant": "t1"}, new_id=ids())
    (fetch,) = routed.dispatches
    assert fetch.event["type"] == "order.placed"
    assert fetch.context["tenant"] == "t1" and fetch.context["order"]["id"] == 7
    assert fetch.root is not None and fetch.root.accumulated["tenant"] == "t1"
    with pytest.raises(BaggageError, match="apply baggage claims for three:fetch"):
        start(ps, "three", {"who": "bo"})
    with pytest.raises(ContextTooLarge) as caught:
        start(ps, "three", {"id": 1, "who": "x"}, {"blob": "x" * (1024 * 1024)})
    assert caught.value.limit == 1048576
    with pytest.raises(BaggageError, match="control namespace"):
        start(ps, "three", {"id": 1, "who": "x"}, {"ductile": {"route_depth": 0}})
    with pytest.raises(RoutingError, match="not found"):
        start(ps, "ghost", {})


FANNED = """
pipelines:
  - name: fanned
    on: batch.ready
    steps:
      - split:
          - {id: left, uses: echo}
          - steps: [{id: r1, uses: py, baggage: {batch.id: payload.id}}, {id: r2, uses: echo}]
          - {id: guarded, uses: echo, if: {path: payload.go, op: exists}}
      - {id: join, uses: notify}
  - name: caller
    on: caller.start
    steps:
      - call: fanned
  - name: single
    on: single.start
    steps:
      - split: [{id: only, uses: echo}]
"""


def test_a_run_that_enters_several_steps_gets_one_split_root_over_its_branches() -> None:
    ps = compile_text(FANNED)
    routed = start(ps, "fanned", {"id": 9}, {"tenant": "t1"}, new_id=ids())
    assert [d.step_id for d in routed.dispatches] == ["left", "r1", "guarded__switch"]
    run = routed.run
    assert run is not None and run.pipeline == "fanned"
    assert run.branches == ("fanned/left", "fanned/r1", "fanned/guarded__switch")
    assert run.result == {"branches": list(run.branches)}
    assert run.reason == "split into 3 branches"
    assert run.decision == "started: fanned"
    # The root carries the trigger event every branch receives.
    assert all(d.event["event_id"] == run.event["event_id"] for d in routed.dispatches)
    assert run.event["type"] == "batch.ready" and run.event["payload"] == {"id": 9}
    # One pipeline instance: every branch grows from the same instance root row.
    roots = {d.root.key for d in routed.dispatches if d.root is not None}
    assert roots == {("fanned", "id-2")}
    assert routed.dispatches[0].root is not None
    assert routed.dispatches[0].root.accumulated["tenant"] == "t1"
    # A call into a pipeline that fans out fans the caller's run out too.
    called = start(ps, "caller", {"id": 1}, new_id=ids())
    assert called.run is not None
    assert called.run.branches == ("fanned/left", "fanned/r1", "fanned/guarded__switch")
    assert called.run.pipeline == "caller"


def test_a_run_that_enters_one_step_has_no_split_root() -> None:
    assert start(compile_text(THREE_STEPS), "three", {"id": 1, "who": "x"}).run is None
    assert start(compile_text(FANNED), "single", {}).run is None
    # Runs started by an event hang under the emitting job: no root of their own.
    assert route(compile_text(FANNED), None, "poller", event("batch.ready", {"id": 2})).run \
        is None


def test_events_without_type_or_with_bad_payload_cannot_be_routed() -> None:
    ps = compile_text(THREE_STEPS)
    with pytest.raises(RoutingError, match="event.type is required"):
        route(ps, None, "echo", {"payload": {}})
    with pytest.raises(RoutingError, match="payload must be an object"):
        route(ps, None, "echo", {"type": "x", "payload": [1]})


def test_inherited_baggage_is_immutable() -> None:
    ps = compile_text("""
pipelines:
  - {name: p, on: go, steps: [{id: a, uses: echo, baggage: {k: payload.k}},
                              {id: b, uses: echo, baggage: {k: payload.k}}]}
""")
    position = Position("p", "a", {"k": 1, "ductile": {"pipeline_instance_id": "i",
                                                       "route_depth": 1, "route_max_depth": 2}})
    (same,) = route(ps, position, "echo", event("x", {"k": 1.0})).dispatches
    assert same.action == "run"  # an equal value (1 == 1.0) is kept
    (changed,) = route(ps, position, "echo", event("x", {"k": 2})).dispatches
    assert changed.action == "fail"
    assert "baggage path 'k' is immutable" in changed.decision


def test_position_round_trips_through_an_event_context_row() -> None:
    position = Position("p", "a", {"k": [1, 2], "ductile": {"route_depth": 1}})
    row = position.to_row()
    again = Position.from_row(row["pipeline_name"], row["step_id"], row["accumulated_json"])
    assert again == position
    assert Position.from_row("p", "", "{}") is None  # an instance root row is not a position
