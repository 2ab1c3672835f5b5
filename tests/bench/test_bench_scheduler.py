"""Scheduler drift: fire time (the job's created_at) minus scheduled instant, p50/p99.

The issue asks for 1,000 fires of a 1 s `every`. One schedule would take 1,000 s, so this runs
SCHEDULES schedules of `every: 1s` side by side for ROUNDS seconds (1,000 fires in 20 s). That is
the harder case: the fires of one instant are enqueued one after another in the same pass, so
the last of them carries the queueing delay of the others. A real dispatcher runs the bundled
echo plugin for every job meanwhile, so the database writer is busy as in production.

Measured on the 2-core development machine with the dispatcher running: p50 7-9 ms, p99
10-45 ms depending on load (17 ms p99 without the dispatcher); one schedule alone: p50 3 ms,
p99 4 ms. Most of it is the pass's own database round trips (one read, the breaker fold) before
the enqueues.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import trio

from support.bench import percentile, report
from ductile.store.jobs import parse_time, utcnow
from support.scheduler import scheduler_world

SCHEDULES = 50
ROUNDS = 20
GOAL_P99_MS = 50.0
# BENCH_NO_DISPATCH=1 measures the scheduler alone (jobs stay queued).
DISPATCH = os.environ.get("BENCH_NO_DISPATCH") != "1"


async def test_bench_scheduler_drift(tmp_path: Path) -> None:
    plugins = {"echo": {
        "enabled": True, "max_outstanding_polls": 10_000,
        "schedules": [{"id": f"s{i}", "every": "1s", "if_running": "queue"}
                      for i in range(SCHEDULES)],
    }}
    async with scheduler_world(tmp_path, plugins, clock=utcnow, dispatch=DISPATCH,
                               service={"max_workers": 2}) as w:
        await trio.sleep(ROUNDS + 0.5)
        w.scheduler.stop()
        rows = w.db_rows("SELECT dedupe_key, created_at FROM job_queue")

    drift_ms = []
    for key, created in rows:
        slot = datetime.fromisoformat(key.split(":", 3)[3])  # plugin:command:id:<instant>
        drift_ms.append((parse_time(created) - slot).total_seconds() * 1000)
    assert len(drift_ms) >= SCHEDULES * ROUNDS
    p50, p99 = percentile(drift_ms, 50), percentile(drift_ms, 99)
    report("scheduler drift p50", p50, "ms", "informational",
           f"{len(drift_ms)} fires, {SCHEDULES} schedules x every 1s")
    report("scheduler drift p99", p99, "ms", f"<= {GOAL_P99_MS:.0f}",
           f"max {max(drift_ms):.1f} ms")
    assert min(drift_ms) >= 0
    assert p99 <= GOAL_P99_MS
