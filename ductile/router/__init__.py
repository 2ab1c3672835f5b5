"""Pipelines: the DSL compiler, the condition language, `with:` templates, baggage, routing.

Everything here is pure (no I/O, no trio); the dispatcher wires it to the store and the queue.
See `engine` for the integration contract and docs/pipelines.md for the user guide.
"""

from __future__ import annotations

from ductile.router.baggage import MAX_CONTEXT_BYTES, BaggageSpec, parse_baggage
from ductile.router.conditions import Condition, evaluate, parse_condition
from ductile.router.dsl import (
    RELAY_PLUGIN,
    SPLIT_PLUGIN,
    SWITCH_FALSE,
    SWITCH_PLUGIN,
    SWITCH_TRUE,
    Node,
    Pipeline,
    PipelineSet,
    compile_pipelines,
)
from ductile.router.engine import (
    API_TRIGGER,
    STEP_SKIPPED,
    STEP_SUCCEEDED,
    Dispatch,
    Position,
    RootContext,
    Routing,
    RunRoot,
    SwitchOutcome,
    events_to_route,
    hooks_for,
    merge_context,
    request_context,
    route,
    run_switch,
    skipped_event,
    start,
)
from ductile.router.templates import WithSpec, apply_with, parse_with

__all__ = [
    "API_TRIGGER",
    "MAX_CONTEXT_BYTES",
    "RELAY_PLUGIN",
    "SPLIT_PLUGIN",
    "STEP_SKIPPED",
    "STEP_SUCCEEDED",
    "SWITCH_FALSE",
    "SWITCH_PLUGIN",
    "SWITCH_TRUE",
    "BaggageSpec",
    "Condition",
    "Dispatch",
    "Node",
    "Pipeline",
    "PipelineSet",
    "Position",
    "RootContext",
    "Routing",
    "RunRoot",
    "SwitchOutcome",
    "WithSpec",
    "apply_with",
    "compile_pipelines",
    "evaluate",
    "events_to_route",
    "hooks_for",
    "merge_context",
    "parse_baggage",
    "parse_condition",
    "parse_with",
    "request_context",
    "route",
    "run_switch",
    "skipped_event",
    "start",
]
