"""Routing decisions: which jobs follow a finished job, with which payload and context.

Pure: the dispatcher does the I/O (context rows, enqueue). The integration contract:

A job's *position* is its `event_context` row: `Position(pipeline, step_id, accumulated)`
(`Position.from_row(...)` / `.to_row()`); a root job that is not in a pipeline has None.

    route(ps, position, plugin, event, *, lenient=False, new_id=...) -> Routing
        One emitted event of a finished job. Call once per event. `lenient=True` on the skip path.
    start(ps, name, payload, root_baggage=None, *, new_id=...) -> Routing
        `POST /pipeline/{name}`. Raises BaggageError (API 400 `root baggage claims failed: ...`)
        or ContextTooLarge (API 413) and then nothing may be enqueued. When the run enters more
        than one step (a leading `split`), `Routing.run` describes its one root job (RunRoot).
    hooks_for(ps, signal, *, plugin, payload, hook_depth=0, new_id=...) -> Routing
        `job.completed` / `job.failed` / `job.timed_out` of a root job whose plugin has
        `notify_on_complete`.
    run_switch(ps, position, event) -> SwitchOutcome
        Run the built-in `core.switch` job in-process; route `outcome.event` afterwards.
    request_context(plugin, position) -> dict        the request's `context`
    merge_context(payload, context) -> dict          context keys added where the payload lacks them
    events_to_route(events, result, position) -> list    adds `payload.result`, or the synthetic
                                                         `ductile.step.succeeded` for a silent step
    skipped_event(event) -> dict                     what a skipped job re-emits

Each `Dispatch` in a Routing has `action`:

* `run`  - enqueue `plugin`/`command` with `event` as its payload (the whole envelope),
  `parent_job_id` = the finished job, `source_event_id` = `event["event_id"]`, and a new
  `event_context` row holding `context`. Its parent row: the finished job's context row, or, when
  `root` is set, a new pipeline-instance root row (parent NULL, step_id "", `root.accumulated`),
  created once per `root.key` within one Routing.
* `skip` - record the same job as `skipped` (result `{"status": "skipped", "reason": decision}`),
  then call `route(ps, d.position, d.plugin, skipped_event(d.event), lenient=True)` so its
  successors run.
* `fail` - record the job as `failed` with `decision` as its error, no retry, no routing (depth
  limit, missing baggage source, immutable baggage, `with:` error, context over 1 MiB).

`notes` lists routes not taken (a pipeline `if` false or in error), for logs.

A run has one id and one job tree. A run started with one entry step has that step's job as
its root. A run started by `start` that enters several steps at once (a leading `split`, or a
`call` of a pipeline that starts with one) gets a synthetic root job, `RunRoot`: the `core.split`
job of the run's pipeline-instance root row, written already succeeded, with every entry
dispatch as its child (one extra job per such run, none for any other). Runs started by an
event (`route`, `hooks_for`) already hang under the job that emitted it and need none.

Decisions on the reference's quirks (docs/pipelines.md repeats them for users):

* Depth. Each pipeline instance gets the budget of its pipeline (explicit `max_depth`, else its
  longest path) counted from the depth where it started; a pipeline triggered by an event from
  another pipeline therefore gets its own full budget (the original inherited the emitter's and
  starved chains). `default_max_depth` caps the route depth of a whole chain so that pipelines
  triggering each other cannot loop forever (0 = no ceiling). Exceeding either is a `fail`
  dispatch: `depth limit reached: 8 > max_depth 7`.
* Baggage follows `call:` into the callee (same pipeline instance); an `on:` trigger starts a new
  instance with fresh baggage, as in the original.
* A missing baggage source or a `with:` path not found fails the successor (a `fail` dispatch),
  not the emitting job, so the ledger shows which step could not start and why.
* Hook pipelines run in full (the original ran only their entry node) and their jobs belong to a
  pipeline instance, so they never fire hooks themselves; `hook_depth` still caps chains.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ductile.errors import (
    BaggageError,
    ConditionEvalError,
    ContextTooLarge,
    RoutingError,
    TemplateError,
)
from ductile.router.baggage import (
    CONTROL,
    Control,
    accrete,
    check_root_baggage,
    check_size,
    claim,
    control,
    control_fields,
)
from ductile.router.conditions import evaluate
from ductile.router.dsl import (
    SWITCH_FALSE,
    SWITCH_TRUE,
    Node,
    Pipeline,
    PipelineSet,
)
from ductile.router.templates import WithSpec, apply_with

STEP_SUCCEEDED = "ductile.step.succeeded"
STEP_SKIPPED = "ductile.step.skipped"
API_TRIGGER = "api.pipeline.trigger"

IdFactory = Callable[[], str]


def _uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Position:
    """Where a job stands: its `event_context` row (pipeline_name, step_id, accumulated_json)."""

    pipeline: str
    step_id: str
    accumulated: Mapping[str, Any]

    def to_row(self) -> dict[str, Any]:
        return {"pipeline_name": self.pipeline, "step_id": self.step_id,
                "accumulated_json": json.dumps(self.accumulated, separators=(",", ":"),
                                               sort_keys=True)}

    @classmethod
    def from_row(cls, pipeline_name: str | None, step_id: str | None,
                 accumulated_json: str | Mapping[str, Any]) -> Position | None:
        """None for a pipeline-instance root row (no step) or a row without a pipeline."""
        if not pipeline_name or not step_id:
            return None
        accumulated = (json.loads(accumulated_json) if isinstance(accumulated_json, str)
                       else accumulated_json)
        return cls(pipeline_name, step_id, accumulated if isinstance(accumulated, dict) else {})

    @property
    def control(self) -> Control:
        return control(self.accumulated)


@dataclass(frozen=True)
class RootContext:
    """A new pipeline-instance root row the dispatcher creates before the dispatch's own row."""

    pipeline: str
    instance_id: str
    accumulated: Mapping[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return (self.pipeline, self.instance_id)


@dataclass(frozen=True)
class Dispatch:
    action: str  # run | skip | fail
    pipeline: str
    step_id: str
    plugin: str
    command: str
    event: Mapping[str, Any]
    context: Mapping[str, Any]
    decision: str
    root: RootContext | None = None

    @property
    def payload(self) -> Mapping[str, Any]:
        payload = self.event.get("payload")
        return payload if isinstance(payload, Mapping) else {}

    @property
    def position(self) -> Position:
        return Position(self.pipeline, self.step_id, self.context)

    @property
    def source_event_id(self) -> str | None:
        value = self.event.get("event_id")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class RunRoot:
    """The synthetic `core.split` root job of a run that enters several steps at once.

    Its payload is the run's trigger `event` and its context the instance root row the
    branches' rows grow from; `decision` is why it started (its route) and `branches` are the
    entry steps it fans out to, `pipeline/step` each (a `call` may enter another pipeline).
    """

    pipeline: str
    event: Mapping[str, Any]
    decision: str
    branches: tuple[str, ...]

    @property
    def result(self) -> dict[str, Any]:
        """What the root job records as its result."""
        return {"branches": list(self.branches)}

    @property
    def reason(self) -> str:
        """Its last status change's reason (the job tree's `decision`)."""
        return f"split into {len(self.branches)} branches"


@dataclass(frozen=True)
class Routing:
    dispatches: tuple[Dispatch, ...] = ()
    notes: tuple[str, ...] = ()
    run: RunRoot | None = None


@dataclass(frozen=True)
class SwitchOutcome:
    matched: bool
    event: Mapping[str, Any]
    result: Mapping[str, Any]


# --- public entry points ------------------------------------------------------------------------


def route(
    ps: PipelineSet,
    position: Position | None,
    plugin: str,
    event: Mapping[str, Any],
    *,
    lenient: bool = False,
    new_id: IdFactory = _uuid,
) -> Routing:
    """Successors of one event emitted by a finished job (see module docstring)."""
    checked = _checked_event(event)
    emitter = _emitter_pipeline(ps, position)
    payload = dict(checked["payload"])
    payload.setdefault("ductile_upstream_plugin", plugin)
    if position is not None:
        payload.setdefault("ductile_upstream_pipeline", position.pipeline)
        payload.setdefault("ductile_upstream_step_id", position.step_id)
    emitted = {**checked, "payload": payload}
    out = _Collector()
    if position is not None and emitter is not None:
        _transitions(ps, emitter, position, emitted, lenient, out)
    source_ctx = position.accumulated if position is not None else {}
    depth = position.control.route_depth if position is not None else 0
    for name in ps.by_trigger.get(checked["type"], ()):
        target = ps.pipelines[name]
        if target.from_plugin is not None and target.from_plugin != plugin:
            continue
        if not _pipeline_if(target, payload, source_ctx, out):
            continue
        why = f"matched on: {checked['type']}"
        _enter(ps, target, emitted, depth, {}, why, 0, new_id, out)
    return out.routing()


def start(
    ps: PipelineSet,
    name: str,
    payload: Mapping[str, Any],
    root_baggage: Mapping[str, Any] | None = None,
    *,
    new_id: IdFactory = _uuid,
) -> Routing:
    """Entry dispatches of `POST /pipeline/{name}`; the caller checked that `name` exists.
    With more than one, `Routing.run` is the run's root job (see RunRoot)."""
    pipeline = ps.pipelines.get(name)
    if pipeline is None:
        raise RoutingError(f"pipeline {name!r} not found")
    if not isinstance(payload, Mapping):
        raise RoutingError("payload must be a JSON object")
    seeded = check_root_baggage(root_baggage)
    event = {"type": pipeline.trigger, "payload": copy.deepcopy(dict(payload)),
             "event_id": new_id()}
    out = _Collector(strict_claims=True)
    why = f"started: {name}"
    _enter(ps, pipeline, event, 0, seeded, why, 0, new_id, out)
    routing = out.routing()
    if len(routing.dispatches) < 2:
        return routing
    branches = tuple(f"{d.pipeline}/{d.step_id}" for d in routing.dispatches)
    return replace(routing, run=RunRoot(name, event, why, branches))


def ingest(
    ps: PipelineSet,
    event: Mapping[str, Any],
    root_baggage: Mapping[str, Any] | None = None,
    *,
    source: str,
    new_id: IdFactory = _uuid,
) -> Routing:
    """Root dispatches of an event that arrived from outside (a relay peer, `source`): every
    pipeline whose `on:` matches its type is entered with the admitted root baggage. Pipelines
    scoped with `from_plugin` are left out: no local plugin emitted this event."""
    checked = _checked_event(event)
    seeded = check_root_baggage(dict(root_baggage or {}))
    out = _Collector()
    for name in ps.by_trigger.get(checked["type"], ()):
        target = ps.pipelines[name]
        if target.from_plugin is not None:
            continue
        if not _pipeline_if(target, checked["payload"], None, out):
            continue
        _enter(ps, target, checked, 0, seeded, f"matched on: {checked['type']} from {source}", 0,
               new_id, out)
    return out.routing()


@dataclass(frozen=True)
class RelayParts:
    """What a `relay:` step sends: the payload (its `with:` projection, else a copy of the
    step's payload), the evaluated dedupe key, and the claimed baggage."""

    payload: dict[str, Any]
    dedupe_key: str | None
    baggage: dict[str, Any]


def relay_parts(ps: PipelineSet, position: Position, event: Mapping[str, Any]) -> RelayParts:
    """Evaluate the relay step at `position` against the event that reached it. Raises
    RoutingError (not a relay step), TemplateError (a `with`/`dedupe_key` path is missing) or
    BaggageError (a claim cannot be satisfied)."""
    node = ps.node(position.pipeline, position.step_id)
    if node is None or node.kind != "relay" or node.relay is None:
        raise RoutingError(f"core.relay node {position.pipeline}/{position.step_id} is not a "
                           "relay step")
    spec = node.relay
    checked = _checked_event(event)
    context = request_context(node.plugin, position)
    scope_payload = merge_context(checked["payload"], context)
    where = {"pipeline": position.pipeline, "step": position.step_id}
    if spec.with_exprs:
        projected = apply_with(WithSpec(spec.with_exprs), scope_payload, context, **where)
        payload = {key: projected[key] for key, _ in spec.with_exprs}
    else:
        payload = copy.deepcopy(dict(checked["payload"]))
    dedupe = None
    if spec.dedupe_key is not None:
        value = apply_with(WithSpec((("dedupe_key", spec.dedupe_key),)), scope_payload, context,
                           **where)["dedupe_key"]
        dedupe = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    baggage: dict[str, Any] = {}
    if spec.baggage is not None:
        baggage = claim(spec.baggage, payload=checked["payload"],
                        context=position.accumulated)
    return RelayParts(payload, dedupe, baggage)


def hooks_for(
    ps: PipelineSet,
    signal: str,
    *,
    plugin: str,
    payload: Mapping[str, Any],
    hook_depth: int = 0,
    new_id: IdFactory = _uuid,
) -> Routing:
    """Dispatches of the `on-hook` pipelines reacting to `signal` from `plugin`'s root job.
    `hook_depth` is how many hook hops led to that job (0 for an ordinary root job)."""
    out = _Collector()
    event = {"type": signal, "payload": copy.deepcopy(dict(payload)), "event_id": new_id(),
             "source": plugin}
    for name in ps.by_hook.get(signal, ()):
        target = ps.pipelines[name]
        if target.from_plugin is not None and target.from_plugin != plugin:
            continue
        if not _pipeline_if(target, event["payload"], None, out):
            continue
        depth = hook_depth + 1
        if depth > ps.hook_max_depth:
            for node_id in target.entries:
                out.fail(target, node_id, event, {},
                         f"hook depth limit reached: {depth} > hook_max_depth {ps.hook_max_depth}")
            continue
        why = f"hook {signal} from {plugin}"
        _enter(ps, target, event, 0, {}, why, depth, new_id, out)
    return out.routing()


def run_switch(ps: PipelineSet, position: Position, event: Mapping[str, Any]) -> SwitchOutcome:
    """Evaluate the step `if:` of a `core.switch` job. Raises ConditionEvalError on a type
    mismatch (the job fails: `core.switch evaluate condition: ...`) and RoutingError when the
    position is not a switch node."""
    node = ps.node(position.pipeline, position.step_id)
    if node is None or node.kind != "switch" or node.condition is None:
        raise RoutingError(f"core.switch node {position.pipeline}/{position.step_id} "
                           f"missing condition")
    checked = _checked_event(event)
    scope = {"payload": checked["payload"],
             "context": request_context(node.plugin, position)}
    matched = evaluate(node.condition, scope)
    kind = SWITCH_TRUE if matched else SWITCH_FALSE
    return SwitchOutcome(matched, {**checked, "type": kind}, {"matched": matched, "event": kind})


def request_context(plugin: str, position: Position | None) -> dict[str, Any]:
    """The request `context`: `ductile_plugin`, the accumulated baggage's top-level keys, then
    `ductile_pipeline`, `ductile_step_id`, `ductile_pipeline_instance_id`,
    `ductile_route_depth` (> 0) and `ductile_route_max_depth` (> 0) inside a pipeline."""
    context: dict[str, Any] = {"ductile_plugin": plugin}
    if position is None:
        return context
    context.update(copy.deepcopy(dict(position.accumulated)))
    ctl = position.control
    context["ductile_pipeline"] = position.pipeline
    context["ductile_step_id"] = position.step_id
    if ctl.pipeline_instance_id:
        context["ductile_pipeline_instance_id"] = ctl.pipeline_instance_id
    if ctl.route_depth > 0:
        context["ductile_route_depth"] = ctl.route_depth
    if ctl.route_max_depth > 0:
        context["ductile_route_max_depth"] = ctl.route_max_depth
    return context


def merge_context(payload: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """`payload` plus every context key it lacks (immediate data wins)."""
    merged = dict(payload)
    for key, value in context.items():
        merged.setdefault(key, copy.deepcopy(value))
    return merged


def events_to_route(events: Sequence[Mapping[str, Any]], result: str | None,
                    position: Position | None) -> list[dict[str, Any]]:
    """The events a successful job routes: each gets `payload.result` when the response had a
    result; a pipeline step that emitted nothing routes `ductile.step.succeeded {result}`."""
    out = []
    for event in events:
        payload = event.get("payload")
        payload = dict(payload) if isinstance(payload, Mapping) else {}
        if result and result.strip():
            payload.setdefault("result", result)
        out.append({**event, "payload": payload})
    if not out and position is not None:
        out.append({"type": STEP_SUCCEEDED, "payload": {"result": result or ""}})
    return out


def skipped_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """A skipped job re-emits its incoming event unchanged (`ductile.step.skipped` when that
    event had an empty payload), so its successors see what it would have seen."""
    payload = event.get("payload")
    if isinstance(payload, Mapping) and payload:
        return dict(event)
    return {**event, "type": STEP_SKIPPED, "payload": {}}


# --- routing internals --------------------------------------------------------------------------


@dataclass
class _Collector:
    strict_claims: bool = False
    dispatches: list[Dispatch] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seen: set[tuple[str, str, str, str]] = field(default_factory=set)

    def add(self, dispatch: Dispatch) -> None:
        instance = control(dispatch.context).pipeline_instance_id or ""
        key = (dispatch.pipeline, dispatch.step_id, instance, dispatch.action)
        if key not in self.seen:
            self.seen.add(key)
            self.dispatches.append(dispatch)

    def fail(self, pipeline: Pipeline, node_id: str, event: Mapping[str, Any],
             context: Mapping[str, Any], reason: str, root: RootContext | None = None) -> None:
        node = pipeline.nodes[node_id]
        self.add(Dispatch("fail", pipeline.name, node_id, node.plugin or "core.call", "handle",
                          event, context, reason, root))

    def routing(self) -> Routing:
        return Routing(tuple(self.dispatches), tuple(self.notes))


def _checked_event(event: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(event, Mapping):
        raise RoutingError("event must be an object with type and payload")
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        raise RoutingError("event.type is required")
    payload = event.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, Mapping):
        raise RoutingError(f"event {kind!r}: payload must be an object")
    return {**event, "payload": payload}


def _emitter_pipeline(ps: PipelineSet, position: Position | None) -> Pipeline | None:
    if position is None:
        return None
    pipeline = ps.pipelines.get(position.pipeline)
    if pipeline is None or position.step_id not in pipeline.nodes:
        # A reload removed the pipeline or step: the job's successors are gone; only `on:`
        # triggers still apply. Not an error: the job itself succeeded.
        return None
    return pipeline


def _transitions(ps: PipelineSet, pipeline: Pipeline, position: Position,
                 event: Mapping[str, Any], lenient: bool, out: _Collector) -> None:
    ctl = position.control
    for edge in pipeline.edges.get(position.step_id, ()):
        if edge.event_type is not None and edge.event_type != event["type"]:
            continue
        if ctl.pipeline_instance_id is None:
            out.notes.append(f"{pipeline.name}/{edge.target}: transition needs a pipeline "
                             f"instance id; the emitting job has none")
            continue
        why = f"{edge.why}: {event['type']}" if edge.why.startswith("after ") else edge.why
        for target, node, via in _expand(ps, pipeline, edge.target, ()):
            decision = why + "".join(f" -> call {c}" for c in via)
            _dispatch(ps, target, node, edge.mode, event, position.accumulated, ctl,
                      ctl.route_depth + 1, decision, None, lenient, out)


def _enter(ps: PipelineSet, pipeline: Pipeline, event: Mapping[str, Any], depth: int,
           seeded: Mapping[str, Any], why: str, hook_depth: int, new_id: IdFactory,
           out: _Collector) -> None:
    """Start a new instance of `pipeline` from an emitter at route depth `depth`."""
    instance = new_id()
    budget = _budget(ps.default_max_depth, depth, pipeline.max_depth)
    ctl = Control(instance, 0, budget, hook_depth)
    root_acc = {**copy.deepcopy(dict(seeded)), CONTROL: control_fields(ctl)}
    root = RootContext(pipeline.name, instance, root_acc)
    for node_id in pipeline.entries:
        for target, node, via in _expand(ps, pipeline, node_id, ()):
            decision = why + "".join(f" -> call {c}" for c in via)
            _dispatch(ps, target, node, "run", event, root_acc, ctl, depth + 1, decision, root,
                      False, out)


def _budget(ceiling: int, start: int, pipeline_budget: int) -> int:
    if pipeline_budget == 0:
        return ceiling
    budget = start + pipeline_budget
    return min(budget, ceiling) if ceiling > 0 else budget


def _expand(ps: PipelineSet, pipeline: Pipeline, node_id: str,
            via: tuple[str, ...]) -> list[tuple[Pipeline, Node, tuple[str, ...]]]:
    """A node, or for a call node the callee's entry nodes (recursively)."""
    node = pipeline.nodes[node_id]
    if node.kind != "call" or node.call is None:
        return [(pipeline, node, via)]
    callee = ps.pipelines[node.call]
    return [found for entry in callee.entries
            for found in _expand(ps, callee, entry, (*via, callee.name))]


def _dispatch(ps: PipelineSet, pipeline: Pipeline, node: Node, mode: str,
              event: Mapping[str, Any], parent: Mapping[str, Any], ctl: Control, depth: int,
              decision: str, root: RootContext | None, lenient: bool, out: _Collector) -> None:
    control_now = Control(ctl.pipeline_instance_id, depth, ctl.route_max_depth, ctl.hook_depth)
    bare = {**copy.deepcopy(dict(parent)), CONTROL: control_fields(control_now)}
    if ctl.route_max_depth > 0 and depth > ctl.route_max_depth:
        out.fail(pipeline, node.id, event, bare,
                 f"depth limit reached: {depth} > max_depth {ctl.route_max_depth}", root)
        return
    payload = event["payload"]
    try:
        updates: dict[str, Any] = {}
        if node.baggage is not None:
            updates = claim(node.baggage, payload=payload, context=parent,
                            lenient=lenient or mode == "skip")
        updates[CONTROL] = {"route_depth": depth}
        accumulated = accrete(parent, updates)
        check_size(accumulated)
    except BaggageError as exc:
        reason = f"apply baggage claims for {pipeline.name}:{node.id}: {exc}"
        if out.strict_claims and isinstance(exc, ContextTooLarge):
            # Over the cap is a size refusal (API 413) whether the root baggage alone or the
            # entry step's claims on top of it pass 1 MiB.
            raise ContextTooLarge(exc.actual, exc.limit) from None
        if out.strict_claims:
            raise BaggageError(reason) from None
        out.fail(pipeline, node.id, event, bare, reason, root)
        return
    position = Position(pipeline.name, node.id, accumulated)
    if mode == "run" and node.with_spec is not None:
        context = request_context(node.plugin, position)
        try:
            remapped = apply_with(node.with_spec, merge_context(payload, context), context,
                                  pipeline=pipeline.name, step=node.id)
        except TemplateError as exc:
            out.fail(pipeline, node.id, event, accumulated, str(exc), root)
            return
        keys = {key for key, _ in node.with_spec.entries}
        payload = {**payload, **{k: v for k, v in remapped.items() if k in keys}}
    out.add(Dispatch(mode, pipeline.name, node.id, node.plugin, "handle",
                     {**event, "payload": payload}, accumulated, decision, root))


def _pipeline_if(pipeline: Pipeline, payload: Mapping[str, Any],
                 context: Mapping[str, Any] | None, out: _Collector) -> bool:
    if pipeline.condition is None:
        return True
    scope: dict[str, Any] = {"payload": payload}
    if context is not None:
        scope["context"] = context
    try:
        if evaluate(pipeline.condition, scope):
            return True
        out.notes.append(f"pipeline {pipeline.name!r} not started: pipeline if false")
    except ConditionEvalError as exc:
        out.notes.append(f"pipeline {pipeline.name!r} not started: pipeline if error: {exc}")
    return False
