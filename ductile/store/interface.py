"""The narrow store interface: what the layers above the store call on `Runtime.queue`.

`JobQueue` is exactly the set of methods the dispatcher (ductile/dispatch), the scheduler
(ductile/schedule) and the planes (ductile/planes: the API, and the webhook plane through the
`enqueue` boot hands it) call on `rt.queue`. `OrphanRecovery` is the one more call boot makes
on a queue of its own, before anything is dispatched. SQLite's `ductile.store.queue.Queue`
and PostgreSQL's `ductile.store.pg.queue.PgQueue` implement both; tests/test_store_interface.py
checks that every method here exists on each with the same parameters, and that the upper
layers call nothing on `rt.queue` beyond `JobQueue`; tests/test_store_contract.py runs one
suite over both for every guarantee listed below. They are Protocols (structural), so a backend
implements them without inheriting from anything (the two existing ones share the facade
`QueueCore` and differ only in their SQL); the records they return (`Claim`, `Finished`,
`Successor`, `DroppedSuccessor` in queue.py, `Job`, `LogEntry` in jobs.py) and the values
module (values.py: payload encoding, the row of a new job) are shared, not reimplemented.

What a second backend must guarantee, because the callers rely on it without checking:

- Serialised writes. SQLite has one writer thread and every method is one transaction
  (`Database.write`); another backend needs the equivalent: two claims never take the same job,
  and every status change is guarded by the status it was checked against (a row changed
  behind the writer's back is refused, never overwritten).
- The job machine (`states/job.yaml`, `ductile.machines.load_machine("job")`) is checked on
  every status change, under the trigger that makes it (queued -> cancelled is a `cancel`,
  running -> cancelled a `stop`, running -> queued a `retry` or an `interrupt`, never a
  `complete`), raising InvalidTransition; each change is recorded as a job_transitions row in
  the same transaction, so the history always explains the status.
- The attempt ledger: an attempt row opened at claim, finished by complete, retry or crash
  recovery; one job_log row per terminal attempt. An outcome for a stale attempt, or a retry
  of the last attempt, is refused (StoreError).
- `complete_and_claim` is atomic: the terminal status, its state update or facts, its
  successors (each with its context) and the chained claim commit together or not at all. A
  successor refused as a redelivery (SourceEventConflict) or by its dedupe key (DedupeDropped)
  is skipped and reported in `Finished.dropped`; any other refusal aborts the whole write. A
  merged plugin state over 1 MiB is a StoreError with nothing written.
- Claim order and eligibility: FIFO by created_at (a retry keeps its place), only jobs due,
  never a plugin in the skip list, never a job sharing its dedupe key and target with a
  running one. `Claim.state` and `Claim.context` are read in the claiming transaction; an
  unreadable state is reported in `Claim.state_error`, never raised.
- Caps (`claim_next(caps=)`): a plugin -> the most of its jobs running at once in the whole
  store, every gateway sharing it included. A capped claim counts the plugin's running jobs
  in its own transaction and claims one only below the cap, so claims that pass caps never
  take the count past it, however many gateways claim at once (SQLite: the one writer;
  PostgreSQL: a per-plugin advisory lock taken without waiting, store/pg/writes.py). No
  counter is stored. A cap binds only the claims that pass it (every claimer must pass the
  same caps), and a capped plugin may be passed over while its count is being taken by
  another gateway: a None claim then means "nothing now", as for a skip list. The chained
  claim of `complete_and_claim` / `retry_and_claim` takes no caps (yet): a capped plugin's
  jobs must be claimed through `claim_next` alone.
- Enqueue dedupe (`outstanding`, and `recent_success` within the TTL) raises DedupeDropped
  naming the existing job; a repeated (parent, source event, target) raises
  SourceEventConflict; both before anything is written.
- Errors: StoreUnavailable (nothing written, may succeed later) is kept apart from other
  StoreErrors (refused for good): the dispatcher waits out the first and fails the job on the
  second.
- Waking: the dispatcher is woken (`on_enqueue`) after every commit that made a job
  claimable (enqueue, retry, successors, recovery).
- Recovery (`recover_orphans`): each job left `running` is requeued as attempt + 1, or buried
  `dead` when out of attempts or when it was running during POISON_CRASHES crashes (writes.py).
  An `interrupt` (a clean stop) is no crash: it never counts towards the poison quarantine.
  With several gateways on one store (PostgreSQL, a PgQueue given its node identity), each
  claim records the node life that made it, and recovery never touches a live node's jobs:
  at boot a node recovers only what its own earlier lives left running, and a node declared
  dead by a peer (missed heartbeats) has its jobs recovered by that peer in the declaring
  transaction, once, by the same rules (`PgQueue.reap_dead_nodes`).
- Fencing (PostgreSQL, node-aware): a node life that is no longer alive has every claim and
  outcome refused (NodeFenced), and an outcome for a job another life claimed is refused
  (StoreError) whatever its attempt number, so a frozen node that wakes up after its jobs were
  recovered can never overwrite what their new runs record (store/pg/cluster.py). This and
  the per-node recovery above need several nodes, so tests/test_store_pg_nodes.py checks them
  rather than the contract suite.
- Operator links: a job enqueued with `retry_of` is refused (JobStateConflict) unless the job it
  names is in a `retryable` status of the job machine and was never retried before, checked in
  the inserting transaction; `links` answers both directions of retry_of and rerun_of.

Plugin state is not part of this interface: no upper layer uses `rt.state`. State reaches
the dispatcher in `Claim.state` and leaves through `complete_and_claim(state_update=,
facts=)`, so a second backend provides it inside those two methods. The CLI's readers
(ledger.py, tree.py, joblog.py) run on a read-only SQLite connection and are not covered here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from ductile.store.values import DEFAULT_MAX_ATTEMPTS

if TYPE_CHECKING:
    from ductile.store.context import ContextSpec
    from ductile.store.facts import FactPlan
    from ductile.store.joblog import LogFilter
    from ductile.store.jobs import Attempt, Job, JobLinks, LogEntry, Transition
    from ductile.store.queue import Claim, Finished, Successor
    from ductile.store.tree import PipelineRun


class JobQueue(Protocol):
    """The job queue as the dispatcher, the scheduler and the planes use it (see above)."""

    # -- writes -------------------------------------------------------------------------

    async def enqueue(
        self,
        plugin: str,
        command: str,
        payload: Any,
        submitted_by: str,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        dedupe_key: str | None = None,
        dedupe_ttl: float | None = None,
        parent_job_id: str | None = None,
        event_context_id: str | None = None,
        source_event_id: str | None = None,
        context: ContextSpec | None = None,
        retry_of: str | None = None,
        rerun_of: str | None = None,
        guard: Callable[[Any, Job], None] | None = None,
    ) -> Job:
        """Insert a queued job (scheduler, API, webhooks); DedupeDropped/SourceEventConflict;
        with `retry_of`, JobNotFound/JobStateConflict. `guard(conn, job)` runs first in the
        inserting transaction and refuses the enqueue by raising (the scheduler leader's
        exactly-once fire row on PostgreSQL)."""
        ...

    async def start_run(
        self,
        root: Successor,
        branches: Sequence[Successor],
        *,
        result: str | None,
        reason: str,
        rerun_of: str | None = None,
    ) -> Finished:
        """A run whose first step fans out: its synthetic root job, written `succeeded`, and
        the branches as the root's successors, atomically (`POST /pipeline/{name}`)."""
        ...

    async def claim_next(
        self, skip_plugins: Collection[str] = (), caps: Mapping[str, int] | None = None
    ) -> Claim | None:
        """Move the oldest eligible job to running, with its plugin state (dispatcher);
        `caps` bounds each listed plugin's running jobs across the whole store."""
        ...

    async def complete_and_claim(
        self,
        job: Job,
        status: str,
        *,
        result: str | None,
        last_error: str | None,
        stderr: str | None,
        exit_code: int | None,
        duration_ms: int | None,
        outcome: str,
        state_update: tuple[str, Mapping[str, Any]] | None = None,
        claim_next: Collection[str] | None = None,
        decision: str | None = None,
        successors: Sequence[Successor] = (),
        facts: FactPlan | None = None,
    ) -> Finished:
        """End a running job in a terminal status, with its successors, atomically."""
        ...

    async def retry_and_claim(
        self,
        job: Job,
        *,
        delay: float,
        last_error: str | None,
        exit_code: int | None,
        duration_ms: int | None,
        outcome: str,
        stderr: str | None,
        claim_next: Collection[str] | None = None,
    ) -> Finished:
        """Send a running job back to the queue as attempt + 1, due after `delay` seconds."""
        ...

    async def cancel(self, job_id: str, *, reason: str = "cancelled") -> Job:
        """End a queued job `cancelled` before it runs (the scheduler's `if_running: cancel`,
        `ductile job cancel`); InvalidTransition when it is not queued, JobNotFound."""
        ...

    async def interrupt(self, job: Job, *, duration_ms: int | None, stderr: str | None) -> Job:
        """Send a running job whose attempt a clean stop cut short back to the queue, the
        attempt not counted (dispatcher, at the end of service.shutdown_grace)."""
        ...

    # -- reads --------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        """The job, or None."""
        ...

    async def transitions(self, job_id: str) -> list[Transition]:
        """The job's status history, oldest first (the web ledger's job page)."""
        ...

    async def attempts(self, job_id: str) -> list[Attempt]:
        """Every attempt of the job, first first (the live stderr stream reads the last one's
        stored stderr when the job has ended)."""
        ...

    async def list(
        self,
        *,
        plugin: str | None = None,
        command: str | None = None,
        status: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Job], int]:
        """Jobs newest first (at most `limit`) and the total matching count."""
        ...

    async def links(self, job: Job) -> JobLinks:
        """The job's retry and rerun links, both ways."""
        ...

    async def pipeline_run(self, job_id: str) -> PipelineRun | None:
        """The pipeline run `job_id` is the root of (store/tree.py), or None."""
        ...

    async def tree(self, root_id: str) -> dict[str, Any] | None:
        """The job tree under `root_id` (see store/tree.py), or None."""
        ...

    async def log_entries(self, job_id: str) -> list[LogEntry]:
        """The job's job_log rows (one per terminal attempt), by attempt."""
        ...

    async def search_logs(self, where: LogFilter) -> tuple[list[LogEntry], int]:
        """Job log rows matching `where`, newest first, and the total."""
        ...

    async def queue_depth(self) -> int:
        """How many jobs are queued (due or not)."""
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest retry time of a queued job (possibly past), or None."""
        ...

    async def outstanding_counts(self) -> dict[str, int]:
        """Jobs in a live status (queued or running) per plugin; plugins with none left out.
        Read at boot and every few seconds to re-sync the ingress backpressure count."""
        ...


class OrphanRecovery(Protocol):
    """Crash recovery, run by boot on the database before the dispatcher starts."""

    async def recover_orphans(self) -> list[Job]:
        """Requeue or bury every job a crash left `running`; return their new rows. A
        node-aware PgQueue takes only its own earlier lives' jobs (and unowned ones)."""
        ...
