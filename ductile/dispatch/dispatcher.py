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

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import trio

from ductile.dispatch.attempt import RunCancel, Trace
from ductile.dispatch.completions import Completions
from ductile.dispatch.execute import contain_fault, execute
from ductile.errors import NodeFenced, StoreError, StoreUnavailable
from ductile.logs import Logger

if TYPE_CHECKING:
    from ductile.dispatch.live import LiveStderr
    from ductile.runtime import Runtime
    from ductile.store.jobs import Job
    from ductile.store.queue import Claim

UNAVAILABLE_PAUSE = 1.0  # seconds between claim attempts while the database refuses writes


class Dispatcher:
    def __init__(
        self, current: Callable[[], Runtime], completions: Completions, log: Logger,
        live: LiveStderr | None = None,
    ) -> None:
        self._current = current
        self._completions = completions
        self._live = live  # where running plugins' stderr lines are published, if anywhere
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
        """Stop a job running in this process: its plugin's process group gets SIGTERM, then
        SIGKILL after `kill_grace`, and the job ends `cancelled` with `reason` as last_error
        (a job whose plugin has not started yet is not started). False when the job is not
        running here. Returns once the request is made; the job's completion
        (`Completions`) says when it has ended, and how: it may have finished first."""
        handle = self._cancels.get(job_id)
        if handle is None:
            return False
        handle.request(reason)
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
        """Stop claiming; running jobs get `grace` seconds to finish before they are cancelled:
        their plugins are killed and each job is recorded back to `queued` as interrupted by
        the stop (see `_interrupted`), to run again after the next start."""
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
                claim = await rt.queue.claim_next(skip, caps=rt.cluster_caps())
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
                    if rt.cluster_caps():
                        # Caps held across a cluster are checked by the claim itself, which
                        # the chained claim does not take: claim afresh instead.
                        return None
                    if self._claiming and rt is self._current() and (routed or not self._dry):
                        return self._skip_list(rt, finishing=job.plugin)
                    return None

                handle = self._cancels[job.id] = RunCancel()
                trace = Trace()
                try:
                    next_claim = await execute(
                        rt, next_claim, self._log, kill_grace=self.kill_grace, claim_next=chain,
                        cancel=handle, trace=trace, live=self._live,
                    )
                except NodeFenced:
                    # Not this job's fault: a peer declared this node dead and took its work.
                    # The process ends (the plugins' groups are killed on the way out).
                    raise
                except Exception as exc:  # noqa: BLE001 - the job boundary: see contain_fault
                    next_claim = await contain_fault(rt, job, trace, exc, self._log, chain)
                except BaseException:
                    # Cancelled (often inside a group from the plugin's own nursery): the stop's
                    # grace ran out, or the process is going down. Not the job's fault.
                    await self._interrupted(rt, job, trace)
                    raise
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

    async def _interrupted(self, rt: Runtime, job: Job, trace: Trace) -> None:
        """`job` was still in hand when the process stopped dispatching (the shutdown grace
        ran out): record it back to `queued` as interrupted by the stop, so the next boot does
        not take it for a crash and count a poison-job strike against it. Shielded, since it
        runs while our scope is cancelled; a write can never be abandoned half-way anyway. If
        the store refuses (the outcome was written meanwhile, or the database is gone), crash
        recovery requeues the job at the next start as before."""
        with trio.CancelScope(shield=True):
            try:
                await rt.queue.interrupt(job, duration_ms=trace.elapsed_ms(), stderr=None)
            except NodeFenced as exc:
                self._log.warn("interrupted job not recorded: this node is fenced and a peer "
                               "already recovered the job", job_id=job.id, plugin=job.plugin,
                               error=str(exc))
                return
            except StoreError as exc:
                self._log.warn("interrupted job not recorded (its outcome may have landed "
                               "first); if it is still running, crash recovery requeues it at "
                               "the next start", job_id=job.id, plugin=job.plugin,
                               error=str(exc))
                return
        self._log.warn("job interrupted by shutdown; it runs again after the next start",
                       job_id=job.id, plugin=job.plugin, attempt=job.attempt)


def _now() -> datetime:
    return datetime.now(timezone.utc)
