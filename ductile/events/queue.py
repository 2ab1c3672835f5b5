"""The job queue, publishing the job lifecycle to the event hub.

`EventedQueue` wraps the store's queue: every write that moves a job (enqueue, claim, complete,
retry, cancel) goes through it, from whichever plane, the scheduler or the dispatcher, and the
event is published after the write commits, so a subscriber never hears of a status the ledger
does not hold. Reads pass straight through. Publishing is synchronous and never waits
(events/hub.py): the dispatcher's path gains no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ductile.events.hub import Publish
from ductile.machines import job_statuses

if TYPE_CHECKING:
    from ductile.store.interface import JobQueue
    from ductile.store.jobs import Job
    from ductile.store.queue import Claim, Finished, Successor

def terminal_event(status: str) -> str:
    """The event of a terminal status: `job.<status>`, except success, `job.completed` (as in
    the Go original)."""
    return "job.completed" if status == "succeeded" else f"job.{status}"


class EventedQueue:
    """A `JobQueue` (store/interface.py) that publishes what each write did."""

    def __init__(self, inner: JobQueue, publish: Publish) -> None:
        self._inner = inner
        self._publish = publish
        # Running job id -> (pipeline, step_id), from its claim: a completion names the
        # pipeline without another read.
        self._steps: dict[str, tuple[str | None, str | None]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # the reads (store/interface.py)

    async def enqueue(self, plugin: str, command: str, payload: Any, submitted_by: str,
                      **options: Any) -> Job:
        job = await self._inner.enqueue(plugin, command, payload, submitted_by, **options)
        context = options.get("context")
        pipeline = getattr(context, "pipeline_name", None)
        self._publish("job.enqueued", **_job(job), pipeline=pipeline,
                      step_id=getattr(context, "step_id", None))
        if pipeline is not None and job.parent_job_id is None:
            self._publish("pipeline.enqueued", job_id=job.id, job_ids=[job.id], job_count=1,
                          pipeline=pipeline, plugin=job.plugin, submitted_by=job.submitted_by)
        return job

    async def start_run(self, root: Successor, branches: Sequence[Successor],
                        **options: Any) -> Finished:
        finished = await self._inner.start_run(root, branches, **options)
        pipeline = root.context.pipeline_name if root.context is not None else None
        for branch, job in _kept(branches, finished):
            self._publish("job.enqueued", **_job(job), pipeline=_pipeline(branch) or pipeline,
                          step_id=_step(branch))
        self._publish("pipeline.enqueued", job_id=finished.job.id,
                      job_ids=[job.id for job in finished.successors],
                      job_count=len(finished.successors), pipeline=pipeline,
                      submitted_by=finished.job.submitted_by)
        return finished

    async def claim_next(self, skip_plugins: Collection[str] = (),
                         caps: Mapping[str, int] | None = None) -> Claim | None:
        claim = await self._inner.claim_next(skip_plugins, caps=caps)
        self._started(claim)
        return claim

    async def complete_and_claim(self, job: Job, status: str, **ending: Any) -> Finished:
        finished = await self._inner.complete_and_claim(job, status, **ending)
        pipeline, step = self._steps.pop(job.id, (None, None))
        done = finished.job
        common = dict(_job(done), pipeline=pipeline, step_id=step,
                      duration_ms=ending.get("duration_ms"), outcome=ending.get("outcome"),
                      error=ending.get("last_error"))
        if status in job_statuses().failure:
            self._publish("job.retry_exhausted", job_id=done.id, plugin=done.plugin,
                          command=done.command, status=status, attempts=done.attempt,
                          final_error=ending.get("last_error"), pipeline=pipeline,
                          reason=ending.get("decision") or ending.get("outcome"))
        self._publish(terminal_event(status), **common,
                      reason=ending.get("decision"))
        for successor, child in _kept(ending.get("successors", ()), finished):
            kind = "router.enqueued" if successor.context is not None else "job.enqueued"
            self._publish(kind, **_job(child), pipeline=_pipeline(successor),
                          step_id=_step(successor), event_context_id=child.event_context_id)
        self._started(finished.next)
        return finished

    async def retry_and_claim(self, job: Job, **ending: Any) -> Finished:
        finished = await self._inner.retry_and_claim(job, **ending)
        pipeline, step = self._steps.pop(job.id, (None, None))
        again = finished.job
        delay = ending.get("delay")
        self._publish("job.retry_scheduled", **_job(again), pipeline=pipeline, step_id=step,
                      max_attempts=again.max_attempts, next_retry_at=again.next_retry_at,
                      backoff_ms=round(delay * 1000) if delay is not None else None,
                      reason=ending.get("outcome"), error=ending.get("last_error"),
                      duration_ms=ending.get("duration_ms"))
        self._started(finished.next)
        return finished

    async def cancel(self, job_id: str, *, reason: str = "cancelled") -> Job:
        job = await self._inner.cancel(job_id, reason=reason)
        self._publish("job.cancelled", **_job(job), reason=reason)
        return job

    def _started(self, claim: Claim | None) -> None:
        if claim is None:
            return
        job = claim.job
        context = claim.context
        pipeline = context.pipeline_name if context is not None else None
        step = context.step_id if context is not None else None
        self._steps[job.id] = (pipeline, step)
        self._publish("job.started", **_job(job), pipeline=pipeline, step_id=step,
                      wait_ms=_wait_ms(job))


def _job(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "plugin": job.plugin, "command": job.command,
            "status": job.status, "attempt": job.attempt, "submitted_by": job.submitted_by,
            "parent_job_id": job.parent_job_id}


def _kept(successors: Sequence[Successor], finished: Finished) -> list[tuple[Successor, Job]]:
    """Each enqueued job with the successor it came from (the dropped ones left out)."""
    dropped = {id(d.successor) for d in finished.dropped}
    return list(zip([s for s in successors if id(s) not in dropped], finished.successors))


def _pipeline(successor: Successor) -> str | None:
    return successor.context.pipeline_name if successor.context is not None else None


def _step(successor: Successor) -> str | None:
    return successor.context.step_id if successor.context is not None else None


def _wait_ms(job: Job) -> int | None:
    """How long the job waited in the queue for this attempt (from its due time)."""
    try:
        since = datetime.fromisoformat(job.next_retry_at or job.created_at)
        started = datetime.fromisoformat(job.started_at or "")
    except (TypeError, ValueError):
        return None
    return max(0, round((started - since).total_seconds() * 1000))
