"""The dispatcher's side of pipelines: turn router decisions into queue successors.

The router (`ductile.router`) is pure: given where a finished job stands and what it emitted, it
answers which jobs follow. This module is the thin layer between it and the queue:

* `read_step` reads a claimed job's place in a pipeline from the context row the claim already
  loaded (no extra database hop) and the job's stored event envelope.
* `successors` turns dispatches into `Successor`s, which `Queue.complete_and_claim` inserts in
  the same transaction that ends the finished job: a step's completion and its successors
  commit together or not at all, and routing costs no database round trip of its own.

Every routed job is a queued job, including a step the router decided to skip or fail (a false
`if:`, the depth limit, a missing baggage source): its envelope carries the verdict under
`ductile_verdict`, and when the dispatcher claims it, it records the verdict (skipped or failed,
with the decision as the reason) instead of spawning the plugin, and a skipped step then routes
its own successors. So the ledger holds one row per step, each with the decision that made it,
and successors of a skipped step hang under it in the job tree. The routing decision of every
routed job (`after fetch: order.placed`, `if true`, ...) is kept under `ductile_decision`; both
keys are stripped before a plugin sees the event.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ductile.router.engine import Dispatch, Position, hooks_for
from ductile.store.context import ContextSpec, EventContext
from ductile.store.queue import Successor

if TYPE_CHECKING:
    from ductile.router.dsl import PipelineSet
    from ductile.store.jobs import Job

VERDICT_KEY = "ductile_verdict"
DECISION_KEY = "ductile_decision"
RESERVED_KEYS = (VERDICT_KEY, DECISION_KEY)
ROUTE_SUBMITTER = "route"
HOOK_SUBMITTER = "hook"


@dataclass(frozen=True)
class Step:
    """A claimed job's place in a pipeline.

    `position` is None for a job outside any pipeline (or a pipeline-instance root row);
    `event` is the incoming event envelope without the reserved keys (None when the payload is
    not an envelope); `verdict` is (action, decision) for a step routed as skip or fail;
    `decision` is why the router ran it.
    """

    position: Position | None
    context_id: str | None
    event: dict[str, Any] | None
    verdict: tuple[str, str] | None = None
    decision: str | None = None

    @property
    def in_pipeline(self) -> bool:
        return self.context_id is not None


def read_step(payload: Any, context: EventContext | None) -> Step:
    """The step of a job whose decoded payload is `payload` and whose context row is `context`."""
    position = None
    if context is not None:
        position = Position.from_row(context.pipeline_name, context.step_id, context.accumulated)
    event: dict[str, Any] | None = None
    verdict: tuple[str, str] | None = None
    decision: str | None = None
    if isinstance(payload, Mapping) and isinstance(payload.get("type"), str):
        event = {k: v for k, v in payload.items() if k not in RESERVED_KEYS}
        marked = payload.get(VERDICT_KEY)
        if (isinstance(marked, Mapping) and marked.get("action") in ("skip", "fail")
                and context is not None):
            verdict = (str(marked["action"]), str(marked.get("decision") or marked["action"]))
        if isinstance(payload.get(DECISION_KEY), str):
            decision = payload[DECISION_KEY]
    return Step(position, context.id if context is not None else None, event, verdict, decision)


def stamp_event(event: Mapping[str, Any], source: str, new_id: Callable[[], str]) -> dict[str, Any]:
    """Fill what the core owns on an emitted event when the plugin left it out: `event_id`,
    `source` (the emitting plugin) and `timestamp` (RFC 3339, UTC)."""
    stamped = dict(event)
    if not isinstance(stamped.get("event_id"), str) or not stamped["event_id"]:
        stamped["event_id"] = new_id()
    stamped.setdefault("source", source)
    if not stamped.get("timestamp"):
        stamped["timestamp"] = (datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                                .replace("+00:00", "Z"))
    return stamped


def successors(
    dispatches: Iterable[Dispatch],
    parent_context_id: str | None,
    max_attempts: Callable[[str], int],
    *,
    submitted_by: str = ROUTE_SUBMITTER,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
) -> list[Successor]:
    """One queue successor per dispatch, with its event_context row.

    A dispatch that starts a new pipeline instance (`root` set) hangs its row under a new
    instance-root row, created once per instance and shared (same pre-assigned id) by every
    entry of that instance. Two dispatches of one event to the same plugin and command (split
    branches, or two guarded steps side by side) would collide on the redelivery index
    (parent job, source event, plugin, command), so every such dispatch after the first gets
    `<event_id>@<pipeline>/<step>` as its source event id.
    """
    roots: dict[tuple[str, str], ContextSpec] = {}
    seen: set[tuple[str | None, str, str]] = set()
    out: list[Successor] = []
    for dispatch in dispatches:
        if dispatch.root is not None:
            root = roots.get(dispatch.root.key)
            if root is None:
                root = roots[dispatch.root.key] = ContextSpec(
                    None, dispatch.root.pipeline, "", dispatch.root.accumulated, id=new_id())
            context = ContextSpec(None, dispatch.pipeline, dispatch.step_id, dispatch.context,
                                  parent=root)
        else:
            context = ContextSpec(parent_context_id, dispatch.pipeline, dispatch.step_id,
                                  dispatch.context)
        source = dispatch.source_event_id
        if (source, dispatch.plugin, dispatch.command) in seen:
            source = f"{source}@{dispatch.pipeline}/{dispatch.step_id}"
        seen.add((dispatch.source_event_id, dispatch.plugin, dispatch.command))
        envelope: dict[str, Any] = {**dispatch.event, DECISION_KEY: dispatch.decision}
        if dispatch.action != "run":
            envelope[VERDICT_KEY] = {"action": dispatch.action, "decision": dispatch.decision}
        dedupe = dispatch.event.get("dedupe_key")
        out.append(Successor(
            plugin=dispatch.plugin,
            command=dispatch.command,
            payload=envelope,
            submitted_by=submitted_by,
            source_event_id=source,
            context=context,
            max_attempts=max_attempts(dispatch.plugin),
            dedupe_key=dedupe if isinstance(dedupe, str) and dispatch.action == "run" else None,
        ))
    return out


def hook_payload(job_id: str, plugin: str, command: str, status: str, *,
                 result: str | None, reason: str | None, error: str | None,
                 recovery: bool = False) -> dict[str, Any]:
    """The payload of a `job.completed` / `job.failed` / `job.timed_out` hook event;
    `recovery: true` marks a job that crash recovery buried dead."""
    payload: dict[str, Any] = {"job_id": job_id, "plugin": plugin, "command": command,
                               "status": status}
    if status == "succeeded":
        payload["result"] = result or ""
        return payload
    payload["reason"] = reason or status
    if error:
        payload["error"] = error
    if recovery:
        payload["recovery"] = True
    return payload


def hook_successors(
    pipelines: PipelineSet,
    job: Job,
    status: str,
    *,
    notify: bool,
    max_attempts: Callable[[str], int],
    result: str | None,
    reason: str | None,
    error: str | None,
    recovery: bool = False,
) -> tuple[list[Successor], tuple[str, ...]]:
    """The `on-hook` pipeline jobs the end of `job` fires, and the router's notes.

    Only a root job (no event context: pipeline steps never fire hooks, so hook pipelines
    cannot feed themselves that way) of a plugin with notify_on_complete (`notify`) fires.
    Shared by the dispatcher (a job it ran ended) and boot (crash recovery buried a job dead),
    so both write the same payload and successors. Raises RouterError when routing fails.
    """
    if job.event_context_id or not notify or not pipelines.by_hook:
        return [], ()
    payload = hook_payload(job.id, job.plugin, job.command, status, result=result,
                           reason=reason, error=error, recovery=recovery)
    routing = hooks_for(pipelines, hook_signal(status), plugin=job.plugin, payload=payload)
    return (successors(routing.dispatches, None, max_attempts, submitted_by=HOOK_SUBMITTER),
            routing.notes)


def hook_signal(status: str) -> str:
    """The hook a terminal status fires."""
    if status == "succeeded":
        return "job.completed"
    if status == "timed_out":
        return "job.timed_out"
    return "job.failed"


def describe(dispatches: Sequence[Dispatch]) -> list[str]:
    """Short `pipeline/step action` labels for the log."""
    return [f"{d.pipeline}/{d.step_id} {d.action}" for d in dispatches]
