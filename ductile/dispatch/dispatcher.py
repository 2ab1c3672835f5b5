"""The dispatcher: fill `service.max_workers` slots from the queue and run each job.

It sleeps until something can change: an enqueue or a finished job wakes it at once, and
otherwise it wakes at the earliest `next_retry_at` of a delayed retry (capped by
`service.tick_interval`). Polling every second, as the Go gateway does, would add up to a second of
latency to every idle enqueue.

One dispatcher serves every runtime generation: each claim reads the current generation, and a
job keeps the generation it was claimed with until it finishes, so a reload never interrupts a
running plugin.
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import trio

from ductile.dispatch.completions import Completions
from ductile.dispatch.outcome import Outcome, backoff_delay, classify
from ductile.dispatch.routing import (
    Step,
    hook_successors,
    read_step,
    stamp_event,
    successors,
)
from ductile.errors import (
    ConditionEvalError,
    PluginSpawnError,
    RouterError,
    StoreError,
    StoreUnavailable,
)
from ductile.logs import Logger
from ductile.plugin.protocol import build_request
from ductile.plugin.spawn import child_env, spawn_plugin
from ductile.router.dsl import SWITCH_PLUGIN
from ductile.router.engine import (
    Dispatch,
    events_to_route,
    merge_context,
    request_context,
    route,
    run_switch,
    skipped_event,
)
from ductile.store.facts import plan_facts

if TYPE_CHECKING:
    from ductile.boot.runtime import Runtime
    from ductile.config.schema import PluginConf
    from ductile.store.jobs import Job
    from ductile.store.queue import Claim, Finished, Successor

STDERR_LOG_TAIL = 2048
# The skip list for chaining a claim, or None: don't. Called with True when the outcome enqueues
# successors, which are then worth claiming even if the queue looked dry before.
NextSkip = Callable[[bool], "list[str] | None"]
UNAVAILABLE_PAUSE = 1.0  # seconds between claim attempts while the database refuses writes
PERSIST_BACKOFF_MAX = 5.0


class Trace:
    """How far one job got through `execute`: the stage a fault is reported against."""

    def __init__(self) -> None:
        self.stage = "decoding the job"
        self.started = time.monotonic()


class RunCancel:
    """The cancel handle of one running job (see `Dispatcher.cancel_running`)."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.reason = "cancelled"


class Dispatcher:
    def __init__(
        self, current: Callable[[], Runtime], completions: Completions, log: Logger
    ) -> None:
        self._current = current
        self._completions = completions
        self._log = log.child("dispatcher")
        self._wake = trio.Event()
        self._claiming = True
        self._active = 0
        self._lanes: Counter[str] = Counter()
        self._drain_scope: trio.CancelScope | None = None
        # "Dry": the last claim found nothing eligible with no lane full, and nothing new was
        # enqueued since. A finished job then needs no claim attempt and no due-time query;
        # only `wake()` (enqueue, retry, recovery, reload) can make new work eligible.
        self._dry = False
        self._work_seq = 0  # bumped by every wake(); a claim that raced one is not "dry"
        self._next_due: datetime | None = None
        self.kill_grace = 5.0
        self._cancels: dict[str, RunCancel] = {}  # running job id -> its cancel handle

    async def cancel_running(self, job_id: str, reason: str) -> bool:
        """Stop a job running in this process: its plugin's process group is killed and the job
        ends `dead` with `reason` as last_error. False when the job is not running here."""
        handle = self._cancels.get(job_id)
        if handle is None:
            return False
        handle.reason = reason
        handle.scope.cancel()
        await trio.lowlevel.checkpoint()
        return True

    @property
    def active(self) -> int:
        return self._active

    def wake(self) -> None:
        """New work may be eligible: called on enqueue, retry, recovery and reload."""
        self._dry = False
        self._work_seq += 1
        self._wake.set()

    def stop(self, grace: float) -> None:
        """Stop claiming; running jobs get `grace` seconds to finish before they are cancelled
        (their plugins are killed, and crash recovery re-queues them at the next boot)."""
        self._claiming = False
        if self._drain_scope is not None:
            self._drain_scope.deadline = trio.current_time() + grace
        self.wake()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            self._drain_scope = scope
            async with trio.open_nursery() as jobs:
                task_status.started()
                while self._claiming:
                    self._wake = trio.Event()
                    timeout = await self._fill(jobs)
                    if not self._claiming:
                        break
                    with trio.move_on_after(timeout) as sleep:
                        await self._wake.wait()
                    if sleep.cancelled_caught:
                        self._dry = False  # the tick is the safety net: look again

    async def _fill(self, jobs: trio.Nursery) -> float:
        """Claim until the slots are full or nothing is eligible; return how long to sleep."""
        rt = self._current()
        service = rt.config.service
        if rt.posture == "management-only":
            # No trigger plane is open and queued jobs stay queued until a reload activates
            # the gateway (which wakes us).
            return service.tick_interval
        if self._dry and self._next_due is not None and self._next_due <= _now():
            self._dry = False  # a delayed retry came due
        blocked = False
        while not self._dry and self._claiming and self._active < service.max_workers:
            skip = self._skip_list(rt)
            seq = self._work_seq
            try:
                claim = await rt.queue.claim_next(skip)
                due = await rt.queue.next_due_at() if claim is None else None
            except StoreUnavailable as exc:
                # Claim nothing until the database takes writes again; running jobs keep
                # retrying their own writes (see _persist).
                self._log.error("database unavailable: claiming paused", error=str(exc),
                                retry_in_s=UNAVAILABLE_PAUSE)
                return UNAVAILABLE_PAUSE
            if claim is None:
                overdue = due is not None and due <= _now()
                blocked = bool(skip)
                self._next_due = None if overdue else due
                self._dry = not skip and seq == self._work_seq and not overdue
                if overdue and not skip:
                    return 0.0  # a retry came due between the claim and the query
                break
            self._active += 1
            self._lanes[claim.job.plugin] += 1
            jobs.start_soon(self._worker, rt, claim)
        if self._active >= service.max_workers or blocked or self._next_due is None:
            return service.tick_interval  # a finished job or new work wakes us sooner
        wait = (self._next_due - _now()).total_seconds()
        return min(max(wait, 0.0), service.tick_interval)

    def _skip_list(self, rt: Runtime, finishing: str | None = None) -> list[str]:
        """Plugins at their lane limit (not counting the job `finishing` in this worker)."""
        skip = []
        for plugin, running in self._lanes.items():
            if plugin == finishing:
                running -= 1
            if running >= rt.lane_limit(plugin):
                skip.append(plugin)
        return skip

    async def _worker(self, rt: Runtime, claim: Claim) -> None:
        """Run a claimed job; while more work is eligible, go straight on to the next one,
        claimed in the same transaction that records this one's outcome."""
        try:
            next_claim: Claim | None = claim
            while next_claim is not None:
                job = next_claim.job

                def chain(routed: bool, job: Job = job) -> list[str] | None:
                    # Decided when the outcome is written, not when the job started: a stop or
                    # a reload in between must not claim more work. A routed outcome makes
                    # its own successor eligible: claiming it in the same transaction saves
                    # the wake-and-claim round trip on every pipeline hop.
                    if self._claiming and rt is self._current() and (routed or not self._dry):
                        return self._skip_list(rt, finishing=job.plugin)
                    return None

                handle = self._cancels[job.id] = RunCancel()
                trace = Trace()
                try:
                    next_claim = await execute(
                        rt, next_claim, self._log, kill_grace=self.kill_grace, claim_next=chain,
                        cancel=handle, trace=trace,
                    )
                except Exception as exc:  # noqa: BLE001 - the job boundary: see contain_fault
                    next_claim = await contain_fault(rt, job, trace, exc, self._log, chain)
                finally:
                    self._cancels.pop(job.id, None)
                    self._lanes[job.plugin] -= 1
                    if self._lanes[job.plugin] <= 0:
                        del self._lanes[job.plugin]
                    self._completions.notify(job.id)
                if next_claim is not None:
                    self._lanes[next_claim.job.plugin] += 1
        finally:
            self._active -= 1
            self._wake.set()  # a slot is free; `wake()` is for new work


async def execute(
    rt: Runtime,
    claim: Claim,
    log: Logger,
    *,
    kill_grace: float = 5.0,
    claim_next: NextSkip | None = None,
    cancel: RunCancel | None = None,
    trace: Trace | None = None,
) -> Claim | None:
    """Run one claimed job to its next status (terminal, or queued again for a retry).

    `cancel.scope.cancel()` kills the plugin (its process group) and ends the job `dead`.

    With `claim_next` (returning a skip list, or None for "claim nothing"), the next eligible
    job is claimed in the transaction that records this outcome, and returned.

    Pipeline steps: a step routed as skip/fail is recorded without a spawn, a `core.switch`
    runs in-process, and a success's successors (routed events, hooks) are written in the
    transaction that records it (see dispatch/routing.py).

    `trace.stage` follows the job through its steps, so a fault raised by any of them is
    reported against the step it broke (see `contain_fault`).
    """
    trace = trace or Trace()
    job, state = claim.job, claim.state
    try:
        payload = job.payload_obj()
    except StoreError as exc:
        return await _fail_permanently(rt, job, str(exc), log, claim_next)
    step = read_step(payload, claim.context)
    if step.verdict is not None:
        return await _record_verdict(rt, job, step, log, claim_next)
    if job.plugin == SWITCH_PLUGIN and step.in_pipeline:
        return await _run_switch(rt, job, step, log, claim_next)
    plugin = rt.plugins.get(job.plugin)
    if plugin is None:
        error = f"plugin {job.plugin!r} not found in registry"
        return await _fail_permanently(rt, job, error, log, claim_next, step)
    if not plugin.supports(job.command):
        error = f"plugin {job.plugin!r} does not support command {job.command!r}"
        return await _fail_permanently(rt, job, error, log, claim_next, step)
    if claim.state_error is not None:
        error = f"plugin state unreadable: {claim.state_error}"
        return await _fail_permanently(rt, job, error, log, claim_next, step)
    trace.stage = "admitting the job"
    conf = rt.config.plugin(job.plugin)
    timeout = conf.timeout_for(job.command)
    secrets, refusal = compose_secrets(rt, conf)
    if refusal is not None:
        return await _fail_permanently(rt, job, refusal, log, claim_next, step)
    trace.stage = "building the plugin request"
    context = request_context(job.plugin, step.position)
    event = _event_for(job.command, payload)
    if step.in_pipeline and step.event is not None:
        # A pipeline step: its baggage reaches the plugin in `context` and, where the event's
        # payload lacks a key, in the payload itself.
        inner = step.event.get("payload")
        payload = step.event
        event = {**step.event,
                 "payload": merge_context(inner if isinstance(inner, dict) else {}, context)}
    request = build_request(
        job_id=job.id,
        command=job.command,
        config=conf.config,
        state=state,
        payload=payload,
        context=context,
        event=event,
        deadline_at=datetime.now(timezone.utc).astimezone() + timedelta(seconds=timeout),
        secrets=secrets,
    )
    trace.stage = "spawning the plugin"
    env = child_env(rt.config.service.plugin_env_passthrough)
    started = time.monotonic()
    cancel = cancel or RunCancel()
    try:
        with cancel.scope:
            result = await spawn_plugin(
                plugin.entrypoint, request, timeout=timeout, env=env, grace=kill_grace
            )
    except PluginSpawnError as exc:
        outcome = Outcome("failed", "spawn_error", True, f"plugin spawn failed: {exc}")
        return await _finish(rt, job, outcome, None, None, b"", _ms(started), log, claim_next,
                             step)
    if cancel.scope.cancelled_caught:
        outcome = Outcome("dead", "cancelled", False, cancel.reason)
        return await _finish(rt, job, outcome, None, None, b"", _ms(started), log, claim_next,
                             step)
    trace.stage = "reading the plugin response"
    outcome = classify(result, timeout)
    trace.stage = "recording the outcome"
    return await _finish(rt, job, outcome, result.stdout, result.exit_code, result.stderr,
                         _ms(started), log, claim_next, step)


async def contain_fault(
    rt: Runtime, job: Job, trace: Trace, exc: Exception, log: Logger,
    claim_next: NextSkip | None,
) -> Claim | None:
    """Fail one job whose own handling raised, instead of letting the fault end the process.

    This is the dispatcher's job boundary. Everything `execute` does for one job (decode its
    payload, admit it, build its request, spawn, read the response, route, record) is
    job-scoped: a value that breaks one of those steps is bad work, and bad work fails as
    work, with the step and the error in the ledger. Before this boundary existed, one
    posted `{"payload": 42}` raised in the dispatcher's nursery and took the whole gateway
    down, then again on every restart.

    The job ends `failed` (outcome `job_fault`, never retried: the same input would fault
    again) and its hooks fire. Only recording that failure is left unguarded: if the store
    cannot take it, the component itself is broken and the process must end (systemd
    restarts it; crash recovery then quarantines a job that keeps killing it).
    """
    error = f"job fault while {trace.stage}: {type(exc).__name__}: {exc}"
    fields = {"job_id": job.id, "plugin": job.plugin, "command": job.command}
    log.error("job fault contained", **fields, stage=trace.stage, error=error,
              traceback="".join(traceback.format_exception(exc)))
    current = await rt.queue.get(job.id)
    if current is None or current.status != "running" or current.attempt != job.attempt:
        # The outcome was already recorded and the fault came after it (a log line, a
        # chained claim's bookkeeping): the ledger is right as it stands.
        return None
    try:
        # A pipeline step (it has a context row) never fires hooks, as in `_hooks`.
        where = Step(None, job.event_context_id, None)
        hooks = _hooks(rt, job, where, "failed", result=None,
                       reason="job_fault", error=error, log=log)
    except Exception:  # noqa: BLE001 - a fault in routing the hooks must not hide the job's
        hooks = []
    result = json.dumps({"status": "error", "error": error})
    duration = _ms(trace.started)

    def record(follow: list[Successor]) -> Awaitable[Finished]:
        return rt.queue.complete_and_claim(
            job, "failed", result=result, last_error=error, stderr=None, exit_code=None,
            duration_ms=duration, outcome="job_fault", claim_next=_skip(claim_next, follow),
            successors=follow,
        )

    try:
        finished = await _persist(log, job, lambda: record(hooks))
    except StoreUnavailable:
        raise
    except StoreError:
        if not hooks:
            raise
        # A hook the store refuses must not keep the failure itself from being recorded.
        finished = await _persist(log, job, lambda: record([]))
    log.warn("job failed", **fields, error=error)
    return finished.next


def compose_secrets(rt: Runtime, conf: PluginConf) -> tuple[dict[str, str], str | None]:
    """The vault secrets granted to the plugin's principal, composed fresh for this spawn (a
    roll or revoke through /vault/* applies to the next spawn without a reload). They travel
    only in the request's `secrets` field, never in env or argv.

    Fails the job closed (second item: the reason) when the plugin `requires_vault` and no
    vault is loaded or its principal cannot compose, and whenever its principal is revoked. A
    plugin with no principal registered, that does not require the vault, gets no secrets.
    """
    from ductile.errors import VaultPrincipalUnavailable

    owner = rt.vault_owner
    if owner is None:
        if conf.requires_vault:
            return {}, (f"requires_vault: plugin {conf.name!r} requires the vault but none is "
                        "loaded (create one with ductile vault init, or set requires_vault: "
                        "false)")
        return {}, None
    try:
        composition = owner.compose(conf.principal)
    except VaultPrincipalUnavailable as exc:
        if conf.requires_vault or exc.reason == "revoked":
            return {}, (f"requires_vault: vault principal {conf.principal!r} of plugin "
                        f"{conf.name!r} cannot receive secrets: {exc}")
        return {}, None
    return dict(composition.secrets), None


def _event_for(command: str, payload: Any) -> dict[str, Any] | None:
    """`handle` receives its payload as an event; a raw object becomes the event's payload."""
    if command != "handle" or not isinstance(payload, dict) or not payload:
        return None
    if isinstance(payload.get("type"), str) and isinstance(payload.get("payload"), dict):
        return payload
    return {"type": "", "payload": payload}


async def _finish(
    rt: Runtime,
    job: Job,
    outcome: Outcome,
    stdout: bytes | None,
    exit_code: int | None,
    stderr: bytes,
    duration_ms: int,
    log: Logger,
    claim_next: NextSkip | None,
    step: Step | None = None,
) -> Claim | None:
    step = step or Step(None, None, None)
    stderr_text = stderr.decode("utf-8", errors="replace") if stderr else None
    stdout_text = stdout.decode("utf-8", errors="replace") if stdout else None
    fields = {"job_id": job.id, "plugin": job.plugin, "command": job.command}
    if outcome.response is not None:
        for entry in outcome.response.logs:
            log.info("plugin log", **fields, level_reported=entry.get("level"),
                     message=entry.get("message"))
    if outcome.status == "succeeded":
        response = outcome.response
        updates = response.state_updates if response is not None else None
        result_text = response.result if response is not None else None
        try:
            emitted = [e.to_json() for e in response.events] if response is not None else []
            routed = _route_emitted(rt, job, step, job.plugin, emitted, result_text)
        except RouterError as exc:
            # The plugin's events cannot be routed (no type, a payload that is not an
            # object): the step's work is done but its pipeline cannot go on; fail visibly.
            error = f"route events: {exc}"
            finished = await _persist(log, job, lambda: rt.queue.complete_and_claim(
                job, "failed", result=stdout_text, last_error=error, stderr=stderr_text,
                exit_code=exit_code, duration_ms=duration_ms, outcome="route_error",
                claim_next=_skip(claim_next),
            ))
            log.warn("job failed", **fields, error=error)
            return finished.next
        follow = routed + _hooks(rt, job, step, "succeeded", result=result_text, reason=None,
                                 error=None, log=log)
        try:
            plugin = rt.plugins.get(job.plugin)
            rules = plugin.manifest.fact_outputs if plugin is not None else ()
            facts = plan_facts(job.plugin, job.command, rules, updates) if updates else None
            finished = await _persist(log, job, lambda: rt.queue.complete_and_claim(
                job, "succeeded", result=stdout_text, last_error=None, stderr=stderr_text,
                exit_code=exit_code, duration_ms=duration_ms, outcome=outcome.reason,
                state_update=(job.plugin, updates) if updates and facts is None else None,
                facts=facts, claim_next=_skip(claim_next, follow), successors=follow,
            ))
        except StoreError as exc:
            # A success whose state cannot be stored is a failure, never retried.
            rejected = f"state update rejected: {exc}"
            finished = await _persist(log, job, lambda: rt.queue.complete_and_claim(
                job, "failed", result=stdout_text, last_error=rejected,
                stderr=stderr_text, exit_code=exit_code, duration_ms=duration_ms,
                outcome="state_error", claim_next=_skip(claim_next),
            ))
            log.warn("job failed", **fields, error=rejected)
            return finished.next
        log.info("job succeeded", **fields, attempt=job.attempt, duration_ms=duration_ms)
        _log_routed(log, job, finished)
        return finished.next
    retry_conf = rt.config.plugin(job.plugin).retry
    max_attempts = job.max_attempts or retry_conf.max_attempts
    if outcome.retryable and job.attempt < max_attempts:
        delay = backoff_delay(retry_conf.backoff_base, job.attempt)
        finished = await _persist(log, job, lambda: rt.queue.retry_and_claim(
            job, delay=delay, last_error=outcome.error, exit_code=exit_code,
            duration_ms=duration_ms, outcome=outcome.reason, stderr=stderr_text,
            claim_next=_skip(claim_next),
        ))
        log.warn("job retry scheduled", **fields, attempt=job.attempt, reason=outcome.reason,
                 error=outcome.error, retry_in_s=round(delay, 3),
                 stderr_tail=_tail(stderr_text))
        return finished.next
    # A retryable failure with no attempt left ends because attempts ran out; the attempt
    # itself keeps its own classification.
    decision = "attempts_exhausted" if outcome.retryable else None
    hooks = _hooks(rt, job, step, outcome.status, result=None,
                   reason=decision or outcome.reason, error=outcome.error, log=log)
    finished = await _persist(log, job, lambda: rt.queue.complete_and_claim(
        job, outcome.status, result=stdout_text, last_error=outcome.error, stderr=stderr_text,
        exit_code=exit_code, duration_ms=duration_ms, outcome=outcome.reason,
        claim_next=_skip(claim_next, hooks), decision=decision, successors=hooks,
    ))
    log.warn("job " + outcome.status.replace("_", " "), **fields, attempt=job.attempt,
             reason=decision or outcome.reason, error=outcome.error,
             stderr_tail=_tail(stderr_text))
    return finished.next


async def _fail_permanently(
    rt: Runtime, job: Job, error: str, log: Logger, claim_next: NextSkip | None,
    step: Step | None = None,
) -> Claim | None:
    hooks = _hooks(rt, job, step or Step(None, None, None), "failed", result=None,
                   reason="not_runnable", error=error, log=log)
    finished = await _persist(log, job, lambda: rt.queue.complete_and_claim(
        job, "failed", result=json.dumps({"status": "error", "error": error}), last_error=error,
        stderr=None, exit_code=None, duration_ms=0, outcome="not_runnable",
        claim_next=_skip(claim_next, hooks), successors=hooks,
    ))
    log.warn("job failed", job_id=job.id, plugin=job.plugin, command=job.command, error=error)
    return finished.next


# --- pipelines ----------------------------------------------------------------------------------


async def _record_verdict(
    rt: Runtime, job: Job, step: Step, log: Logger, claim_next: NextSkip | None
) -> Claim | None:
    """A step the router decided not to run: record it `skipped` (and route its successors,
    which see the event it would have seen) or `failed` (depth limit, baggage, `with:`), with
    the decision as the reason. No plugin is spawned."""
    assert step.verdict is not None
    action, decision = step.verdict
    fields = {"job_id": job.id, "plugin": job.plugin, "command": job.command}
    if action == "fail":
        finished = await _persist(log, job, lambda: rt.queue.complete_and_claim(
            job, "failed", result=json.dumps({"status": "error", "error": decision}),
            last_error=decision, stderr=None, exit_code=None, duration_ms=0,
            outcome="route_refused", claim_next=_skip(claim_next),
        ))
        log.warn("job failed", **fields, error=decision)
        return finished.next
    follow: list[Successor] = []
    if step.position is not None and step.event is not None:
        try:
            routing = route(rt.pipelines, step.position, job.plugin, skipped_event(step.event),
                            lenient=True)
            follow = _successors_of(rt, job, step, routing.dispatches)
            _log_notes(log, job, routing.notes)
        except RouterError as exc:
            log.warn("skipped step: successors not routed", **fields, error=str(exc))
    finished = await _persist(log, job, lambda: rt.queue.complete_and_claim(
        job, "skipped", result=json.dumps({"status": "skipped", "reason": decision}),
        last_error=None, stderr=None, exit_code=None, duration_ms=0, outcome="skipped",
        decision=decision, claim_next=_skip(claim_next, follow), successors=follow,
    ))
    log.info("job skipped", **fields, reason=decision)
    _log_routed(log, job, finished)
    return finished.next


async def _run_switch(
    rt: Runtime, job: Job, step: Step, log: Logger, claim_next: NextSkip | None
) -> Claim | None:
    """The built-in `core.switch` of a step `if:`, run in-process (no spawn): it re-emits its
    incoming event as `ductile.switch.true|false`, and routing takes it from there."""
    started = time.monotonic()
    if step.position is None or step.event is None:
        error = "core.switch needs a pipeline step context and an event envelope"
        return await _fail_permanently(rt, job, error, log, claim_next, step)
    try:
        outcome = run_switch(rt.pipelines, step.position, step.event)
        routing = route(rt.pipelines, step.position, job.plugin, outcome.event)
    except ConditionEvalError as exc:
        return await _fail_permanently(rt, job, f"core.switch evaluate condition: {exc}", log,
                                       claim_next, step)
    except RouterError as exc:
        return await _fail_permanently(rt, job, f"core.switch route events: {exc}", log,
                                       claim_next, step)
    _log_notes(log, job, routing.notes)
    follow = _successors_of(rt, job, step, routing.dispatches)
    duration = _ms(started)
    finished = await _persist(log, job, lambda: rt.queue.complete_and_claim(
        job, "succeeded", result=json.dumps(dict(outcome.result), separators=(",", ":")),
        last_error=None, stderr=None, exit_code=None, duration_ms=duration, outcome="ok",
        claim_next=_skip(claim_next, follow), successors=follow,
    ))
    log.info("job succeeded", job_id=job.id, plugin=job.plugin, command=job.command,
             matched=outcome.matched, duration_ms=duration)
    _log_routed(log, job, finished)
    return finished.next


def _route_emitted(rt: Runtime, job: Job, step: Step, emitter: str,
                   events: list[dict[str, Any]], result: str | None) -> list[Successor]:
    """Successors of a succeeded job's events (plus `ductile.step.succeeded` for a silent
    pipeline step). Raises RouterError when an event cannot be routed."""
    ps = rt.pipelines
    if not ps.pipelines:
        return []
    dispatches: list[Dispatch] = []
    for event in events_to_route(events, result, step.position):
        stamped = stamp_event(event, emitter, lambda: str(uuid.uuid4()))
        dispatches.extend(route(ps, step.position, emitter, stamped).dispatches)
    return _successors_of(rt, job, step, dispatches)


def _hooks(rt: Runtime, job: Job, step: Step, status: str, *, result: str | None,
           reason: str | None, error: str | None, log: Logger) -> list[Successor]:
    """The `on-hook` pipeline jobs a root job's end fires (its plugin has notify_on_complete).
    Pipeline steps never fire hooks: hook pipelines cannot feed themselves that way."""
    if step.in_pipeline:
        return []
    try:
        fired, notes = hook_successors(
            rt.pipelines, job, status, notify=rt.config.plugin(job.plugin).notify_on_complete,
            max_attempts=lambda p: rt.config.plugin(p).retry.max_attempts,
            result=result, reason=reason, error=error)
    except RouterError as exc:
        log.warn("hook not routed", job_id=job.id, plugin=job.plugin, error=str(exc))
        return []
    _log_notes(log, job, notes)
    return fired


def _successors_of(rt: Runtime, job: Job, step: Step,
                   dispatches: Any) -> list[Successor]:
    return successors(dispatches, step.context_id,
                      lambda plugin: rt.config.plugin(plugin).retry.max_attempts)


def _log_notes(log: Logger, job: Job, notes: Any) -> None:
    for note in notes:
        log.info("route not taken", job_id=job.id, plugin=job.plugin, note=note)


def _log_routed(log: Logger, job: Job, finished: Finished) -> None:
    for dropped in finished.dropped:
        log.info("routed job dropped", job_id=job.id, plugin=dropped.successor.plugin,
                 reason=str(dropped.error))
    if finished.successors:
        log.debug("routed", job_id=job.id, jobs=[j.id for j in finished.successors])


async def _persist(log: Logger, job: Job, write: Callable[[], Awaitable[Finished]]) -> Finished:
    """Record a job's outcome, waiting out a database that cannot take writes (disk full,
    I/O error) instead of losing the outcome or crashing: the job stays `running` until the
    write lands, and if the process dies first, crash recovery runs it again."""
    delay = 0.1
    while True:
        try:
            return await write()
        except StoreUnavailable as exc:
            log.error("database unavailable: cannot record job outcome; retrying",
                      job_id=job.id, plugin=job.plugin, error=str(exc), retry_in_s=delay)
            await trio.sleep(delay)
            delay = min(delay * 2, PERSIST_BACKOFF_MAX)


def _skip(claim_next: NextSkip | None, routed: Sequence[Successor] = ()) -> list[str] | None:
    return claim_next(bool(routed)) if claim_next is not None else None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _tail(text: str | None) -> str | None:
    return text[-STDERR_LOG_TAIL:] if text else None
