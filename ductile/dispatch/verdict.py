"""What to record for one attempt: a pure function from what happened to the one write to make.

`decide` takes what `dispatch/attempt.py` observed (the job could not run, the router had
decided it, the switch evaluated, the plugin ran) and answers with a `Record`: the job's next
status, the ledger fields, the state update or facts, the successors to enqueue with it (routed
events, hooks, a skipped step's followers) or the retry delay, and the log lines that explain
it. `dispatch/record.py` makes the write; nothing here touches the database, the clock or the
plugin, so every rule is tested directly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ductile.dispatch.attempt import Happened, NotRunnable, Ran, Switched, Verdict
from ductile.dispatch.outcome import backoff_delay
from ductile.dispatch.routing import Step, hook_successors, stamp_event, successors
from ductile.config.schema import RetryConf
from ductile.errors import RouterError, StoreError
from ductile.router.dsl import RELAY_PLUGIN
from ductile.router.engine import Dispatch, events_to_route, route, skipped_event
from ductile.store.facts import FactPlan, plan_facts

if TYPE_CHECKING:
    from ductile.runtime import Runtime
    from ductile.config.schema import PluginConf
    from ductile.plugin.manifest import FactOutput
    from ductile.router.dsl import PipelineSet
    from ductile.store.jobs import Job
    from ductile.store.queue import Successor

STDERR_LOG_TAIL = 2048


@dataclass(frozen=True)
class LogLine:
    level: str  # debug | info | warn | error
    msg: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """The one write that ends an attempt.

    `status` is terminal, or `queued` for a retry after `retry_in` seconds. `state_update`
    (a shallow merge into the plugin's state) and `facts` only come with `succeeded`.
    `before` is logged before the write (what the plugin said, routes not taken), `after`
    once it landed.
    """

    status: str
    outcome: str
    result: str | None = None
    last_error: str | None = None
    stderr: str | None = None
    exit_code: int | None = None
    duration_ms: int = 0
    decision: str | None = None
    successors: tuple[Successor, ...] = ()
    state_update: Mapping[str, Any] | None = None
    facts: FactPlan | None = None
    retry_in: float | None = None
    before: tuple[LogLine, ...] = ()
    after: tuple[LogLine, ...] = ()


@dataclass(frozen=True)
class Routes:
    """What deciding reads from the runtime generation that claimed the job."""

    pipelines: PipelineSet
    plugin_conf: Callable[[str], PluginConf]
    fact_rules: Callable[[str], Sequence[FactOutput]]
    new_id: Callable[[], str] = lambda: str(uuid.uuid4())
    backoff: Callable[[float, int], float] = backoff_delay
    relay_retry: Callable[[str], RetryConf] = lambda _name: RetryConf()

    @classmethod
    def of(cls, rt: Runtime) -> Routes:
        def rules(name: str) -> Sequence[FactOutput]:
            plugin = rt.plugins.get(name)
            return plugin.manifest.fact_outputs if plugin is not None else ()

        def relay_retry(name: str) -> RetryConf:
            instance = rt.relay.instances.get(name)
            return instance.retry if instance is not None else RetryConf()

        return cls(rt.pipelines, rt.config.plugin, rules, relay_retry=relay_retry)

    def max_attempts(self, plugin: str) -> int:
        return self.plugin_conf(plugin).retry.max_attempts


def decide(routes: Routes, job: Job, step: Step, happened: Happened) -> Record:
    """The record of one attempt (see the module docstring)."""
    if isinstance(happened, NotRunnable):
        return not_runnable(routes, job, step, happened.error)
    if isinstance(happened, Verdict):
        return _verdict(routes, job, step, happened)
    if isinstance(happened, Switched):
        return _switched(routes, job, step, happened)
    return _ran(routes, job, step, happened)


def not_runnable(routes: Routes, job: Job, step: Step, error: str) -> Record:
    """A job that cannot run: failed at once, never retried; a root job's hooks fire."""
    hooks, notes = _hooks(routes, job, step, "failed", result=None, reason="not_runnable",
                          error=error)
    return Record(
        "failed", "not_runnable", result=_error_result(error), last_error=error,
        successors=tuple(hooks), before=notes,
        after=(LogLine("warn", "job failed", {**_fields(job), "error": error}),),
    )


def state_rejected(job: Job, record: Record, error: StoreError) -> Record:
    """A success whose state (or facts) the store refused: a failure, never retried."""
    rejected = f"state update rejected: {error}"
    return Record(
        "failed", "state_error", result=record.result, last_error=rejected,
        stderr=record.stderr, exit_code=record.exit_code, duration_ms=record.duration_ms,
        before=record.before,
        after=(LogLine("warn", "job failed", {**_fields(job), "error": rejected}),),
    )


def fault(routes: Routes, job: Job, error: str, duration_ms: int) -> Record:
    """A job whose handling raised (see dispatch/boundary.py): failed with outcome
    `job_fault`, never retried (the same input would fault again); a root job's hooks fire."""
    where = Step(None, job.event_context_id, None)  # a pipeline step fires no hooks
    try:
        hooks, notes = _hooks(routes, job, where, "failed", result=None, reason="job_fault",
                              error=error)
    except Exception:  # noqa: BLE001 - a fault in routing the hooks must not hide the job's
        hooks, notes = [], ()
    return Record(
        "failed", "job_fault", result=_error_result(error), last_error=error,
        duration_ms=duration_ms, successors=tuple(hooks), before=notes,
        after=(LogLine("warn", "job failed", {**_fields(job), "error": error}),),
    )


# --- by what happened ---------------------------------------------------------------------------


def _verdict(routes: Routes, job: Job, step: Step, verdict: Verdict) -> Record:
    """A step the router decided not to run: `failed` (depth limit, baggage, `with:`) or
    `skipped`, whose successors see the event it would have seen."""
    if verdict.action == "fail":
        return Record(
            "failed", "route_refused", result=_error_result(verdict.decision),
            last_error=verdict.decision,
            after=(LogLine("warn", "job failed", {**_fields(job), "error": verdict.decision}),),
        )
    follow: list[Successor] = []
    notes: tuple[LogLine, ...] = ()
    if step.position is not None and step.event is not None:
        try:
            routing = route(routes.pipelines, step.position, job.plugin,
                            skipped_event(step.event), lenient=True)
            follow = _successors_of(routes, step, routing.dispatches)
            notes = _notes(job, routing.notes)
        except RouterError as exc:
            notes = (LogLine("warn", "skipped step: successors not routed",
                             {**_fields(job), "error": str(exc)}),)
    return Record(
        "skipped", "skipped",
        result=json.dumps({"status": "skipped", "reason": verdict.decision}),
        decision=verdict.decision, successors=tuple(follow), before=notes,
        after=(LogLine("info", "job skipped", {**_fields(job), "reason": verdict.decision}),),
    )


def _switched(routes: Routes, job: Job, step: Step, switched: Switched) -> Record:
    """`core.switch` re-emits its incoming event as `ductile.switch.true|false`; routing takes
    it from there."""
    assert step.position is not None
    try:
        routing = route(routes.pipelines, step.position, job.plugin, switched.outcome.event)
    except RouterError as exc:
        return not_runnable(routes, job, step, f"core.switch route events: {exc}")
    follow = _successors_of(routes, step, routing.dispatches)
    return Record(
        "succeeded", "ok",
        result=json.dumps(dict(switched.outcome.result), separators=(",", ":")),
        duration_ms=switched.duration_ms, successors=tuple(follow),
        before=_notes(job, routing.notes),
        after=(LogLine("info", "job succeeded", {**_fields(job),
                                                 "matched": switched.outcome.matched,
                                                 "duration_ms": switched.duration_ms}),),
    )


def _ran(routes: Routes, job: Job, step: Step, ran: Ran) -> Record:
    outcome = ran.outcome
    stderr = ran.stderr.decode("utf-8", errors="replace") if ran.stderr else None
    stdout = ran.stdout.decode("utf-8", errors="replace") if ran.stdout else None
    said: tuple[LogLine, ...] = ()
    if outcome.response is not None:
        said = tuple(LogLine("info", "plugin log", {**_fields(job),
                                                    "level_reported": entry.get("level"),
                                                    "message": entry.get("message")})
                     for entry in outcome.response.logs)
    base = Record(outcome.status, outcome.reason, result=stdout, last_error=outcome.error,
                  stderr=stderr, exit_code=ran.exit_code, duration_ms=ran.duration_ms,
                  before=said)
    if outcome.status == "succeeded":
        return _succeeded(routes, job, step, base, outcome.response)
    if outcome.status == "cancelled":
        # Asked for, not an outcome of the plugin: never retried, no successors are routed
        # and no hook fires (a `job.failed` hook would alert on a deliberate stop).
        return replace(base, result=None, after=(LogLine("info", "job cancelled", {
            **_fields(job), "attempt": job.attempt, "reason": outcome.error}),))
    retry = routes.plugin_conf(job.plugin).retry
    max_attempts = job.max_attempts or retry.max_attempts
    relay_to = _relay_target(routes, job, step)
    if relay_to is not None:
        # A relay step retries on its instance's policy: the receiver may be down for a while.
        retry = routes.relay_retry(relay_to)
        max_attempts = min(max_attempts, retry.max_attempts)
    if outcome.retryable and job.attempt < max_attempts:
        delay = routes.backoff(retry.backoff_base, job.attempt)
        return replace(base, status="queued", result=None, retry_in=delay, after=(LogLine(
            "warn", "job retry scheduled",
            {**_fields(job), "attempt": job.attempt, "reason": outcome.reason,
             "error": outcome.error, "retry_in_s": round(delay, 3),
             "stderr_tail": _tail(stderr)}),))
    # A retryable failure with no attempt left ends because attempts ran out; the attempt
    # itself keeps its own classification.
    decision = "attempts_exhausted" if outcome.retryable else None
    hooks, notes = _hooks(routes, job, step, outcome.status, result=None,
                          reason=decision or outcome.reason, error=outcome.error)
    return replace(base, decision=decision, successors=tuple(hooks), before=said + notes,
                   after=(LogLine("warn", "job " + outcome.status.replace("_", " "), {
                       **_fields(job), "attempt": job.attempt,
                       "reason": decision or outcome.reason, "error": outcome.error,
                       "stderr_tail": _tail(stderr)}),))


def _relay_target(routes: Routes, job: Job, step: Step) -> str | None:
    """The instance a `core.relay` job sends to, or None for any other job."""
    if job.plugin != RELAY_PLUGIN or step.position is None:
        return None
    node = routes.pipelines.node(step.position.pipeline, step.position.step_id)
    return node.relay.to if node is not None and node.relay is not None else None


def _succeeded(routes: Routes, job: Job, step: Step, base: Record, response: Any) -> Record:
    updates = response.state_updates if response is not None else None
    result_text = response.result if response is not None else None
    try:
        emitted = [e.to_json() for e in response.events] if response is not None else []
        routed = _route_emitted(routes, job, step, emitted, result_text)
    except RouterError as exc:
        # The plugin's events cannot be routed (no type, a payload that is not an object):
        # the step's work is done but its pipeline cannot go on; fail visibly.
        error = f"route events: {exc}"
        return replace(base, status="failed", outcome="route_error", last_error=error,
                       after=(LogLine("warn", "job failed", {**_fields(job), "error": error}),))
    hooks, notes = _hooks(routes, job, step, "succeeded", result=result_text, reason=None,
                          error=None)
    try:
        rules = routes.fact_rules(job.plugin)
        facts = plan_facts(job.plugin, job.command, rules, updates) if updates else None
    except StoreError as exc:
        return state_rejected(job, base, exc)
    return replace(
        base, state_update=updates if updates and facts is None else None, facts=facts,
        successors=tuple(routed + hooks), before=base.before + notes,
        after=(LogLine("info", "job succeeded", {**_fields(job), "attempt": job.attempt,
                                                 "duration_ms": base.duration_ms}),),
    )


# --- routing helpers ----------------------------------------------------------------------------


def _route_emitted(routes: Routes, job: Job, step: Step, events: list[dict[str, Any]],
                   result: str | None) -> list[Successor]:
    """Successors of a succeeded job's events (plus `ductile.step.succeeded` for a silent
    pipeline step). Raises RouterError when an event cannot be routed."""
    ps = routes.pipelines
    if not ps.pipelines:
        return []
    dispatches: list[Dispatch] = []
    for event in events_to_route(events, result, step.position):
        stamped = stamp_event(event, job.plugin, routes.new_id)
        dispatches.extend(route(ps, step.position, job.plugin, stamped).dispatches)
    return _successors_of(routes, step, dispatches)


def _hooks(routes: Routes, job: Job, step: Step, status: str, *, result: str | None,
           reason: str | None, error: str | None) -> tuple[list[Successor], tuple[LogLine, ...]]:
    """The `on-hook` pipeline jobs a root job's end fires (its plugin has notify_on_complete).
    Pipeline steps never fire hooks: hook pipelines cannot feed themselves that way."""
    if step.in_pipeline:
        return [], ()
    try:
        fired, notes = hook_successors(
            routes.pipelines, job, status,
            notify=routes.plugin_conf(job.plugin).notify_on_complete,
            max_attempts=routes.max_attempts, result=result, reason=reason, error=error)
    except RouterError as exc:
        return [], (LogLine("warn", "hook not routed", {"job_id": job.id, "plugin": job.plugin,
                                                        "error": str(exc)}),)
    return fired, _notes(job, notes)


def _successors_of(routes: Routes, step: Step, dispatches: Any) -> list[Successor]:
    return successors(dispatches, step.context_id, routes.max_attempts)


def _notes(job: Job, notes: Sequence[str]) -> tuple[LogLine, ...]:
    return tuple(LogLine("info", "route not taken", {"job_id": job.id, "plugin": job.plugin,
                                                     "note": note}) for note in notes)


def _fields(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "plugin": job.plugin, "command": job.command}


def _error_result(error: str) -> str:
    return json.dumps({"status": "error", "error": error})


def _tail(text: str | None) -> str | None:
    return text[-STDERR_LOG_TAIL:] if text else None
