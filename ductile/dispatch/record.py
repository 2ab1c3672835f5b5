"""Make the one write that ends an attempt: the only place the dispatcher writes a job's
outcome to the store.

A `Record` (from dispatch/verdict.py) becomes one `complete_and_claim` (a terminal status, its
successors, its state or facts) or one `retry_and_claim` (queued again after a delay). With a
skip list from the dispatcher, the next eligible job is claimed in the same transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from ductile.errors import StoreUnavailable
from ductile.logs import Logger

if TYPE_CHECKING:
    from ductile.dispatch.verdict import Record
    from ductile.store.jobs import Job
    from ductile.store.interface import JobQueue
    from ductile.store.queue import Finished

# The skip list for chaining a claim, or None: don't. Called with True when the record enqueues
# successors, which are then worth claiming even if the queue looked dry before.
NextSkip = Callable[[bool], "list[str] | None"]
PERSIST_BACKOFF_MAX = 5.0


async def record(queue: JobQueue, job: Job, rec: Record, log: Logger,
                 claim_next: NextSkip | None = None) -> Finished:
    """Write `rec` for `job`, waiting out a database that cannot take writes."""
    skip = claim_next(bool(rec.successors)) if claim_next is not None else None
    if rec.retry_in is not None:
        return await persist(log, job, lambda: queue.retry_and_claim(
            job, delay=rec.retry_in, last_error=rec.last_error, exit_code=rec.exit_code,
            duration_ms=rec.duration_ms, outcome=rec.outcome, stderr=rec.stderr,
            claim_next=skip,
        ))
    return await persist(log, job, lambda: queue.complete_and_claim(
        job, rec.status, result=rec.result, last_error=rec.last_error, stderr=rec.stderr,
        exit_code=rec.exit_code, duration_ms=rec.duration_ms, outcome=rec.outcome,
        state_update=(job.plugin, rec.state_update) if rec.state_update else None,
        facts=rec.facts, claim_next=skip, decision=rec.decision,
        successors=rec.successors,
    ))


async def persist(log: Logger, job: Job, write: Callable[[], Awaitable[Finished]]) -> Finished:
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
