"""Compile `pipelines:` entries into a PipelineSet: nodes, edges, entries, depth budgets.

Long (about 630 lines) because it is one pass: every step form (`uses`, `call`, `split`, `if`,
`relay`, hooks) is checked here so that a single PipelineCompileError can list every problem of
every file at once.

    compile_pipelines(sources, catalog, *, default_max_depth, hook_max_depth) -> PipelineSet

`sources` holds every raw `pipelines:` entry with the config file that held it (any object with
`file`, `index`, `raw`, e.g. `ductile.config.schema.PipelineSource`). `catalog` maps each enabled
plugin (and alias) to its command names; a `uses` step runs the plugin's `handle`.

Every problem found is collected; one PipelineCompileError lists them all, each message naming
the file, the pipeline and the step (`pipelines.yaml: pipelines[0] "ingest": steps[1] (id
"store"): unknown plugin "stor"`). Pure: no I/O.

The graph (what docs/pipelines.md explains to users):

* A `uses` step is a node running `<plugin>/handle`; a `relay` step a `core.relay` node; a
  `call` step a call node that no job runs: routing into it enters the callee's entry nodes.
* A step with `if:` gets a switch node `<id>__switch` (`core.switch`) in front. For `uses` and
  `relay` steps the switch's `ductile.switch.true` runs the step and `ductile.switch.false`
  records the step as skipped (a skipped job), whose successors then run. For `call`, `steps`
  and `split` the false branch bypasses the block to its successors. (The Go original ignored
  `if` on `steps`/`split`; we honour it.)
* Sequences: every exit of step N feeds every entry of step N+1 on any event, so a step that
  emits three events runs its successor three times. `split` branches all start from the same
  input; their exits all feed the next step, which therefore runs once per branch (no join).
* `call` does not return (as in the original): steps after an unguarded `call` are unreachable,
  reported in `PipelineSet.warnings`. Baggage does flow into the callee (a difference).
* Depth budget of a pipeline: `max_depth` when set (0 = unlimited), else the longest path in
  nodes (switch nodes count, a call counts its callee's depth). `default_max_depth` is the
  service-wide ceiling on the route depth of a whole chain of pipelines (0 = none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ductile.config.durations import DurationError, parse_duration
from ductile.config.schema import RELAY_JOB
from ductile.errors import (
    BaggageError,
    ConditionError,
    PipelineCompileError,
    TemplateError,
)
from ductile.router.baggage import BaggageSpec, parse_baggage
from ductile.router.conditions import Condition, parse_condition
from ductile.router.templates import Template, WithSpec, parse_template, parse_with

SWITCH_PLUGIN = "core.switch"
RELAY_PLUGIN = RELAY_JOB  # the synthetic job of a relay step (config.schema.RELAY_JOB)
# The synthetic root job of a `POST /pipeline/{name}` run that enters more than one step at
# once (a leading `split`). The store's tree reads recognise it by this name
# (store.tree.SPLIT_ROOT_PLUGIN, spelled there too so this pure module need not load the store).
SPLIT_PLUGIN = "core.split"
SWITCH_TRUE = "ductile.switch.true"
SWITCH_FALSE = "ductile.switch.false"
HOOK_SIGNALS = ("job.completed", "job.failed", "job.timed_out")
DEFAULT_TIMEOUT = 30.0
DEFAULT_HOOK_MAX_DEPTH = 4
PIPELINE_KEYS = ("name", "on", "on-hook", "from_plugin", "if", "max_depth", "execution_mode",
                 "timeout", "steps")
STEP_KEYS = ("id", "uses", "call", "relay", "steps", "split", "if", "with", "baggage")
STEP_KINDS = ("uses", "call", "relay", "steps", "split")
RELAY_KEYS = ("to", "event", "dedupe_key", "with", "baggage")
_MODES = {"asynchronous": "asynchronous", "async": "asynchronous",
          "synchronous": "synchronous", "sync": "synchronous"}


class SourceEntry(Protocol):
    file: str
    index: int
    raw: Any


@dataclass(frozen=True)
class RelaySpec:
    to: str
    event: str
    dedupe_key: Template | None
    with_exprs: tuple[tuple[str, Template], ...]
    baggage: BaggageSpec | None


@dataclass(frozen=True)
class Node:
    """One routable step. `kind` is uses | switch | relay | call."""

    id: str
    kind: str
    plugin: str
    at: str
    with_spec: WithSpec | None = None
    baggage: BaggageSpec | None = None
    condition: Condition | None = None
    call: str | None = None
    relay: RelaySpec | None = None
    guards: str | None = None  # a switch node: the step id it guards


@dataclass(frozen=True)
class Edge:
    """`source` emitting an event (of `event_type`, or any when None) dispatches `target`.
    `mode` is run or skip; `why` starts the human-readable decision."""

    source: str
    event_type: str | None
    target: str
    mode: str
    why: str


@dataclass(frozen=True)
class Pipeline:
    name: str
    file: str
    index: int
    on: str | None
    on_hook: str | None
    from_plugin: str | None
    condition: Condition | None
    max_depth: int  # the budget: explicit, or computed; 0 = unlimited
    computed_depth: int
    execution_mode: str
    timeout: float
    nodes: Mapping[str, Node]
    edges: Mapping[str, tuple[Edge, ...]]
    entries: tuple[str, ...]
    terminal_steps: frozenset[str]

    @property
    def trigger(self) -> str:
        """The event type `POST /pipeline/{name}` uses."""
        return self.on or "api.pipeline.trigger"

    @property
    def uses_relay(self) -> bool:
        return any(n.kind == "relay" for n in self.nodes.values())


@dataclass(frozen=True)
class PipelineSet:
    """Every compiled pipeline plus the indexes routing needs."""

    pipelines: Mapping[str, Pipeline]
    by_trigger: Mapping[str, tuple[str, ...]]
    by_hook: Mapping[str, tuple[str, ...]]
    default_max_depth: int
    hook_max_depth: int
    warnings: tuple[str, ...] = ()

    def node(self, pipeline: str, step_id: str) -> Node | None:
        found = self.pipelines.get(pipeline)
        return found.nodes.get(step_id) if found else None


def compile_pipelines(
    sources: Sequence[SourceEntry],
    catalog: Mapping[str, Iterable[str]],
    *,
    default_max_depth: int,
    hook_max_depth: int,
    relay_instances: Iterable[str] | None = None,
) -> PipelineSet:
    """Compile every source entry or raise one PipelineCompileError listing every problem.

    `relay_instances` are the enabled `instances:` names a `relay.to` may name (None: not
    checked, for callers that compile without a config)."""
    problems: list[str] = []
    if default_max_depth < 0:
        problems.append(f"default max_depth {default_max_depth} must be >= 0 (0 means no "
                        f"ceiling)")
    commands = {name: frozenset(cmds) for name, cmds in catalog.items()}
    drafts: dict[str, _Draft] = {}
    for source in sources:
        draft = _compile_one(source, commands, problems)
        if draft is None:
            continue
        if draft.name in drafts:
            other = drafts[draft.name]
            problems.append(f"{draft.where}: duplicate pipeline name {draft.name!r} (first "
                            f"defined in {other.file} pipelines[{other.index}])")
            continue
        drafts[draft.name] = draft
    _check_calls(drafts, problems)
    if not problems:
        _check_hook_cycles(drafts, problems)
    if problems:
        raise PipelineCompileError(problems)
    depths = _computed_depths(drafts)
    pipelines = {name: d.finish(depths[name]) for name, d in drafts.items()}
    if relay_instances is not None:
        known = set(relay_instances)
        unknown = [f"{p.file} pipelines[{p.index}] ({p.name}): {n.at}: relay.to names "
                   f"{n.relay.to!r}, which is not an enabled relay instance (instances: "
                   f"{', '.join(sorted(known)) or 'none'})"
                   for p in pipelines.values() for n in p.nodes.values()
                   if n.relay is not None and n.relay.to not in known]
        if unknown:
            raise PipelineCompileError(unknown)
    warnings = tuple(w for d in drafts.values() for w in d.warnings)
    return PipelineSet(
        pipelines=pipelines,
        by_trigger=_index(pipelines, lambda p: p.on),
        by_hook=_index(pipelines, lambda p: p.on_hook),
        default_max_depth=default_max_depth,
        hook_max_depth=hook_max_depth if hook_max_depth > 0 else DEFAULT_HOOK_MAX_DEPTH,
        warnings=warnings,
    )


# --- one pipeline -------------------------------------------------------------------------------


@dataclass
class _Fragment:
    entries: list[str]
    exits: list[tuple[str, str | None, str]]  # (node, event type or None, why)


@dataclass
class _Draft:
    """A pipeline being compiled: mutable while its steps are walked, then `finish`ed."""

    name: str
    file: str
    index: int
    on: str | None = None
    on_hook: str | None = None
    from_plugin: str | None = None
    condition: Condition | None = None
    explicit_max_depth: int | None = None
    execution_mode: str = "asynchronous"
    timeout: float = DEFAULT_TIMEOUT
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: dict[str, list[Edge]] = field(default_factory=dict)
    entries: list[str] = field(default_factory=list)
    exits: list[str] = field(default_factory=list)
    step_ids: set[str] = field(default_factory=set)
    reserved_ids: set[str] = field(default_factory=set)
    counter: int = 0
    relay_steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}: pipelines[{self.index}] {self.name!r}"

    def refuse(self, at: str, message: str) -> None:
        self.problems.append(f"{self.where}: {at}: {message}" if at else
                             f"{self.where}: {message}")

    def add_edge(self, edge: Edge) -> None:
        self.edges.setdefault(edge.source, []).append(edge)

    def calls(self) -> list[str]:
        return [n.call for n in self.nodes.values() if n.kind == "call" and n.call]

    def finish(self, computed: int) -> Pipeline:
        budget = self.explicit_max_depth if self.explicit_max_depth is not None else computed
        return Pipeline(
            name=self.name, file=self.file, index=self.index, on=self.on, on_hook=self.on_hook,
            from_plugin=self.from_plugin, condition=self.condition, max_depth=budget,
            computed_depth=computed, execution_mode=self.execution_mode, timeout=self.timeout,
            nodes=dict(self.nodes), edges={k: tuple(v) for k, v in self.edges.items()},
            entries=tuple(self.entries), terminal_steps=frozenset(self.exits),
        )


def _compile_one(source: SourceEntry, commands: Mapping[str, frozenset[str]],
                 problems: list[str]) -> _Draft | None:
    raw, file, index = source.raw, source.file, source.index
    if not isinstance(raw, Mapping):
        problems.append(f"{file}: pipelines[{index}]: must be a mapping with name, on and steps")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{file}: pipelines[{index}]: name is required (a non-empty string)")
        return None
    draft = _Draft(name=name, file=file, index=index)
    if True in raw and "on" not in raw:
        # A YAML 1.1 loader reads the key `on` as boolean true; ours (config/load.py) does not,
        # but a caller with plain yaml.safe_load should not be punished for it.
        raw = {("on" if key is True else key): value for key, value in raw.items()}
    _pipeline_keys(draft, raw, commands)
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps:
        draft.refuse("steps", "steps must be a non-empty list")
    else:
        draft.reserved_ids = _explicit_ids(steps)
        fragment = _sequence(draft, steps, "steps", commands)
        draft.entries = fragment.entries
        draft.exits = sorted({node for node, _, _ in fragment.exits})
    problems.extend(draft.problems)
    return draft


def _pipeline_keys(draft: _Draft, raw: Mapping[str, Any],
                   commands: Mapping[str, frozenset[str]]) -> None:
    for key in raw:
        if key not in PIPELINE_KEYS:
            draft.refuse("", f"unknown key {key!r} (allowed: {', '.join(PIPELINE_KEYS)})")
    on, hook = raw.get("on"), raw.get("on-hook")
    if on is None and hook is None:
        draft.refuse("", "on or on-hook is required")
    elif on is not None and hook is not None:
        draft.refuse("", "on and on-hook are mutually exclusive")
    elif on is not None:
        if isinstance(on, str) and on.strip():
            draft.on = on
        else:
            draft.refuse("on", "on must be an event type such as file.changed")
    elif hook not in HOOK_SIGNALS:
        draft.refuse("on-hook", f"on-hook {hook!r} must be one of {', '.join(HOOK_SIGNALS)}")
    else:
        draft.on_hook = hook
    plugin = raw.get("from_plugin")
    if plugin is not None:
        if not isinstance(plugin, str) or plugin not in commands:
            draft.refuse("from_plugin", f"from_plugin {plugin!r} is not an enabled plugin")
        else:
            draft.from_plugin = plugin
    if "if" in raw:
        roots = ("payload",) if draft.on_hook else ("payload", "context")
        try:
            draft.condition = parse_condition(raw["if"], at="if", roots=roots)
        except ConditionError as exc:
            hint = (" (context is not available at hook time)"
                    if draft.on_hook and "context" in str(exc) else "")
            draft.refuse("", f"{exc}{hint}")
    _limits(draft, raw)


def _limits(draft: _Draft, raw: Mapping[str, Any]) -> None:
    if "max_depth" in raw:
        depth = raw["max_depth"]
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            draft.refuse("max_depth", "max_depth must be an integer >= 0 (0 means unlimited)")
        else:
            draft.explicit_max_depth = depth
    if "execution_mode" in raw:
        mode = raw["execution_mode"]
        if not isinstance(mode, str) or mode not in _MODES:
            draft.refuse("execution_mode", f"execution_mode {mode!r} must be asynchronous or "
                                           f"synchronous (async/sync accepted)")
        else:
            draft.execution_mode = _MODES[mode]
    if "timeout" in raw:
        try:
            seconds = parse_duration(raw["timeout"])
        except DurationError as exc:
            draft.refuse("timeout", str(exc))
        else:
            if seconds <= 0:
                draft.refuse("timeout", "timeout must be a positive duration such as 30s")
            else:
                draft.timeout = seconds


def _explicit_ids(steps: list[Any]) -> set[str]:
    found: set[str] = set()
    for step in steps:
        if isinstance(step, Mapping):
            if isinstance(step.get("id"), str):
                found.add(step["id"])
            for key in ("steps", "split"):
                if isinstance(step.get(key), list):
                    found |= _explicit_ids(step[key])
    return found


def _sequence(draft: _Draft, steps: list[Any], at: str,
              commands: Mapping[str, frozenset[str]]) -> _Fragment:
    fragments = [_step(draft, raw, f"{at}[{i}]", commands) for i, raw in enumerate(steps)]
    for i, (before, after) in enumerate(zip(fragments, fragments[1:], strict=False)):
        if not before.exits:
            draft.warnings.append(f"{draft.where}: {at}[{i + 1}] is unreachable: the step before "
                                  f"it is a call, and call does not return")
        for node, event_type, why in before.exits:
            for target in after.entries:
                draft.add_edge(Edge(node, event_type, target, "run", why))
    return _Fragment(fragments[0].entries, fragments[-1].exits)


def _step(draft: _Draft, raw: Any, at: str,
          commands: Mapping[str, frozenset[str]]) -> _Fragment:
    if not isinstance(raw, Mapping):
        draft.refuse(at, "a step must be a mapping with one of uses, call, relay, steps, split")
        return _Fragment([], [])
    step_id = _step_id(draft, raw, at)
    label = f"{at} (id {step_id!r})"
    for key in raw:
        if key not in STEP_KEYS:
            draft.refuse(label, f"unknown key {key!r} (allowed: {', '.join(STEP_KEYS)})")
    kinds = [k for k in STEP_KINDS if k in raw]
    if len(kinds) != 1:
        draft.refuse(label, "step must define exactly one of uses, call, relay, steps, or split")
        return _Fragment([], [])
    kind = kinds[0]
    for only in ("with", "baggage"):
        if only in raw and kind != "uses":
            draft.refuse(label, f"{only} is only supported on uses steps")
    condition = None
    if "if" in raw:
        try:
            condition = parse_condition(raw["if"], at="if")
        except ConditionError as exc:
            draft.refuse(label, str(exc))
    if kind in ("steps", "split"):
        inner = _block(draft, raw[kind], kind, f"{at}.{kind}", label, commands)
    else:
        inner = _leaf(draft, raw, kind, step_id, label, commands)
    if condition is None:
        return inner
    return _guard(draft, step_id, kind, condition, label, inner)


def _block(draft: _Draft, items: Any, kind: str, at: str, label: str,
           commands: Mapping[str, frozenset[str]]) -> _Fragment:
    if not isinstance(items, list) or not items:
        draft.refuse(label, f"{kind} must be a non-empty list of steps")
        return _Fragment([], [])
    if kind == "steps":
        return _sequence(draft, items, at, commands)
    branches = [_step(draft, item, f"{at}[{i}]", commands) for i, item in enumerate(items)]
    return _Fragment([e for b in branches for e in b.entries],
                     [x for b in branches for x in b.exits])


def _leaf(draft: _Draft, raw: Mapping[str, Any], kind: str, step_id: str, label: str,
          commands: Mapping[str, frozenset[str]]) -> _Fragment:
    if kind == "uses":
        node = _uses(draft, raw, step_id, label, commands)
    elif kind == "call":
        target = raw["call"]
        if not isinstance(target, str) or not target:
            draft.refuse(label, "call must name a pipeline")
        node = Node(step_id, "call", "", label, call=target if isinstance(target, str) else None)
    else:
        node = Node(step_id, "relay", RELAY_PLUGIN, label, relay=_relay(draft, raw["relay"], label))
        draft.relay_steps.append(label)
    draft.nodes[step_id] = node
    exits = [] if kind == "call" else [(step_id, None, f"after {step_id}")]
    return _Fragment([step_id], exits)


def _uses(draft: _Draft, raw: Mapping[str, Any], step_id: str, label: str,
          commands: Mapping[str, frozenset[str]]) -> Node:
    plugin = raw["uses"]
    if not isinstance(plugin, str) or plugin not in commands:
        known = ", ".join(sorted(commands)) or "none"
        draft.refuse(label, f"unknown plugin {plugin!r} (enabled plugins: {known})")
    elif "handle" not in commands[plugin]:
        draft.refuse(label, f"plugin {plugin!r} does not support command \"handle\", which a "
                            f"uses step runs")
    with_spec = baggage = None
    if "with" in raw:
        try:
            with_spec = parse_with(raw["with"])
        except TemplateError as exc:
            draft.refuse(label, f"invalid with: {exc}")
    if "baggage" in raw:
        try:
            baggage = parse_baggage(raw["baggage"])
        except BaggageError as exc:
            draft.refuse(label, f"invalid baggage: {exc}")
    return Node(step_id, "uses", plugin if isinstance(plugin, str) else "", label,
                with_spec=with_spec, baggage=baggage)


def _relay(draft: _Draft, raw: Any, label: str) -> RelaySpec | None:
    if not isinstance(raw, Mapping):
        draft.refuse(label, "relay must be a mapping with to and event")
        return None
    for key in raw:
        if key not in RELAY_KEYS:
            draft.refuse(label, f"unknown relay key {key!r} (allowed: {', '.join(RELAY_KEYS)})")
    to, event = raw.get("to"), raw.get("event")
    if not isinstance(to, str) or not to:
        draft.refuse(label, "relay.to is required")
    if not isinstance(event, str) or not event:
        draft.refuse(label, "relay.event is required")
    try:
        dedupe = _expression(raw["dedupe_key"]) if "dedupe_key" in raw else None
        with_raw = raw.get("with", {})
        if not isinstance(with_raw, Mapping):
            raise TemplateError("relay.with must be a mapping of key to path or template")
        withs = tuple((str(k), _expression(v)) for k, v in sorted(with_raw.items(), key=str))
        baggage = parse_baggage(raw["baggage"]) if "baggage" in raw else None
    except (TemplateError, BaggageError) as exc:
        draft.refuse(label, f"invalid relay: {exc}")
        return None
    return RelaySpec(str(to), str(event), dedupe, withs, baggage)


def _expression(raw: Any) -> Template:
    """A relay expression: a template, or a brace-free bare path that must exist."""
    if not isinstance(raw, str) or not raw:
        raise TemplateError(f"relay expression {raw!r} must be a path or a template string")
    return parse_template(raw if "{" in raw or "}" in raw else "{" + raw + "}")


def _guard(draft: _Draft, step_id: str, kind: str, condition: Condition, label: str,
           inner: _Fragment) -> _Fragment:
    switch_id = f"{step_id}__switch"
    draft.nodes[switch_id] = Node(switch_id, "switch", SWITCH_PLUGIN, label,
                                  condition=condition, guards=step_id)
    for target in inner.entries:
        draft.add_edge(Edge(switch_id, SWITCH_TRUE, target, "run", "if true"))
    if kind in ("uses", "relay"):
        draft.add_edge(Edge(switch_id, SWITCH_FALSE, step_id, "skip", "skipped: if false"))
        return _Fragment([switch_id], inner.exits)
    bypass = (switch_id, SWITCH_FALSE, f"if false: {kind} {step_id!r} bypassed")
    return _Fragment([switch_id], [*inner.exits, bypass])


def _step_id(draft: _Draft, raw: Mapping[str, Any], at: str) -> str:
    explicit = raw.get("id")
    if explicit is not None:
        if not isinstance(explicit, str) or not explicit.strip():
            draft.refuse(at, "id must be a non-empty string")
        elif explicit.endswith("__switch"):
            draft.refuse(at, f"id {explicit!r} ends with __switch, reserved for if: nodes")
        elif explicit in draft.step_ids:
            draft.refuse(at, f"duplicate step id {explicit!r}")
        else:
            draft.step_ids.add(explicit)
            return explicit
    while True:
        draft.counter += 1
        auto = f"step_{draft.counter}"
        if auto not in draft.reserved_ids and auto not in draft.step_ids:
            draft.step_ids.add(auto)
            return auto


# --- across pipelines ---------------------------------------------------------------------------


def _check_calls(drafts: Mapping[str, _Draft], problems: list[str]) -> None:
    for draft in drafts.values():
        for node in draft.nodes.values():
            if node.kind == "call" and node.call and node.call not in drafts:
                problems.append(f"{draft.where}: {node.at}: pipeline {draft.name!r} references "
                                f"unknown pipeline {node.call!r}")
    graph = {name: [c for c in d.calls() if c in drafts] for name, d in drafts.items()}
    cycle = _find_cycle(graph)
    if cycle:
        where = drafts[cycle[0]].where
        problems.append(f"{where}: pipeline call cycle detected: {' -> '.join(cycle)}")


def _check_hook_cycles(drafts: Mapping[str, _Draft], problems: list[str]) -> None:
    """A hook pipeline reacting to plugin A that runs plugin B, and one reacting to B that runs
    A, would feed each other's failures forever: refused."""
    graph: dict[str, list[str]] = {}
    for draft in drafts.values():
        if draft.on_hook and draft.from_plugin:
            graph.setdefault(draft.from_plugin, []).extend(sorted(_plugins_run(draft, drafts)))
    cycle = _find_cycle(graph)
    if cycle:
        names = [d.where for d in drafts.values() if d.on_hook and d.from_plugin in cycle]
        problems.append(f"{names[0]}: reciprocal hook cycle: {' -> '.join(cycle)} (hook "
                        f"pipelines from_plugin {cycle[0]!r} run {cycle[1]!r} and back); break "
                        f"the cycle or the hooks would fire each other without end")


def _plugins_run(draft: _Draft, drafts: Mapping[str, _Draft],
                 seen: frozenset[str] = frozenset()) -> set[str]:
    found = {n.plugin for n in draft.nodes.values() if n.kind == "uses" and n.plugin}
    for callee in draft.calls():
        if callee in drafts and callee not in seen:
            found |= _plugins_run(drafts[callee], drafts, seen | {draft.name})
    return found


def _find_cycle(graph: Mapping[str, list[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _computed_depths(drafts: Mapping[str, _Draft]) -> dict[str, int]:
    """Longest path in nodes per pipeline; a call node weighs its callee's depth. Calls are
    acyclic here (checked before), and so is each pipeline's graph (built from sequences)."""
    depths: dict[str, int] = {}

    def pipeline_depth(name: str) -> int:
        if name not in depths:
            draft = drafts[name]
            memo: dict[str, int] = {}
            depths[name] = max([_node_depth(draft, n, memo, pipeline_depth)
                                for n in draft.entries] or [1])
        return depths[name]

    for name in drafts:
        pipeline_depth(name)
    return depths


def _node_depth(draft: _Draft, node_id: str, memo: dict[str, int], callee: Any) -> int:
    if node_id not in memo:
        node = draft.nodes[node_id]
        weight = callee(node.call) if node.kind == "call" and node.call else 1
        after = [_node_depth(draft, e.target, memo, callee) for e in draft.edges.get(node_id, [])
                 if e.target != node_id]
        memo[node_id] = weight + max(after or [0])
    return memo[node_id]


def _index(pipelines: Mapping[str, Pipeline], key: Any) -> dict[str, tuple[str, ...]]:
    index: dict[str, list[str]] = {}
    for name in sorted(pipelines):
        value = key(pipelines[name])
        if value:
            index.setdefault(value, []).append(name)
    return {k: tuple(v) for k, v in index.items()}

