"""The retention task: prune old terminal rows every `service.tick_interval`.

It runs in the supervisor's nursery beside the dispatcher. Pruning happens in small batches
(`store/retention.py`), so the single writer is never held long and enqueues interleave. A
database that cannot take writes right now is logged and tried again at the next tick. The
deletes are the runtime's backend's (`rt.backend.retention`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ductile.errors import StoreError
from ductile.logs import Logger
from ductile.store.retention import RetentionPolicy, prune

if TYPE_CHECKING:
    from ductile.runtime import Runtime
    from ductile.store.retention import Writer

FIRST_RUN_DELAY = 1.0  # seconds after boot: keep start-up itself free of deletes


def policy_for(rt: Runtime) -> RetentionPolicy:
    service = rt.config.service
    return RetentionPolicy(
        job_log=service.job_log_retention,
        job_queue=service.job_queue_retention,
        job_transitions=service.job_transitions_retention,
        job_attempts=service.job_attempts_retention,
        breaker_transitions=service.breaker_transitions_retention,
    )


async def run_retention(current: Callable[[], Runtime], db: Writer, log: Logger) -> None:
    log = log.child("retention")
    await trio.sleep(FIRST_RUN_DELAY)
    while True:
        rt = current()
        try:
            report = await prune(db, policy_for(rt), statements=rt.backend.retention)
        except StoreError as exc:
            log.error("retention prune failed; retrying at the next tick", error=str(exc))
        else:
            if report.total:
                log.info("retention pruned old rows", job_log=report.job_log,
                         job_queue=report.job_queue, job_transitions=report.job_transitions,
                         job_attempts=report.job_attempts,
                         breaker_transitions=report.breaker_transitions)
        await trio.sleep(rt.config.service.tick_interval)
