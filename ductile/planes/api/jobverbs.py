"""The operator's job verbs: cancel a job, retry one, rerun a pipeline run.

`POST /job/{id}/cancel`, `/retry` and `/rerun` (routes/jobs.py) and `ductile job cancel|retry`,
`ductile pipeline rerun` (through those routes) do their work here. Each verb answers with a
`VerbAnswer` (HTTP status and JSON body) or raises `ApiError`; nothing else escapes for a bad
request. Retry and rerun create new work, so over a `max_outstanding_jobs` bound they raise
`Overloaded` (429 with Retry-After, kit.py) before anything is enqueued.

* cancel: a queued job ends `cancelled` at once. A running one is handed to the dispatcher
  through the one narrow callable the plane gets (`ApiContext.cancel_running`): its plugin's
  process group gets SIGTERM, then SIGKILL after the kill grace, and the dispatcher records
  `cancelled`. The answer waits (bounded) for that record, so it can say how the job ended: a
  plugin that finished first keeps its own outcome, and the answer says so (409).
* retry: a failed, timed_out, dead or cancelled job is enqueued again as a new job with the
  same plugin, command, payload, dedupe key and pipeline context (parent and context row), so
  a retried step carries on its run. `retry_of` links the two; the store refuses a second
  retry of the same job in the inserting transaction.
* rerun: the root of a finished pipeline run starts the same run again as a new pipeline
  instance. A run with one entry step has that step's job as its root: it is enqueued again
  with the event it received, under a new instance id and a new event id (contexts are
  immutable, so the instance root and the entry context are copied). A run that fanned out at
  once has a synthetic `core.split` root holding the trigger event and pointing at the
  instance root (root baggage): the run is started again from those, as `POST /pipeline`
  would. A root that is a plugin job (its outcome routed into pipelines) is enqueued again,
  and routes as it did. `rerun_of` links each new root to the old one.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from ductile.errors import (
    BaggageError,
    DedupeDropped,
    InvalidTransition,
    JobNotFound,
    JobStateConflict,
    StoreError,
    StoreUnavailable,
)
from ductile.machines import job_statuses
from ductile.planes.api.bodies import BodyError, parse_json_object
from ductile.planes.api.kit import ApiError
from ductile.planes.api.pipelines import PipelineRequest, enqueue_run
from ductile.router.baggage import CONTROL
from ductile.store.context import ContextSpec

if TYPE_CHECKING:
    from ductile.dispatch.completions import Completions
    from ductile.runtime import Runtime
    from ductile.store.jobs import Job
    from ductile.store.tree import PipelineRun, RunEntry

#: The fields each verb's body may hold (an empty body is fine for all).
VERB_FIELDS: dict[str, tuple[str, ...]] = {"cancel": ("reason",), "retry": (), "rerun": ()}
MAX_REASON = 500
#: How long a cancel of a running job waits for the dispatcher to record it: the kill grace
#: (5 s) plus reaping and the write, with room to spare.
CANCEL_WAIT = 30.0
#: How long a cancel keeps asking the dispatcher for a job the store says is running: the
#: moment between a claim and its worker picking the job up.
HANDOFF_WAIT = 2.0
SUBMITTER = "api"
CANCELLED_BY_OPERATOR = "cancelled by operator"

CancelRunning = Callable[[str, str], Awaitable[bool]]
T = TypeVar("T")


@dataclass(frozen=True)
class VerbRequest:
    """A verb's parsed body."""

    reason: str | None = None


@dataclass(frozen=True)
class VerbAnswer:
    status: int
    body: dict[str, Any]


def parse_verb_body(data: bytes, verb: str) -> VerbRequest:
    """`{"reason"?: str}` for cancel, `{}` (or nothing) for retry and rerun. A reason is a
    non-blank single line of at most MAX_REASON characters (it lands in the ledger and the
    log); anything else is a BodyError naming the field."""
    body = parse_json_object(data) or {}
    allowed = VERB_FIELDS[verb]
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        shown = ", ".join(unknown)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise BodyError(f"unknown field(s) in body: {shown}; "
                        f"allowed: {', '.join(allowed) or 'none (send an empty body)'}")
    reason = body.get("reason")
    if reason is None:
        return VerbRequest()
    if not isinstance(reason, str) or not reason.strip():
        raise BodyError("field reason must be a non-empty string")
    if len(reason) > MAX_REASON:
        raise BodyError(f"field reason must be at most {MAX_REASON} characters, got "
                        f"{len(reason)}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in reason):
        raise BodyError("field reason must be one line of text, without control characters")
    return VerbRequest(reason=reason.strip())


def cancel_reason(request: VerbRequest) -> str:
    """What the ledger records as the job's last_error (the gateway log names the token)."""
    return f"{CANCELLED_BY_OPERATOR}: {request.reason}" if request.reason else (
        CANCELLED_BY_OPERATOR)


# -- cancel ---------------------------------------------------------------------------------


async def cancel(rt: Runtime, completions: Completions, cancel_running: CancelRunning,
                 job_id: str, reason: str, *, wait: float = CANCEL_WAIT) -> VerbAnswer:
    """Cancel a queued or running job (see the module docstring)."""
    job = await _get(rt, job_id)
    if job.status == "queued":
        try:
            done = await rt.queue.cancel(job_id, reason=reason)
        except InvalidTransition:
            job = await _get(rt, job_id)  # claimed (or ended) between the read and the write
        else:
            completions.notify(job_id)  # a sync request waiting on it answers now
            return VerbAnswer(200, done.to_api())
    if job.status != "running":
        raise _not_cancellable(job)
    finished = completions.register(job_id)
    try:
        if not await _hand_to_dispatcher(rt, cancel_running, job_id, reason):
            job = await _get(rt, job_id)
            if job.status != "running":
                raise _not_cancellable(job)
            raise ApiError(503, f"job {job_id} is running but its worker could not be reached; "
                                "retry the cancel")
        with trio.move_on_after(wait):
            await finished.wait()
    finally:
        completions.discard(job_id, finished)
    job = await _get(rt, job_id)
    if job.status == "cancelled":
        return VerbAnswer(200, job.to_api())
    if job.status == "running":
        return VerbAnswer(202, {**job.to_api(), "message": (
            f"cancel requested: the plugin is being stopped; poll GET /job/{job_id}")})
    raise ApiError(409, f"job {job_id} ended {job.status} before the cancel took effect",
                   job_id=job_id, job_status=job.status)


async def _hand_to_dispatcher(rt: Runtime, cancel_running: CancelRunning, job_id: str,
                              reason: str) -> bool:
    """Ask the dispatcher to stop the job, again for a moment if it has not picked up a job it
    just claimed; False when the job stops being `running` or never reaches a worker."""
    with trio.move_on_after(HANDOFF_WAIT):
        while True:
            if await cancel_running(job_id, reason):
                return True
            current = await rt.queue.get(job_id)
            if current is None or current.status != "running":
                return False
            await trio.sleep(0.05)
    return False


def _not_cancellable(job: Job) -> ApiError:
    return ApiError(409, f"job {job.id} is {job.status}: only a queued or running job can be "
                         "cancelled", job_id=job.id, job_status=job.status)


# -- retry ----------------------------------------------------------------------------------


async def retry(rt: Runtime, job_id: str) -> VerbAnswer:
    """Enqueue a failed, timed_out, dead or cancelled job again as a new job."""
    old = await _get(rt, job_id)
    retryable = job_statuses().retryable
    if old.status not in retryable:
        raise ApiError(409, f"job {job_id} is {old.status}: only a job that is "
                            f"{_listed(retryable)} can be retried",
                       job_id=job_id, job_status=old.status)
    _require_plugin(rt, old)
    rt.admit("api", old.plugin)  # Overloaded: 429 with Retry-After (kit.py)
    new = await _enqueue(lambda: rt.queue.enqueue(
        old.plugin, old.command, _payload(old), SUBMITTER,
        max_attempts=rt.config.plugin(old.plugin).retry.max_attempts,
        dedupe_key=old.dedupe_key, parent_job_id=old.parent_job_id,
        event_context_id=old.event_context_id, retry_of=old.id))
    return VerbAnswer(202, {"job_id": new.id, "status": new.status, "plugin": new.plugin,
                            "command": new.command, "retry_of": old.id})


# -- rerun ----------------------------------------------------------------------------------


async def rerun(rt: Runtime, job_id: str) -> VerbAnswer:
    """Start the pipeline run rooted at `job_id` again as a new run."""
    try:
        run = await rt.queue.pipeline_run(job_id)
    except StoreUnavailable as exc:
        raise ApiError(503, f"cannot read job {job_id}: {exc}; retry later") from None
    except StoreError as exc:
        raise ApiError(409, f"cannot rerun job {job_id}: its run's ledger is unreadable: "
                            f"{exc}") from None
    if run is None:
        raise ApiError(404, "job not found")
    if run.root_id != job_id:
        raise ApiError(409, f"job {job_id} is not the root of its pipeline run: the root is "
                            f"job {run.root_id}; rerun that job (ductile pipeline rerun "
                            f"{run.root_id})", job_id=job_id, root_job_id=run.root_id)
    root = run.entries[0].job
    if not run.routed:
        raise ApiError(409, f"job {job_id} started no pipeline run (nothing was routed from "
                            f"it); to run this one job again, use ductile job retry {job_id}",
                       job_id=job_id, job_status=root.status)
    if run.live:
        raise ApiError(409, f"the pipeline run rooted at job {job_id} is still in progress "
                            f"({run.live} job(s) queued or running); wait for it to finish, or "
                            "cancel those jobs first", job_id=job_id, live=run.live)
    if run.entries[0].context is not None and run.instance_root is None:
        return await _rerun_from_trigger(rt, run.entries[0])
    if run.instance_root is None:
        _require_plugin(rt, root)
        rt.admit("api", root.plugin)
        new = await _enqueue(lambda: rt.queue.enqueue(
            root.plugin, root.command, _payload(root), SUBMITTER,
            max_attempts=rt.config.plugin(root.plugin).retry.max_attempts, rerun_of=root.id))
        return VerbAnswer(202, {"job_id": new.id, "run_id": new.id, "status": new.status,
                                "plugin": new.plugin, "command": new.command,
                                "job_ids": [new.id], "rerun_of": job_id})
    return await _rerun_entries(rt, run, job_id)


async def _rerun_entries(rt: Runtime, run: PipelineRun, job_id: str) -> VerbAnswer:
    """Enqueue each entry job of the run again with the event it received, in a new pipeline
    instance (copies of the instance root and entry contexts) under a new event id."""
    assert run.instance_root is not None
    for entry in run.entries:
        _require_plugin(rt, entry.job)
    rt.admit("api", *(entry.job.plugin for entry in run.entries))
    instance = str(uuid.uuid4())
    top = run.instance_root
    root_spec = ContextSpec(top.parent_id, top.pipeline_name, top.step_id,
                            _in_instance(top.accumulated, instance), id=str(uuid.uuid4()))
    event_id = str(uuid.uuid4())
    jobs: list[Job] = []
    for entry in run.entries:
        assert entry.context is not None
        spec = ContextSpec(None, entry.context.pipeline_name, entry.context.step_id,
                           _in_instance(entry.context.accumulated, instance), parent=root_spec)
        payload, source = _with_event_id(entry, event_id)
        old = entry.job

        def again(old: Job = old, payload: Any = payload, source: str | None = source,
                  spec: ContextSpec = spec) -> Awaitable[Job]:
            return rt.queue.enqueue(
                old.plugin, old.command, payload, SUBMITTER,
                max_attempts=rt.config.plugin(old.plugin).retry.max_attempts,
                source_event_id=source, context=spec, rerun_of=old.id)

        try:
            jobs.append(await _enqueue(again))
        except ApiError as exc:
            if not jobs:
                raise
            raise ApiError(503, f"pipeline rerun partially enqueued ({len(jobs)} of "
                                f"{len(run.entries)} entry jobs): {exc.message}",
                           job_ids=[job.id for job in jobs]) from None
    return VerbAnswer(202, {"job_id": jobs[0].id, "run_id": jobs[0].id,
                            "status": jobs[0].status, "plugin": "pipeline",
                            "command": top.pipeline_name,
                            "job_ids": [job.id for job in jobs], "rerun_of": job_id})


async def _rerun_from_trigger(rt: Runtime, root: RunEntry) -> VerbAnswer:
    """Start again a run whose root is its pipeline-instance root (a fanned-out start's
    `core.split` job): from the trigger event it holds and the root baggage of its context."""
    assert root.context is not None
    name = root.context.pipeline_name or ""
    pipeline = rt.pipelines.pipelines.get(name)
    if pipeline is None:
        raise ApiError(409, f"pipeline {name!r} of the run rooted at job {root.job.id} is not "
                            "in the running config any more; ductile pipeline list shows the "
                            "configured ones", job_id=root.job.id)
    event = _payload(root.job)
    payload = event.get("payload") if isinstance(event, dict) else None
    if not isinstance(payload, dict):
        raise ApiError(409, f"job {root.job.id} holds no trigger event to start its run from",
                       job_id=root.job.id)
    baggage = {k: v for k, v in root.context.accumulated.items() if k != CONTROL}
    request = PipelineRequest(payload=payload, baggage=baggage or None)
    try:
        started = await _enqueue(lambda: enqueue_run(rt, pipeline, request,
                                                         rerun_of=root.job.id))
    except (BaggageError, ValueError) as exc:
        raise ApiError(409, f"cannot start pipeline {name!r} again: {exc}",
                       job_id=root.job.id) from None
    entries = started.entries or (started.run,)
    return VerbAnswer(202, {"job_id": started.run.id, "run_id": started.run.id,
                            "status": entries[0].status, "plugin": "pipeline", "command": name,
                            "job_ids": [job.id for job in entries], "rerun_of": root.job.id})


def _in_instance(accumulated: Mapping[str, Any], instance: str) -> dict[str, Any]:
    """A copy of a stored context's accumulated object, moved to pipeline instance
    `instance` (the control namespace's pipeline_instance_id); the baggage is unchanged."""
    moved = copy.deepcopy(dict(accumulated))
    control = moved.get(CONTROL)
    if isinstance(control, dict):
        control["pipeline_instance_id"] = instance
    return moved


def _with_event_id(entry: RunEntry, event_id: str) -> tuple[Any, str | None]:
    """The entry's stored event with a new event id, and its source event id to match (a
    second dispatch to one target keeps its `@pipeline/step` suffix)."""
    payload = _payload(entry.job)
    old = payload.get("event_id") if isinstance(payload, dict) else None
    if isinstance(payload, dict) and isinstance(old, str):
        payload = {**payload, "event_id": event_id}
    source = entry.job.source_event_id
    if source is None:
        return payload, None
    if isinstance(old, str) and source.startswith(old):
        return payload, event_id + source[len(old):]
    return payload, event_id


# -- shared ---------------------------------------------------------------------------------


async def _get(rt: Runtime, job_id: str) -> Job:
    try:
        job = await rt.queue.get(job_id)
    except StoreUnavailable as exc:
        raise ApiError(503, f"cannot read job {job_id}: {exc}; retry later") from None
    if job is None:
        raise ApiError(404, "job not found")
    return job


def _require_plugin(rt: Runtime, job: Job) -> None:
    """A job runs again only on a plugin the serving config still has (the built-in
    `core.*` steps are always there)."""
    if job.plugin.startswith("core.") or job.plugin in rt.plugins:
        return
    raise ApiError(409, f"plugin {job.plugin!r} of job {job.id} is not loaded by the running "
                        "gateway (removed, disabled or not discovered); enable it and reload "
                        "first", job_id=job.id, plugin=job.plugin)


def _payload(job: Job) -> Any:
    try:
        return job.payload_obj()
    except StoreError as exc:
        raise ApiError(409, f"cannot run job {job.id} again: {exc}", job_id=job.id) from None


async def _enqueue(enqueue: Callable[[], Awaitable[T]]) -> T:
    """Run one enqueue, mapping the store's refusals to answers."""
    try:
        return await enqueue()
    except JobNotFound:
        raise ApiError(404, "job not found") from None
    except JobStateConflict as exc:
        raise ApiError(409, str(exc), job_id=exc.job_id, job_status=exc.status) from None
    except DedupeDropped as exc:
        raise ApiError(409, f"not enqueued: job {exc.existing_job_id} with the same dedupe key "
                            f"{_dedupe_state(exc.reason)}; see ductile job inspect "
                            f"{exc.existing_job_id}", existing_job_id=exc.existing_job_id
                       ) from None
    except StoreUnavailable as exc:
        raise ApiError(503, f"failed to enqueue job: {exc}; nothing was queued, retry "
                            "later") from None
    except StoreError as exc:
        raise ApiError(409, f"not enqueued: {exc}") from None


def _dedupe_state(reason: str) -> str:
    return {"outstanding": "is still queued or running",
            "recent_success": "succeeded within service.dedupe_ttl"}.get(reason, reason)


def _listed(statuses: frozenset[str]) -> str:
    ordered = [s for s in job_statuses().all if s in statuses]
    return ", ".join(ordered[:-1]) + " or " + ordered[-1] if len(ordered) > 1 else "".join(
        ordered)
