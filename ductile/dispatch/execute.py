"""Run one claimed job from claim to recorded outcome, and the job boundary around it.

One job's path, in order: `attempt.attempt` (decode, admit, build the request, spawn, classify)
→ `verdict.decide` (pure: what to write) → `record.record` (the one store call). `execute`
strings them together; `contain_fault` is what happens when any of them raises.
"""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING

from ductile.dispatch.attempt import RunCancel, Trace, attempt
from ductile.dispatch.record import NextSkip, record
from ductile.dispatch.verdict import LogLine, Record, Routes, decide, fault, state_rejected
from ductile.errors import StoreError, StoreUnavailable
from ductile.logs import Logger

if TYPE_CHECKING:
    from ductile.dispatch.live import LiveStderr
    from ductile.runtime import Runtime
    from ductile.store.jobs import Job
    from ductile.store.queue import Claim, Finished


async def execute(
    rt: Runtime,
    claim: Claim,
    log: Logger,
    *,
    kill_grace: float = 5.0,
    claim_next: NextSkip | None = None,
    cancel: RunCancel | None = None,
    trace: Trace | None = None,
    live: LiveStderr | None = None,
) -> Claim | None:
    """Run one claimed job to its next status (terminal, or queued again for a retry).

    `cancel.request(reason)` stops the plugin (SIGTERM to its process group, SIGKILL after
    `kill_grace`) and ends the job `cancelled`.
    With `claim_next` (returning a skip list, or None for "claim nothing"), the next eligible
    job is claimed in the transaction that records this outcome, and returned. With `live`, the
    plugin's stderr is published there as it runs (`job logs --follow`).
    """
    trace = trace or Trace()
    job = claim.job
    step, happened = await attempt(rt, claim, kill_grace=kill_grace,
                                   cancel=cancel or RunCancel(), trace=trace, live=live)
    trace.stage = "routing the outcome"
    rec = decide(Routes.of(rt), job, step, happened)
    trace.stage = "recording the outcome"
    _emit(log, rec.before)
    try:
        finished = await record(rt.queue, job, rec, log, claim_next)
    except StoreUnavailable:
        raise
    except StoreError as exc:
        if rec.status != "succeeded":
            raise
        # The store refused what the success carries (its merged state over 1 MiB, a
        # successor's context too large): nothing was written; the job fails instead.
        rec = state_rejected(job, rec, exc)
        finished = await record(rt.queue, job, rec, log, claim_next)
    _emit(log, rec.after)
    _log_routed(log, job, finished)
    return finished.next


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
    log.error("job fault contained", job_id=job.id, plugin=job.plugin, command=job.command,
              stage=trace.stage, error=error,
              traceback="".join(traceback.format_exception(exc)))
    current = await rt.queue.get(job.id)
    if current is None or current.status != "running" or current.attempt != job.attempt:
        # The outcome was already recorded and the fault came after it (a log line, a
        # chained claim's bookkeeping): the ledger is right as it stands.
        return None
    rec = fault(Routes.of(rt), job, error, trace.elapsed_ms())
    _emit(log, rec.before)
    try:
        finished = await record(rt.queue, job, rec, log, claim_next)
    except StoreUnavailable:
        raise
    except StoreError:
        if not rec.successors:
            raise
        # A hook the store refuses must not keep the failure itself from being recorded.
        rec = Record(rec.status, rec.outcome, result=rec.result, last_error=rec.last_error,
                     duration_ms=rec.duration_ms, after=rec.after)
        finished = await record(rt.queue, job, rec, log, claim_next)
    _emit(log, rec.after)
    return finished.next


def _emit(log: Logger, lines: tuple[LogLine, ...]) -> None:
    for line in lines:
        getattr(log, line.level)(line.msg, **line.fields)


def _log_routed(log: Logger, job: Job, finished: Finished) -> None:
    for dropped in finished.dropped:
        log.info("routed job dropped", job_id=job.id, plugin=dropped.successor.plugin,
                 reason=str(dropped.error))
    if finished.successors:
        log.debug("routed", job_id=job.id, jobs=[j.id for j in finished.successors])
