"""`POST /pipeline/{name}` and `GET /job/{id}/tree`: start a pipeline run, wait for its job tree.

The route handlers in app.py stay thin; the work is here:

* `parse_pipeline_request` reads the body `{"payload"?: {...}, "baggage"?: {...}}` (fuzzed in
  property-tests/test_api_pipeline_body.py). `baggage` is root baggage: it seeds the run's
  context, as claims would.
* `wants_wait` reads `?sync=true` / `?async=true` against the pipeline's execution_mode.
* `enqueue_run` asks the router for the entry dispatches. A run with one entry enqueues that
  step's job, the run's root. A run that enters several steps at once (a leading `split`) is
  written as one root job, the router's synthetic `core.split`, with every entry job as its
  child, in one transaction (`Queue.start_run`): the run has one id and one job tree either
  way. Each entry has its event_context row; all share one pipeline-instance root row, which
  the `core.split` job points at.
* `wait_for_tree` waits until every job of a tree is terminal. A successor is inserted in the
  transaction that ends its parent, so a tree whose known jobs are all terminal has nothing left
  to run. It waits on the existing completion events (`Completions`) of the tree's unfinished
  jobs: registered before the tree is re-read, so a completion in between is never missed.
* `flat_tree` / `sync_view` shape the answers (a flat list, as the Go gateway returns it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ductile.dispatch.completions import Completions
from ductile.dispatch.routing import DECISION_KEY, successors
from ductile.machines import job_statuses
from ductile.planes.api.bodies import BodyError, object_payload, parse_json_object
from ductile.jsonbody import json_type
from ductile.router.dsl import SPLIT_PLUGIN
from ductile.router.engine import RunRoot, start
from ductile.store.queue import Successor

if TYPE_CHECKING:
    from ductile.runtime import Runtime
    from ductile.router.dsl import Pipeline
    from ductile.store.jobs import Job

PIPELINE_FIELDS = ("payload", "baggage")
#: Who the jobs of a run started through the API are submitted by.
API_SUBMITTER = "api"


@dataclass(frozen=True)
class PipelineRequest:
    payload: dict[str, Any]
    baggage: dict[str, Any] | None = None


def parse_pipeline_request(data: bytes) -> PipelineRequest:
    """`{"payload"?: object, "baggage"?: object}`; an empty body is an empty payload.

    `payload` becomes the payload of the trigger event, so it must be an object (absent or
    null: `{}`). `baggage` must be an object whose top-level keys avoid the reserved names
    (`ductile`, `ductile.*`, `ductile_*`: the control namespace and the request-context keys).
    """
    body = parse_json_object(data) or {}
    unknown = sorted(set(body) - set(PIPELINE_FIELDS))
    if unknown:
        raise BodyError(f"unknown field(s) in body: {', '.join(unknown)[:200]}; "
                        f"allowed: {', '.join(PIPELINE_FIELDS)}")
    payload = object_payload(body.get("payload"), "(it becomes the payload of the pipeline's "
                                                  "trigger event)")
    baggage = body.get("baggage")
    if baggage is not None and not isinstance(baggage, dict):
        raise BodyError("field baggage must be a JSON object (root baggage for the run); got "
                        f"{json_type(baggage)}")
    for key in baggage or {}:
        if is_reserved_baggage_key(key):
            shown = key if len(key) <= 40 else key[:40] + "..."
            raise BodyError(f"field baggage: key {shown!r} is reserved (ductile, ductile.* and "
                            "ductile_* belong to the core); choose another name")
    return PipelineRequest(payload=payload, baggage=baggage)


def is_reserved_baggage_key(key: str) -> bool:
    """`ductile`, `ductile.*` and `ductile_*` (docs/pipelines.md, Baggage)."""
    return key == "ductile" or key.startswith(("ductile.", "ductile_"))


def wants_wait(execution_mode: str, args: Mapping[str, str]) -> bool:
    """Whether `POST /pipeline/{name}` waits for the run's tree: `?sync=true` waits for any
    pipeline, `?async=true` answers at once for any pipeline, and without either the
    pipeline's `execution_mode` decides. Only the exact value `true` counts, as for `async` in
    the Go gateway; both at once is a BodyError (400)."""
    forced_async = args.get("async") == "true"
    forced_sync = args.get("sync") == "true"
    if forced_async and forced_sync:
        raise BodyError("query parameters async=true and sync=true contradict each other; give "
                        "sync=true to wait for the run's whole job tree or async=true for a 202 "
                        "at once")
    return forced_sync or (execution_mode == "synchronous" and not forced_async)


@dataclass(frozen=True)
class StartedRun:
    """The jobs of a run just enqueued. `run` is the run's one id and the root of its job tree:
    the entry step's job, or the synthetic `core.split` job of a run that enters several steps
    at once. `entries` are the jobs of the entry step(s), in dispatch order."""

    run: Job
    entries: tuple[Job, ...]


async def enqueue_run(rt: Runtime, pipeline: Pipeline, request: PipelineRequest,
                      *, rerun_of: str | None = None) -> StartedRun:
    """Enqueue one run of `pipeline` (see the module docstring). `rerun_of` (`ductile
    pipeline rerun`) links the run's root to the root of the run it repeats.

    Raises the router's BaggageError (400) / ContextTooLarge (413) before anything is
    enqueued, ValueError when the pipeline has no entry step, Overloaded when an entry's
    plugin or the gateway is at its `max_outstanding_jobs`, and the queue's StoreError.
    """
    routing = start(rt.pipelines, pipeline.name, request.payload, request.baggage)
    if not routing.dispatches:
        raise ValueError("pipeline has no entry points")
    entries = successors(routing.dispatches, None,
                         lambda p: rt.config.plugin(p).retry.max_attempts,
                         submitted_by=API_SUBMITTER)
    rt.admit("api", *(entry.plugin for entry in entries))  # Overloaded: 429 (kit.py)
    if routing.run is None:
        [entry] = entries
        job = await rt.queue.enqueue(
            entry.plugin, entry.command, entry.payload, entry.submitted_by,
            max_attempts=entry.max_attempts, source_event_id=entry.source_event_id,
            context=entry.context, rerun_of=rerun_of,
        )
        return StartedRun(job, (job,))
    started = await rt.queue.start_run(
        _split_root(routing.run, entries), entries,
        result=json.dumps(routing.run.result, separators=(",", ":")),
        reason=routing.run.reason, rerun_of=rerun_of,
    )
    return StartedRun(started.job, started.successors)


def _split_root(run: RunRoot, entries: list[Successor]) -> Successor:
    """The `core.split` job of a fanned-out run: the trigger event as its payload (with the
    route decision, as every routed job has) and the pipeline-instance root row every entry's
    row grows from as its context, so the root shows the run's pipeline and root baggage."""
    shared = entries[0].context.parent if entries[0].context is not None else None
    return Successor(
        plugin=SPLIT_PLUGIN, command="handle",
        payload={**run.event, DECISION_KEY: run.decision},
        submitted_by=API_SUBMITTER, source_event_id=None, context=shared, max_attempts=1,
    )


def sync_limit(rt: Runtime, pipeline: Pipeline) -> float:
    """The pipeline's timeout, capped by `api.max_sync_timeout` when that is set."""
    cap = rt.config.api.max_sync_timeout or math.inf
    return min(pipeline.timeout or math.inf, cap)


async def wait_for_tree(rt: Runtime, completions: Completions, root_id: str,
                        deadline: float, stopping: Callable[[], bool] = lambda: False
                        ) -> dict[str, Any] | None:
    """The settled tree under `root_id`, or None when `deadline` (trio time) passed first or
    the gateway began to stop (its queued jobs then run after the next start)."""
    while True:
        if stopping():
            return None
        tree = await rt.queue.tree(root_id)
        if tree is None:
            return None
        pending = _pending(tree)
        if not pending and not tree.get("truncated"):
            return tree
        events = [(job_id, completions.register(job_id)) for job_id in pending]
        try:
            again = await rt.queue.tree(root_id)
            if again is not None and _pending(again) == pending:
                with trio.move_on_at(deadline) as scope:
                    await _any(event for _, event in events)
                if scope.cancelled_caught:
                    return None
        finally:
            for job_id, event in events:
                completions.discard(job_id, event)


def flat_tree(tree: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The nested tree as a flat list, parents before children (the Go gateway's shape plus
    `duration_ms`, `decision`, and the step's pipeline, step id and baggage)."""
    return [_flat(node, parent) for node, parent in _walk(tree, None)]


def sync_view(pipeline: Pipeline, tree: Mapping[str, Any], duration_ms: int) -> dict[str, Any]:
    """The 200 answer of a synchronous run: the tree's status (succeeded unless a job failed,
    timed out or died, or else was cancelled), the result of the last job at a terminal step
    (else the root's)."""
    nodes = [node for node, _ in _walk(tree, None)]
    status = "succeeded"
    for node in nodes:
        if node["status"] in job_statuses().failure:
            status = node["status"]
        elif node["status"] == "cancelled" and status == "succeeded":
            status = "cancelled"  # a stop that was asked for; a failure elsewhere still wins
    result = tree.get("result")
    terminal = [n for n in nodes if n["status"] == "succeeded" and n.get("context")
                and n["context"].get("pipeline") == pipeline.name
                and n["context"].get("step_id") in pipeline.terminal_steps]
    if terminal:
        result = max(terminal, key=lambda n: n.get("completed_at") or "")["result"]
    return {"job_id": tree["job_id"], "status": status, "duration_ms": duration_ms,
            "result": result, "tree": flat_tree(tree)}


def _pending(tree: Mapping[str, Any]) -> list[str]:
    return [node["job_id"] for node, _ in _walk(tree, None) if node["status"] not in job_statuses().terminal]


def _walk(node: Mapping[str, Any], parent: str | None
          ) -> Iterator[tuple[Mapping[str, Any], str | None]]:
    """Every node with its parent's job id, parents first, in order (iterative: a tree may be
    up to the store's MAX_TREE_DEPTH levels deep)."""
    stack = [(node, parent)]
    while stack:
        current, above = stack.pop()
        yield current, above
        children = list(current.get("children", ()))
        stack.extend((child, current["job_id"]) for child in reversed(children))


def _flat(node: Mapping[str, Any], parent: str | None) -> dict[str, Any]:
    context = node.get("context") or {}
    return {
        "job_id": node["job_id"], "parent_job_id": parent, "plugin": node["plugin"],
        "command": node["command"], "status": node["status"], "result": node["result"],
        "last_error": node["last_error"], "started_at": node["started_at"],
        "completed_at": node["completed_at"], "duration_ms": node["duration_ms"],
        "decision": node["decision"], "route": node.get("route"),
        "pipeline": context.get("pipeline"),
        "step_id": context.get("step_id"), "baggage": context.get("baggage"),
    }


async def _any(events: Any) -> None:
    """Return as soon as one of `events` is set."""
    async with trio.open_nursery() as nursery:
        async def one(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(one, event)
