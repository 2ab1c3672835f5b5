"""`respond: result`: answer a delivery with its job's outcome instead of a bare 202.

After the job is queued, the request waits (up to the endpoint's `respond_timeout`) for the job
to reach a terminal status, then answers:

- 200 `{job_id, status, result}` when it succeeded; `result` is the plugin's response object,
  as `GET /job/{id}` shows it;
- 502 `{job_id, status, error}` when it ended any other way (failed, timed out, dead,
  cancelled, skipped): the sender asked for a result and the plugin gave none;
- 202 `{job_id, status}` (`queued` or `running`) when the time ran out, every wait slot was
  taken, the gateway is stopping, or the job could not be read back. The job is stored in each
  case and keeps going; only the answer stops waiting.

The waits are bounded by a semaphore of `sync_slots` per listener (the API has its own, sized
by `api.max_concurrent_sync`), so slow plugins hold at most that many requests open; past it a
delivery is answered 202 at once instead of queueing behind them. Waiting uses the same wake-ups
as the API's `sync: true`: the dispatcher notifies `completions` when a job ends, and a waiter
registers before it reads the job's status, so an end between the read and the wait is never
missed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ductile.errors import StoreError
from ductile.machines import job_statuses

if TYPE_CHECKING:
    from ductile.store.jobs import Job, LogEntry

#: Synchronous answers waiting at once on one webhook listener (the API's default, too).
SYNC_SLOTS = 10


class Waiters(Protocol):
    """What wakes a waiter when a job ends (`ductile.dispatch.completions.Completions`)."""

    def register(self, job_id: str) -> trio.Event: ...

    def discard(self, job_id: str, event: trio.Event) -> None: ...


class JobReader(Protocol):
    """The two reads of the job queue an answer needs (a subset of `JobQueue`)."""

    async def get(self, job_id: str) -> Job | None: ...

    async def log_entries(self, job_id: str) -> list[LogEntry]: ...


@dataclass(frozen=True)
class JobOutcomes:
    """What a synchronous answer reads from the process: narrow callables, never the
    supervisor. `jobs()` is the serving generation's queue (a reload may replace it);
    `stopping()` is true once a stop was asked for (waiters are then woken and answer 202)."""

    completions: Waiters
    jobs: Callable[[], JobReader]
    stopping: Callable[[], bool]


@dataclass(frozen=True)
class Answer:
    """The HTTP status and JSON body of one delivery, and how it came about (for the log;
    `warn` when the operator should hear of it: slots exhausted, the store unreadable)."""

    status: int
    body: dict[str, Any]
    why: str
    warn: bool = False


class Responder:
    """The synchronous answers of one webhook listener: the process's job outcomes and the
    listener's wait slots. Lives as long as the listener (a reload keeps it)."""

    def __init__(self, outcomes: JobOutcomes, sync_slots: int = SYNC_SLOTS) -> None:
        self.outcomes = outcomes
        self.size = max(1, sync_slots)
        self.slots = trio.Semaphore(self.size)

    async def answer(self, job_id: str, status: str, timeout: float) -> Answer:
        """Wait for the job, up to `timeout` seconds, and say how it ended."""
        try:
            self.slots.acquire_nowait()
        except trio.WouldBlock:
            return _pending(job_id, status, f"all {self.size} synchronous answer slots are "
                                            "taken; answered without waiting", warn=True)
        try:
            return await self._wait(job_id, status, trio.current_time() + timeout)
        finally:
            self.slots.release()

    async def _wait(self, job_id: str, status: str, deadline: float) -> Answer:
        statuses = job_statuses()
        while True:
            event = self.outcomes.completions.register(job_id)
            try:
                try:
                    job = await self.outcomes.jobs().get(job_id)
                except StoreError as exc:
                    return _pending(job_id, status, f"the job could not be read back: {exc}",
                                    warn=True)
                if job is None:
                    return _pending(job_id, status, "the job is no longer in the queue",
                                    warn=True)
                if job.status in statuses.terminal:
                    return await self._ended(job)
                status = job.status
                if self.outcomes.stopping():
                    return _pending(job_id, status, "the gateway is stopping")
                if trio.current_time() >= deadline:
                    return _pending(job_id, status, "respond_timeout passed")
                with trio.move_on_at(deadline):
                    await event.wait()
                # Woken (the job ended, or the gateway is stopping) or out of time: read the
                # job again, so an end right at the deadline is still reported.
            finally:
                self.outcomes.completions.discard(job_id, event)

    async def _ended(self, job: Job) -> Answer:
        if job.status != "succeeded":
            error = job.last_error or f"the job ended {job.status}"
            return Answer(502, {"job_id": job.id, "status": job.status, "error": error},
                          "the job did not succeed")
        try:
            entries = await self.outcomes.jobs().log_entries(job.id)
        except StoreError as exc:
            return _pending(job.id, job.status, f"the job's result could not be read: {exc}",
                            warn=True)
        view = job.to_api(result=entries[-1].result if entries else None)
        return Answer(200, {"job_id": job.id, "status": job.status,
                            "result": view.get("result")}, "the job succeeded")


def _pending(job_id: str, status: str, why: str, *, warn: bool = False) -> Answer:
    return Answer(202, {"job_id": job_id, "status": status}, why, warn)
